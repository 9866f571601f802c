"""The one narrow interface every backend implements.

Lifecycle, as in MMDeploy's backend manager: is it available here, which version, compile an
ONNX model into payload files, load those files into a runner. The core never names a backend.
"""
from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Protocol

import numpy as np

if TYPE_CHECKING:
    from ..artifact.manifest import Manifest
    from ..targets import Target


# Payload keys the core writes whatever the backend: the INT8 recipe, a recorded device check, a note.
COMMON_PAYLOAD_KEYS = frozenset({"quantization", "device_check", "probe", "note",
                                 "executed_precision", "precision_auto"})  # the gate and --precision auto record these


@dataclass(frozen=True)
class CompileSettings:
    precision: str = "fp32"
    dynamic_batch: bool = False
    threads: int | None = None
    input_name: str = "input"
    input_shape: tuple[int | str, ...] = (1, 3, 224, 224)
    options: dict[str, Any] = field(default_factory=dict)  # backend-specific flags from the CLI
    # Step messages for long backend work (e.g. TVM tuning); the pipeline passes its progress callback.
    progress: Callable[[str], None] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class LoadOptions:
    threads: int | None = None
    device: str | None = None  # override the target's device, e.g. OpenVINO "GPU"
    options: dict[str, Any] = field(default_factory=dict)


class Runner(Protocol):
    """A loaded model: a float32 batch in the manifest's input layout -> output array.

    A runner that may be called from several threads at once says so with a class attribute
    ``thread_safe = True``; for any other runner :class:`edgevision.runtime.Model` serialises the calls.
    """

    def run(self, batch: np.ndarray) -> np.ndarray: ...


class Backend(ABC):
    name: ClassVar[str]
    extra: ClassVar[str]  # the pip extra that installs this backend's runtime
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    runtime_module: ClassVar[str]  # the import name of the runtime library, e.g. "onnxruntime"
    # INT8: the calibration recipe (edgevision/data/calibration/recipes) used unless the user names one, and whether the
    # runtime takes only symmetric int8 activations (zero point 0) from a QDQ graph.
    int8_recipe: ClassVar[str] = "minmax"
    int8_symmetric_only: ClassVar[bool] = False
    # True when the payload is architecture-neutral (an ONNX graph, an OpenVINO IR): the runtime of
    # any CPU runs it, so an aarch64 target's artifact also loads on x86 and the other way round.
    portable_payload: ClassVar[bool] = False

    def runs_on(self, target: "Target", machine: str) -> bool:
        """Whether artifacts for ``target`` can execute on a ``machine`` (platform.machine()) CPU."""
        return self.portable_payload or target.arch == machine
    # The ``--option KEY=VALUE`` keys this backend reads at compile time; any other key is refused.
    option_keys: ClassVar[frozenset[str]] = frozenset()
    # Devices a load may name (``--device``, compared case-insensitively, ``cuda:1`` matches ``cuda``).
    devices: ClassVar[tuple[str, ...]] = ("cpu",)
    # What an artifact's manifest may say to this backend (it is input from whoever made the file):
    # payload_files are the entries ``load`` opens as files (dotted for nested ones, e.g. "probe.file"),
    # each must name a member of the artifact's payload/; payload_keys are the keys ``compile`` writes,
    # any other is refused (None: not declared, e.g. by an older plugin: any key). check_payload vets values.
    payload_files: ClassVar[tuple[str, ...]] = ()
    payload_keys: ClassVar[frozenset[str] | None] = None

    def runtime(self) -> ModuleType | None:
        """The runtime library, imported; None when it is not installed here."""
        try:
            return importlib.import_module(self.runtime_module)
        except ImportError:
            return None

    def is_available(self) -> bool:
        """True when this backend's runtime imports here."""
        return self.runtime() is not None

    def version(self) -> str | None:
        """Version of the runtime library, None when it is not installed."""
        module = self.runtime()
        return None if module is None else str(module.__version__)

    def compile_requirements(self, target: "Target") -> list[str]:
        """What is missing on this host to compile for ``target`` (empty when ready)."""
        return [] if self.is_available() else [f"pip install 'edgevision[{self.extra}]'"]

    @abstractmethod
    def compile(self, onnx_path: Path, target: "Target", settings: CompileSettings,
                out_dir: Path) -> dict[str, Any]:
        """Write payload files into ``out_dir``; return what ``load`` needs (stored in the manifest)."""

    def can_run(self, target: "Target") -> tuple[bool, str]:
        """Whether this host can execute artifacts for ``target``; the reason when not."""
        import platform

        if not self.is_available():
            return False, f"{self.name} runtime not installed"
        if not self.runs_on(target, platform.machine()):
            return False, f"target is {target.arch}, this host is {platform.machine()}"
        return True, ""

    def check_device(self, device: str) -> None:
        """Refuse a ``--device`` this backend cannot run on, before anything is loaded."""
        from ..errors import InputError

        if device.split(":")[0].split(".")[0].lower() not in self.devices:
            raise InputError(f"{self.name} cannot run on device {device!r}",
                             f"use {' or '.join(repr(d) for d in self.devices)}, or leave --device out")

    @abstractmethod
    def load(self, payload_dir: Path, manifest: "Manifest", options: LoadOptions) -> Runner:
        """Load payload files written by ``compile`` into a runner."""

    def allowed_payload_keys(self) -> frozenset[str] | None:
        """payload_keys plus those the core itself records for every backend."""
        return None if self.payload_keys is None else self.payload_keys | COMMON_PAYLOAD_KEYS

    def check_payload(self, payload: dict[str, Any]) -> str | None:
        """Why ``load`` must not apply this manifest payload (runs before anything is extracted); None if fine."""
        return None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "available": self.is_available(), "version": self.version(),
                "extra": self.extra, "precisions": list(self.precisions)}
