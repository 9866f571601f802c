"""The one narrow interface every backend implements.

Lifecycle, as in MMDeploy's backend manager: is it available here, which version, compile an
ONNX model into payload files, load those files into a runner. The core never names a backend.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib
import logging
import types
import typing
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator, Mapping, Protocol

import numpy as np

if TYPE_CHECKING:
    from ..artifact.manifest import Manifest
    from ..remote import RemoteDevice, RemoteTiming
    from ..targets import Target

log = logging.getLogger(__name__)

# A conformance runner takes (onnx.ModelProto, list of input arrays) and returns the list of output arrays.
RunCase = Callable[[Any, list[np.ndarray]], list[np.ndarray]]
# A known conformance failure several runtimes share (edgevision.conformance, Backend.conformance_known_failures).
ALIGN_CORNERS_SCALES = ("ONNX's reference puts the unrounded output length (4 x 0.6 = 2.4) into the "
                        "align_corners formula; the runtime uses the rounded size 2. Only non-integer "
                        "downscales are affected")


# Payload keys the core writes whatever the backend: the INT8 recipe, a recorded device check, a note.
COMMON_PAYLOAD_KEYS = frozenset({"quantization", "device_check", "probe", "note",
                                 "executed_precision", "precision_auto",  # the gate and --precision auto record these
                                 "options"})  # the backend's typed options the artifact was compiled with


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


# --- typed backend options ------------------------------------------------------------------------
# A backend describes its ``--option KEY=VALUE`` keys as a frozen dataclass: each field's type, default and
# help (``option(default, help)``). ONE parser (:func:`read_options`) turns the strings from the command
# line (or the typed values of a target file) into that dataclass, with one-line errors.

def option(default: Any, help: str, parse: Callable[[str, Any], Any] | None = None,
           dump: Callable[[Any], Any] | None = None) -> Any:
    """A field of a backend's options dataclass; ``parse(key, value)`` overrides the conversion by type
    (for values such as "auto" or HOST:PORT:KEY) and raises InputError itself; ``dump(value)`` is its
    JSON form in the manifest when that is not the value itself (``parse`` must read it back)."""
    return field(default=default, metadata={"help": help, "parse": parse, "dump": dump})


def options_to_json(options: Any) -> dict[str, Any]:
    """Typed options as the manifest records them: JSON values that :func:`read_options` reads back to equal options."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        dump = f.metadata.get("dump")
        if value is not None and dump is not None:
            value = dump(value)
        elif isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def option_names(schema: type) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(schema))


def nearest_name(key: str, names: Iterator[str] | frozenset[str] | list[str]) -> str | None:
    """The closest known option name to a misspelt ``key`` (None when nothing is close)."""
    found = difflib.get_close_matches(key, sorted(names), n=1, cutoff=0.6)
    return found[0] if found else None


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _convert(key: str, value: Any, kind: Any, example: Any = None) -> Any:
    from ..errors import InputError

    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
            return None
        return _convert(key, value, next(a for a in args if a is not type(None)), example)
    if origin is typing.Literal:
        text = str(value).strip().lower() if isinstance(value, str) else value
        if text not in args:
            raise InputError(f"option {key}={value!r} is not one of {', '.join(map(str, args))}",
                             f"write e.g. --option {key}={args[0]}")
        return text
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise InputError(f"option {key}={value!r} is not true/false", f"write e.g. --option {key}={str(example if example is not None else True).lower()}")
    if kind is int:
        try:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        except (TypeError, ValueError):
            raise InputError(f"option {key}={value!r} is not an integer", f"write e.g. --option {key}={1 if example is None else example}") from None
    if kind is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise InputError(f"option {key}={value!r} is not a number", f"write e.g. --option {key}={1.5 if example is None else example}") from None
    if kind is Path:
        return Path(value)
    if origin is tuple:
        items = value.split(",") if isinstance(value, str) else list(value)
        return tuple(str(item).strip() for item in items if str(item).strip())
    return str(value)


def read_options(schema: type, raw: Mapping[str, Any], owner: str) -> Any:
    """``raw`` (strings from ``--option``, or a target file's typed values) as an instance of ``schema``.

    An unknown key is refused with the nearest known name; a value that does not convert is one line
    naming the key, the value and a value that would do.
    """
    from ..errors import InputError

    fields = {f.name: f for f in dataclasses.fields(schema)}
    hints = typing.get_type_hints(schema)
    values = {}
    for key, value in raw.items():
        if key not in fields:
            near = nearest_name(key, fields)
            raise InputError(f"option {key} is not an option of {owner}",
                             f"did you mean {near}?" if near else f"use one of {', '.join(sorted(fields)) or 'none'}")
        parse = fields[key].metadata.get("parse")
        values[key] = parse(key, value) if parse else _convert(key, value, hints[key], fields[key].default)
    return schema(**values)


@dataclass(frozen=True)
class NoOptions:
    """The options of a backend that takes none."""


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
    # The ``--option KEY=VALUE`` keys this backend reads at compile time, typed: a frozen dataclass of
    # ``option(...)`` fields (read_options parses them); option_keys are its field names (a plugin without
    # a schema may set option_keys alone: values then reach compile as given). Any other key is refused.
    options_schema: ClassVar[type] = NoOptions
    option_keys: ClassVar[frozenset[str]] = frozenset()
    # Devices a load may name (``--device``, compared case-insensitively, ``cuda:1`` matches ``cuda``).
    devices: ClassVar[tuple[str, ...]] = ("cpu",)
    # What an artifact's manifest may say to this backend (it is input from whoever made the file):
    # payload_files are the entries ``load`` opens as files (dotted for nested ones, e.g. "probe.file"),
    # each must name a member of the artifact's payload/; payload_keys are the keys ``compile`` writes,
    # any other is refused (None: not declared, e.g. by an older plugin: any key). check_payload vets values.
    payload_files: ClassVar[tuple[str, ...]] = ()
    payload_keys: ClassVar[frozenset[str] | None] = None
    # Remote timing on a board (``edgevision bench --rpc``, :func:`edgevision.remote.bench_remote`): what
    # measures there, in words (e.g. "TVM time_evaluator on the board"); None: this backend cannot.
    remote_timing: ClassVar[str | None] = None
    # What a device process must never hold for this backend (the emulated device check proves that a
    # device runs the runtime only): compile-side Python modules, and shared libraries by file name.
    compiler_modules: ClassVar[tuple[str, ...]] = ()
    compiler_libraries: ClassVar[tuple[str, ...]] = ()
    # ONNX node cases (edgevision.conformance, default feed mode) this runtime is known to fail: (reason, cases).
    conformance_known_failures: ClassVar[tuple[tuple[str, tuple[str, ...]], ...]] = ()
    has_conformance_runner: ClassVar[bool] = False  # True: conformance_runner() gives one (when installed)

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

    def parse_options(self, raw: Mapping[str, Any]) -> Any:
        """This backend's typed options (``options_schema``) out of a compile's options; InputError names a
        bad value. Other keys (the core's, the quantizer's) are not this backend's to judge: the pipeline
        refuses keys nobody reads before it compiles."""
        declared = option_names(self.options_schema)
        return read_options(self.options_schema, {k: v for k, v in raw.items() if k in declared}, self.name)

    def recorded_options(self, manifest: "Manifest") -> Any:
        """The typed options an artifact was compiled with (its manifest's ``options``; defaults when it
        records none, as artifacts of edgevision before typed options)."""
        from ..errors import ArtifactError, InputError

        recorded = manifest.payload.get("options", {})
        try:
            if not isinstance(recorded, dict):
                raise InputError(f"options is a {type(recorded).__name__}, not an object", "")
            return read_options(self.options_schema, recorded, self.name)
        except InputError as err:
            raise ArtifactError(f"artifact manifest: {err.problem}",
                                "refusing it: only use artifacts from a trusted source") from err

    # --- hooks the core calls; the defaults say "this backend adds nothing" -------------------------

    def add_cli_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add this backend's own flags to ``edgevision compile`` (and ``bench``, which compiles)."""

    def options_from_cli(self, args: argparse.Namespace) -> dict[str, Any]:
        """The ``--option`` keys this backend's flags (``add_cli_arguments``) stand for; {} when none were given."""
        return {}

    def time_remote(self, artifact: Path, device: "RemoteDevice", number: int = 10, repeat: int = 5,
                    min_repeat_ms: int = 0) -> "RemoteTiming":
        """Time ``artifact`` on the board at ``device``; only backends with ``remote_timing`` can
        (:func:`edgevision.remote.bench_remote` says which do before it calls this)."""
        from ..errors import InputError

        raise InputError(f"{Path(artifact).name} is a {self.name} artifact, which cannot be timed on a remote board",
                         "bench it on the device")

    def conformance_runner(self) -> RunCase | None:
        """A runner for ONNX's node cases (``edgevision conformance``), None when this backend has none.
        Raises ImportError when its runtime is not installed."""
        return None

    def runtime_info(self, runner: Runner) -> dict[str, Any]:
        """What the loaded runtime really runs (e.g. OpenVINO's ``inference_precision``); {} when unknown."""
        return {}

    def executed_precision(self, runner: Runner) -> str | None:
        """The precision ``runner`` actually executes when it differs from the compiled one (e.g. a GPU
        that falls back to fp32); None when it runs what was compiled."""
        return None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "available": self.is_available(), "version": self.version(),
                "extra": self.extra, "precisions": list(self.precisions)}
