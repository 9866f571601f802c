"""Apache TVM (Relax): ONNX -> Relax -> optional MetaSchedule tuning -> one shared library.

The payload is a single ``model.so`` built for the target's CPU (``llvm`` with the host's mcpu,
or cross-compiled for aarch64 with the GNU toolchain). Loading it needs the TVM runtime only:
no compiler, no PyTorch. Compile-time work (import, tuning, codegen) lives in ``.build``,
``.tuning`` and ``.schedule`` of this package.
"""
from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import platform
import shutil
import sys
from types import ModuleType
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import BackendUnavailable, InputError
from ..base import Backend, CompileSettings, LoadOptions, RunCase, option_names
from .conformance import KNOWN_FAILURES, conformance_runner
from .cpu import CPU_FEATURE, elf_machine, missing_cpu_features
from .tuning import TuningOptions, TvmOptions

if TYPE_CHECKING:
    from ...artifact.manifest import Manifest
    from ...remote import RemoteDevice, RemoteTiming
    from ...targets import Target

log = logging.getLogger(__name__)

LIBRARY_FILE = "model.so"
ENTRY = "main"
# Debian's cross toolchains; aarch64 on a workstation comes from g++-aarch64-linux-gnu.
CROSS_PACKAGES = {"aarch64-linux-gnu-g++": "g++-aarch64-linux-gnu"}


# What the user exported before edgevision was imported; the loader itself sets the variable later.
USER_TVM_NUM_THREADS = os.environ.get("TVM_NUM_THREADS")


def runtime_threads(requested: int | None) -> int | None:
    """Threads for the TVM runtime: the request, else TVM_NUM_THREADS when the user set it, else every
    CPU this process may use. None leaves TVM's own choice alone (only when the user set the variable)."""
    if requested:
        return int(requested)
    if USER_TVM_NUM_THREADS:
        return None
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


RUNTIME_LIB_VARIABLE = "TVM_USE_RUNTIME_LIB"


def import_runtime(runtime_only: bool) -> ModuleType:
    """``import tvm`` for loading a library, without what a device never needs.

    * runtime_only (the target's option, set for devices): the pip wheel loads libtvm_compiler.so
      (LLVM; +8 s and 460 MB on an emulated Pi) unless TVM_USE_RUNTIME_LIB=1; we set it for the
      import unless the user chose a value. Without the compiler this process can no longer compile.
    * torch, never: tvm_ffi tries ``import torch`` at import (for DLPack exchange) and pulls in 2,000
      modules (+2.6 s) whenever torch is installed. Running a library needs none of it, so the import
      of torch fails while tvm is imported (it is left alone if torch is already loaded).
    """
    if "tvm" in sys.modules:
        return sys.modules["tvm"]
    chosen = os.environ.get(RUNTIME_LIB_VARIABLE)
    block_torch = "torch" not in sys.modules
    if runtime_only and chosen is None:
        os.environ[RUNTIME_LIB_VARIABLE] = "1"
    if block_torch:
        sys.modules["torch"] = None  # type: ignore[assignment]  # makes `import torch` raise ImportError
    try:
        import tvm
    finally:
        if block_torch and sys.modules.get("torch", False) is None:
            del sys.modules["torch"]
        if runtime_only and chosen is None:
            del os.environ[RUNTIME_LIB_VARIABLE]  # read once at import; children get the user's environment
    return tvm


class TvmRunner:
    """A Relax VM over the exported library; one float32 batch in, logits out.

    Not thread-safe (a VM shared by threads can segfault): no ``thread_safe`` flag, so Model serialises
    calls; each call already uses every core through TVM's own thread pool.
    """

    def __init__(self, vm: Any, tensor: Any) -> None:
        self._main = vm[ENTRY]
        self._tensor = tensor

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self._main(self._tensor(np.ascontiguousarray(batch, np.float32))).numpy()


class TvmBackend(Backend):
    name = "tvm"
    extra = "tvm"
    runtime_module = "tvm"
    precisions = ("fp32",)
    options_schema = TvmOptions
    option_keys = option_names(TvmOptions)
    payload_files = ("library", "probe.file")
    payload_keys = frozenset({"library", "entry", "tvm_target", "cpu_features", "cross_compiler", "tuning", "probe",
                              "schedule", "kernels"})
    remote_timing = "TVM time_evaluator on the board"
    # A device loads the library with the runtime only: TVM's ONNX importer, MetaSchedule and the
    # compiler library (LLVM) must never be in a device process (the emulated device check asserts it).
    compiler_modules = ("tvm.relax.frontend", "tvm.s_tir.meta_schedule")
    compiler_libraries = ("libtvm_compiler",)
    has_conformance_runner = True

    conformance_known_failures = KNOWN_FAILURES

    def conformance_runner(self) -> RunCase:
        return conformance_runner()

    def add_cli_arguments(self, parser: argparse.ArgumentParser) -> None:
        from ...cli.validate import non_negative_int

        parser.add_argument("--tune", type=non_negative_int, nargs="?", const=-1, metavar="TRIALS",
                            help="TVM targets: tune with MetaSchedule for TRIALS measurements in total "
                                 "(without a number: 32 per task, ~12 min for MobileNetV2 on 2 cores)")
        parser.add_argument("--tuning-log", type=Path, metavar="DIR",
                            help="TVM targets: tuning database folder, reused when it exists and extended by --tune")

    def options_from_cli(self, args: argparse.Namespace) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if args.tune is not None:
            options["tune_trials"] = "auto" if args.tune < 0 else args.tune
        if args.tuning_log is not None:
            options["tuning_log"] = str(args.tuning_log)
        return options

    def time_remote(self, artifact: Path, device: "RemoteDevice", number: int = 10, repeat: int = 5,
                    min_repeat_ms: int = 0) -> "RemoteTiming":
        from .remote import bench_remote

        return bench_remote(artifact, device, number=number, repeat=repeat, min_repeat_ms=min_repeat_ms)

    def check_payload(self, payload: dict[str, Any]) -> str | None:
        features = payload.get("cpu_features", [])
        if not isinstance(features, list) or not all(isinstance(f, str) and CPU_FEATURE.match(f) for f in features):
            return f"cpu_features {str(features)[:60]} is not a list of CPU feature names"
        if not isinstance(payload.get("tvm_target", {}), dict):
            return "tvm_target is not an object"
        return None

    def is_available(self) -> bool:
        # find_spec, not import: importing TVM costs seconds (and pulls torch in when present).
        return importlib.util.find_spec("tvm") is not None

    def version(self) -> str | None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("apache-tvm")
        except PackageNotFoundError:
            return None

    def compile_requirements(self, target: "Target") -> list[str]:
        missing = super().compile_requirements(target)
        compiler = target.options.get("cross_compiler")
        if compiler and shutil.which(compiler) is None:
            package = CROSS_PACKAGES.get(compiler, compiler)
            missing.append(f"cross compiler {compiler} not found: apt-get install {package}")
        return missing

    def can_run(self, target: "Target") -> tuple[bool, str]:
        ok, why = super().can_run(target)
        if ok and target.options.get("cross_compiler"):
            return False, f"cross-compiled for {target.arch} with {target.options['cross_compiler']}"
        return ok, why

    def compile(self, onnx_path: Path, target: "Target", settings: CompileSettings,
                out_dir: Path) -> dict[str, Any]:
        if settings.dynamic_batch:
            raise InputError(f"target {target.name} ({self.name}) compiles static shapes only",
                             "compile without --dynamic-batch")
        from .build import compile_onnx

        tuning = TuningOptions.from_options(settings.options)
        # Cross builds are checked on the emulated device by the compile pipeline (emulation.verify).
        return compile_onnx(onnx_path, target, settings, out_dir / LIBRARY_FILE, tuning, settings.progress)

    def load(self, payload_dir: Path, manifest: "Manifest", options: LoadOptions) -> TvmRunner:
        library = payload_dir / manifest.payload["library"]
        built_for = elf_machine(library)
        if built_for is not None and built_for != platform.machine():
            raise BackendUnavailable(f"{library.name} is a {built_for} library, this machine is "
                                     f"{platform.machine()}", f"run it on a {built_for} device or under qemu")
        missing = missing_cpu_features(list(manifest.payload.get("cpu_features", [])))
        if missing:
            # Checked here because the library would load fine and die of SIGILL at the first frame.
            mcpu = manifest.payload.get("tvm_target", {}).get("mcpu", "its build machine")
            raise BackendUnavailable(f"{library.name} was compiled for {mcpu} and uses {', '.join(missing)}, "
                                     "which this CPU lacks", "compile it on this machine, or for an older CPU "
                                     "(a target with tvm_target.mcpu = \"x86-64-v2\")")
        try:
            tvm = import_runtime(runtime_only=bool(manifest.target.options.get("runtime_only", False)))
            from tvm.runtime.vm import VirtualMachine
        except ImportError as err:
            raise BackendUnavailable("this artifact needs the TVM runtime, which is not installed",
                                     "pip install 'edgevision[tvm-runtime]'") from err
        threads = runtime_threads(options.threads or manifest.target.threads)
        if threads:
            # TVM's only thread knob: its pool is capped at TVM_NUM_THREADS, or else at half the logical
            # CPUs on x86 (it assumes hyper-threading), which is one thread on a 2-core VM without SMT:
            # measured here, MobileNetV2 ran 23 ms instead of 17. The cap is read once, when the first
            # run in the process creates the pool: later loads can lower the threads, not raise them.
            os.environ["TVM_NUM_THREADS"] = str(threads)
            tvm.get_global_func("runtime.config_threadpool")(1, threads)
        vm = VirtualMachine(tvm.runtime.load_module(str(library)), tvm.cpu())
        return TvmRunner(vm, tvm.runtime.tensor)


BACKEND = TvmBackend()
