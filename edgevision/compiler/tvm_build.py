"""TVM compile side: ONNX import, MetaSchedule tuning with a reusable database, codegen and export.

Only the workstation imports this module; devices load the exported library with the runtime.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from ..errors import BackendUnavailable, EdgevisionError, InputError

if TYPE_CHECKING:
    from ..backends.base import CompileSettings
    from ..targets import Target

log = logging.getLogger(__name__)

AUTO_TRIALS = -1  # --tune without a number: DEFAULT_TRIALS_PER_TASK for every task
DEFAULT_TRIALS_PER_TASK = 32  # ~12 min for MobileNetV2 on 2 x86 cores; gets within ~2x of ORT
BUILDER_TIMEOUT_S = 300.0  # the stock 30 s dies on the builder workers' ~25 s intrinsics import
Progress = Callable[[str], None]


@dataclass(frozen=True)
class RpcTuning:
    """Measure candidates on a board registered with a TVM RPC tracker instead of this host."""

    tracker_host: str
    tracker_port: int
    key: str
    session_timeout_s: int = 120


@dataclass(frozen=True)
class TuningOptions:
    trials: int = 0  # total MetaSchedule trials; 0: no tuning (a given log is still applied); AUTO: per task
    log_dir: Path | None = None  # database folder: reused when it exists, written when tuning
    rpc: RpcTuning | None = None
    seed: int | None = 0

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> "TuningOptions":
        """Read ``tune_trials``, ``tuning_log`` and ``tune_rpc`` (HOST:PORT:KEY) from CLI options."""
        raw = options.get("tune_trials", 0) or 0
        try:
            trials = AUTO_TRIALS if raw == "auto" else int(raw)
        except ValueError:
            raise InputError(f"tune_trials={options['tune_trials']!r} is not a number",
                             "pass an integer, e.g. --tune 2000") from None
        if trials < 0 and trials != AUTO_TRIALS:
            raise InputError(f"--tune {trials} is negative", "pass a positive number of trials, or 0")
        log_dir = options.get("tuning_log")
        rpc = None
        if options.get("tune_rpc"):
            host, _, rest = str(options["tune_rpc"]).partition(":")
            port, _, key = rest.partition(":")
            if not (host and port.isdigit() and key):
                raise InputError(f"tune_rpc={options['tune_rpc']!r} is not HOST:PORT:KEY",
                                 "write e.g. --option tune_rpc=127.0.0.1:9190:rpi4")
            rpc = RpcTuning(host, int(port), key)
        return cls(trials=trials, log_dir=Path(log_dir) if log_dir else None, rpc=rpc)


def host_mcpu() -> str:
    """LLVM's name for this CPU (e.g. znver4), so host builds use every instruction it has."""
    from tvm.target import codegen

    return str(codegen.llvm_get_system_cpu())


def tvm_target_dict(target: "Target", threads: int | None = None) -> dict[str, Any]:
    """The target's ``tvm_target`` option, or this host's CPU when it has none (0.27 takes dicts only)."""
    spec = dict(target.options.get("tvm_target") or {"kind": "llvm"})
    spec.setdefault("kind", "llvm")
    if "mtriple" not in spec and spec.get("mcpu", "host") == "host":
        spec["mcpu"] = host_mcpu()
    cores = threads or target.threads or (os.cpu_count() if "mtriple" not in spec else None)
    if cores:
        spec["num-cores"] = int(cores)
    return spec


def cpu_features(tvm_target: Any) -> list[str]:
    """The instruction-set extensions LLVM may emit for this target, as the loader checks them."""
    from tvm.target import codegen

    from ..backends.tvm import CPUINFO_FLAGS

    return sorted(str(f) for f in codegen.llvm_get_cpu_features(tvm_target) if str(f) in CPUINFO_FLAGS)


def _cross_compiler(target: "Target") -> Any:
    compiler = target.options.get("cross_compiler")
    if not compiler:
        return None
    from tvm.support import cc

    return cc.cross_compiler(compiler)


def export_aarch64_library(rt_mod: Any) -> str:
    """MetaSchedule builder export for RPC tuning on a Pi: an aarch64 .so the runtime can load."""
    from tvm.support import cc

    path = os.path.join(tempfile.mkdtemp(prefix="edgevision-ms-"), "candidate.so")
    rt_mod.export_library(path, fcompile=cc.cross_compiler("aarch64-linux-gnu-g++"))
    return path


def _persistent_builder(timeout_s: float, f_export: Any, on_build: Callable[[int], None],
                        recycle_every: int = 16) -> Any:
    """MetaSchedule's LocalBuilder starts fresh worker processes for every batch, and each one
    imports TVM and its tensor intrinsics (~25 s idle, over a minute on a busy 2-core host): that
    start-up, not the builds, dominated tuning. This builder keeps its workers for ``recycle_every``
    batches (the stock one restarts them against a slow leak)."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
    from tvm.s_tir.meta_schedule.builder.local_builder import _serialize_params, _worker_func
    from tvm.support.popen_pool import PopenPoolExecutor, StatusKind

    @derived_object
    class PersistentBuilder(PyBuilder):
        def __init__(self) -> None:
            super().__init__()
            self.pool: Any = None
            self.batches = 0

        def build(self, build_inputs: list) -> list:
            if self.pool is None or self.batches % recycle_every == 0:
                if self.pool is not None:
                    self.pool.shutdown()
                self.pool = PopenPoolExecutor(max_workers=os.cpu_count() or 1, timeout=timeout_s)
            self.batches += 1
            jobs = [(None, f_export, b.mod, b.target, _serialize_params(b.params)) for b in build_inputs]
            results = []
            for done in self.pool.map_with_error_catching(lambda job: _worker_func(*job), jobs):
                if done.status == StatusKind.COMPLETE:
                    results.append(BuilderResult(done.value, None))
                elif done.status == StatusKind.TIMEOUT:
                    results.append(BuilderResult(None, f"build timed out after {timeout_s:.0f} s"))
                else:
                    results.append(BuilderResult(None, f"build failed:\n{done.value}"))
            on_build(len(build_inputs))
            return results

    return PersistentBuilder()


def _progress_reporter(total: int, progress: Progress) -> Callable[[int], None]:
    """Counts built candidates (measurements finish asynchronously, so builds are the honest clock)."""
    started = time.monotonic()
    state = {"done": 0, "shown": -1}

    def on_build(count: int) -> None:
        state["done"] += count
        percent = min(100, 100 * state["done"] // max(1, total))
        if percent // 5 != state["shown"]:  # one line per 5%: logs stay short
            state["shown"] = percent // 5
            bar = "#" * (percent // 5) + "-" * (20 - percent // 5)
            minutes = (time.monotonic() - started) / 60
            progress(f"tuning [{bar}] {state['done']}/{total} trials built, {minutes:.1f} min")

    return on_build


@contextlib.contextmanager
def _environment(**values: str | None) -> Iterator[None]:
    """Set environment variables (None: leave alone) for the duration, then restore them."""
    saved = {key: os.environ.get(key) for key, value in values.items() if value is not None}
    os.environ.update({key: value for key, value in values.items() if value is not None})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _tune(mod: Any, target: Any, tuning: TuningOptions, work_dir: Path, progress: Progress,
          threads: int | None = None) -> dict[str, Any]:
    from tvm.s_tir import meta_schedule as ms

    tasks = ms.relax_integration.extract_tasks(mod, target)
    if tuning.trials == AUTO_TRIALS:
        per_task, total = DEFAULT_TRIALS_PER_TASK, DEFAULT_TRIALS_PER_TASK * len(tasks)
    else:
        per_task, total = max(1, math.ceil(tuning.trials / max(1, len(tasks)))), tuning.trials
    contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
        tasks, str(work_dir), seed=tuning.seed)
    on_build = _progress_reporter(total, progress)
    if tuning.rpc is not None:
        runner = ms.runner.RPCRunner(rpc_config=ms.runner.RPCConfig(
            tracker_host=tuning.rpc.tracker_host, tracker_port=tuning.rpc.tracker_port,
            tracker_key=tuning.rpc.key, session_timeout_sec=tuning.rpc.session_timeout_s))
        builder = _persistent_builder(BUILDER_TIMEOUT_S, export_aarch64_library, on_build)
    else:
        runner = ms.runner.LocalRunner(timeout_sec=60)
        builder = _persistent_builder(BUILDER_TIMEOUT_S, None, on_build)
    callbacks = ms.MeasureCallback.create("default")
    started = time.monotonic()
    progress(f"tuning {len(tasks)} tasks, {total} trials ({per_task} per task)")
    # Candidates must be timed with the threads the artifact will run with: the runner's workers
    # inherit TVM_NUM_THREADS, and without it TVM uses half the CPUs on x86 (see backends.tvm).
    with _environment(TVM_NUM_THREADS=str(threads) if threads and tuning.rpc is None else None):
        ms.tune.tune_tasks(tasks=contexts, task_weights=weights, work_dir=str(work_dir),
                           max_trials_global=total, max_trials_per_task=per_task,
                           num_trials_per_iter=min(64, per_task), builder=builder, runner=runner,
                           measure_callbacks=callbacks)
    return {"tasks": len(tasks), "trials": total, "trials_per_task": per_task,
            "minutes": round((time.monotonic() - started) / 60, 2),
            "runner": f"rpc {tuning.rpc.key}@{tuning.rpc.tracker_host}:{tuning.rpc.tracker_port}"
            if tuning.rpc else "local"}


def _database(log_dir: Path) -> Any:
    from tvm.s_tir import meta_schedule as ms

    return ms.database.JSONDatabase(path_workload=str(log_dir / "database_workload.json"),
                                    path_tuning_record=str(log_dir / "database_tuning_record.json"))


def _fold_shape_arithmetic(onnx_path: Path, work_dir: Path) -> Path:
    """TVM's ONNX importer rejects shape-computed Pad/Reshape arguments (EfficientNet's TF-style
    'same' padding). With the input shape fixed, ONNX Runtime's basic (hardware-independent) graph
    optimisations fold that arithmetic into constants; the graph is otherwise the same."""
    try:
        import onnxruntime as ort
    except ImportError:
        log.info("onnxruntime missing: importing the ONNX graph into TVM as exported")
        return onnx_path
    folded = work_dir / "static.onnx"
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(folded)
    options.log_severity_level = 3
    ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    return folded


def compile_onnx(onnx_path: Path, target: "Target", settings: "CompileSettings", out_file: Path,
                 tuning: TuningOptions, progress: Progress | None = None) -> dict[str, Any]:
    """Import, (tune,) build and export one library; returns the manifest payload."""
    step = progress or (lambda msg: log.info("%s", msg))
    try:
        import onnx
        import tvm
        from tvm import relax
        from tvm.relax.frontend.onnx import from_onnx
    except ImportError as err:
        raise BackendUnavailable(f"compiling with TVM needs apache-tvm and onnx ({err})",
                                 "pip install 'edgevision[tvm,compile]'") from err
    if getattr(tvm.base, "_RUNTIME_ONLY", False):
        raise BackendUnavailable("this TVM install has only the runtime, it cannot compile",
                                 "unset TVM_USE_RUNTIME_LIB or install the full apache-tvm wheel")
    if tuning.rpc is not None and tuning.trials == 0:
        raise InputError("tune_rpc was given without a tuning budget", "add --tune TRIALS")

    target_spec = tvm_target_dict(target, settings.threads)
    tvm_target = tvm.target.Target(target_spec)
    shape = [int(d) for d in settings.input_shape]
    with tempfile.TemporaryDirectory(prefix="edgevision-tvm-") as tmp:
        graph = onnx.load(str(_fold_shape_arithmetic(onnx_path, Path(tmp))))
    mod = from_onnx(graph, shape_dict={settings.input_name: shape}, keep_params_in_input=False)

    tuning_record: dict[str, Any] = {"trials": 0}
    log_dir = tuning.log_dir
    if tuning.trials != 0 or log_dir is not None:
        with tvm_target:
            mod = tvm.transform.Sequential([relax.transform.DecomposeOpsForInference(),
                                            relax.transform.CanonicalizeBindings(),
                                            relax.get_pipeline("zero")])(mod)
        with tempfile.TemporaryDirectory(prefix="edgevision-tune-") as scratch:
            work_dir = Path(log_dir) if log_dir is not None else Path(scratch)
            if tuning.trials != 0:
                work_dir.mkdir(parents=True, exist_ok=True)
                tuning_record = _tune(mod, tvm_target, tuning, work_dir, step, target_spec.get("num-cores"))
            elif not (work_dir / "database_tuning_record.json").is_file():
                raise InputError(f"tuning log {work_dir} has no database_tuning_record.json",
                                 "point --tuning-log at a folder written by --tune, or add --tune TRIALS")
            database = _database(work_dir)
            applied = len(database)
            with tvm_target, database:
                mod = relax.transform.MetaScheduleApplyDatabase()(mod)
        tuning_record.update({"records": applied, "log": str(log_dir) if log_dir else None})
        step(f"applied {applied} tuning records")

    step(f"building for {target_spec.get('mtriple', 'this host')} ({target_spec.get('mcpu', 'generic')})")
    executable = tvm.compile(mod, target=tvm_target)
    fcompile = _cross_compiler(target)
    try:
        if fcompile is None:
            executable.export_library(str(out_file))
        else:
            executable.export_library(str(out_file), fcompile=fcompile)
    except Exception as err:  # the C++ toolchain reports through RuntimeError/TVMError
        raise EdgevisionError(f"linking the TVM library failed: {str(err).splitlines()[0]}",
                              "check the (cross) compiler install, e.g. apt-get install g++-aarch64-linux-gnu") from err
    return {"library": out_file.name, "entry": "main", "tvm_target": target_spec,
            "cpu_features": cpu_features(tvm_target),
            "cross_compiler": target.options.get("cross_compiler"), "tuning": tuning_record}
