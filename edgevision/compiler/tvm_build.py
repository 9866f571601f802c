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
# The default schedule: MetaSchedule's CPU design space sampled this many times per task, each
# candidate built and timed in this process (no worker start-up), the fastest parallel+vectorized
# one kept. See docs/tvm-rpi4.md ("Default schedules") for the alternatives measured.
DEFAULT_SEARCH_TRIALS = 8
# Cross targets cannot be timed here: candidates are timed on this host compiled for 128-bit vectors
# (SSE4.2, as NEON's width) and the chosen schedules, which are keyed by workload, not by target,
# are applied to the real target.
HOST_PROXY_MCPU = "x86-64-v2"
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
    default_search_trials: int = DEFAULT_SEARCH_TRIALS  # per task, when nothing else schedules it; 0: off

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
        raw_default = options.get("default_schedule", DEFAULT_SEARCH_TRIALS)
        if str(raw_default).lower() in ("off", "none"):
            raw_default = 0
        try:
            default_trials = int(raw_default)
        except ValueError:
            raise InputError(f"default_schedule={raw_default!r} is not a number or off",
                             "write e.g. --option default_schedule=8, or default_schedule=off for naive loops") from None
        if default_trials < 0:
            raise InputError(f"default_schedule={default_trials} is negative", "pass 0 (off) or more trials per task")
        return cls(trials=trials, log_dir=Path(log_dir) if log_dir else None, rpc=rpc,
                   default_search_trials=default_trials)


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


MIN_VECTOR_LANES = 4  # a 128-bit register of float32: narrower vector loops leave NEON half empty


def _in_process_builder(on_build: Callable[[int], None]) -> tuple[Any, dict[str, Any]]:
    """Builds candidates in this process (a TIR kernel builds in well under a second; starting
    builder workers costs ~25 s each) and refuses any whose multiply-accumulates do not all sit in
    loops that are parallel and vectorized: a schedule that is fast on this host only because
    LLVM vectorized it by itself may not be on another target."""
    from tvm.driver import build as tvm_build
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    from ..backends.tvm_kernels import primfunc_macs

    built: dict[str, Any] = {}

    @derived_object
    class InProcessBuilder(PyBuilder):
        def build(self, build_inputs: list) -> list:
            results = []
            for item in build_inputs:
                func = item.mod["main"]
                macs = primfunc_macs("main", func)
                if macs.macs_per_call and (macs.both_macs < macs.macs_per_call
                                           or macs.min_vector_lanes < MIN_VECTOR_LANES):
                    results.append(BuilderResult(None, "not parallel and vectorized 4 wide"))
                    continue
                try:
                    module = tvm_build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(item.mod),
                                       target=item.target)
                except Exception as err:  # a candidate that fails to build is a failed trial, not an error
                    results.append(BuilderResult(None, f"build failed: {str(err)[:300]}"))
                    continue
                key = f"candidate-{len(built)}-{id(module)}"
                built[key] = module
                results.append(BuilderResult(key, None))
            on_build(len(build_inputs))
            return results

    return InProcessBuilder(), built


def _in_process_runner(built: dict[str, Any]) -> Any:
    """Times candidates in this process with TVM's time_evaluator (a few ms each)."""
    import tvm
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.runner import PyRunner, RunnerFuture, RunnerResult
    from tvm.s_tir.meta_schedule.runner.config import EvaluatorConfig
    from tvm.s_tir.meta_schedule.runner.local_runner import default_alloc_argument
    from tvm.s_tir.meta_schedule.runner.utils import run_evaluator_common

    config = EvaluatorConfig(number=3, repeat=1, min_repeat_ms=20, enable_cpu_cache_flush=False)
    device = tvm.cpu()

    def finished(result: Any) -> Any:
        return RunnerFuture(lambda: True, lambda: result)

    @derived_object
    class InProcessRunner(PyRunner):
        def run(self, runner_inputs: list) -> list:
            futures = []
            for item in runner_inputs:
                module = built.pop(item.artifact_path, None)
                try:
                    args = default_alloc_argument(device, [a.as_json() for a in item.args_info], 1)
                    futures.append(finished(RunnerResult(run_evaluator_common(module, device, config, args), None)))
                except Exception as err:  # noqa: BLE001 - reported as a failed trial
                    futures.append(finished(RunnerResult(None, f"run failed: {str(err)[:300]}")))
            return futures

    return InProcessRunner()


def _default_search(mod: Any, real_target: Any, target_spec: dict[str, Any], trials_per_task: int,
                    known: Any, progress: Progress, seed: int | None) -> tuple[Any, dict[str, Any]]:
    """Schedule every task ``known`` (a database, or None) has no record for: sample MetaSchedule's
    CPU design space (multi-level tiling, parallelize/vectorize/unroll, inlining) ``trials_per_task``
    times, time each candidate here and keep the fastest that is parallel and vectorized."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    cross = "mtriple" in target_spec
    if cross:  # time on this host at NEON's vector width; parallel extents follow the device's cores
        proxy = {"kind": "llvm", "mcpu": HOST_PROXY_MCPU, "num-cores": int(target_spec.get("num-cores", 4))}
        search_target = tvm.target.Target(proxy)
    else:
        search_target = real_target
    tasks = ms.relax_integration.extract_tasks(mod, search_target)
    todo = [t for t in tasks if known is None or not known.has_workload(t.dispatched[0])]
    record: dict[str, Any] = {"strategy": "default", "trials_per_task": trials_per_task, "tasks": len(tasks),
                              "tasks_searched": len(todo), "search_target": str(search_target.attrs.get("mcpu", "")),
                              "measured_on": "this host" + (f" as {HOST_PROXY_MCPU} (128-bit vectors)" if cross else "")}
    database = ms.database.MemoryDatabase()
    if not todo:
        record["minutes"] = 0.0
        return database, record
    started = time.monotonic()
    total = trials_per_task * len(todo)
    progress(f"scheduling {len(todo)} kernels ({trials_per_task} candidates each, timed on this host)")
    builder, built = _in_process_builder(_progress_reporter(total, progress, label="scheduling"))
    with tempfile.TemporaryDirectory(prefix="edgevision-schedule-") as work_dir:
        contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
            todo, work_dir, strategy="replay-trace", seed=seed)
        with _quiet_metaschedule():
            ms.tune.tune_tasks(tasks=contexts, task_weights=weights, work_dir=work_dir, max_trials_global=total,
                               max_trials_per_task=trials_per_task, num_trials_per_iter=trials_per_task,
                               builder=builder, runner=_in_process_runner(built), database=database,
                               cost_model="random", task_scheduler="round-robin",
                               measure_callbacks=[ms.measure_callback.AddToDatabase()])
    record["minutes"] = round((time.monotonic() - started) / 60, 2)
    # Tasks where no candidate was both parallel and vectorized (or none built) keep naive loops.
    record["tasks_scheduled"] = sum(
        database.query_tuning_record(t.dispatched[0], search_target, t.task_name) is not None for t in todo)
    return database, record


@contextlib.contextmanager
def _quiet_metaschedule() -> Iterator[None]:
    """MetaSchedule logs every trial at INFO (with the whole TIR) to the root logger's handlers."""
    logger = logging.getLogger("tvm.s_tir.meta_schedule")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


def _progress_reporter(total: int, progress: Progress, label: str = "tuning") -> Callable[[int], None]:
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
            progress(f"{label} [{bar}] {state['done']}/{total} trials built, {minutes:.1f} min")

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
    try:
        with _environment(TVM_NUM_THREADS=str(threads) if threads and tuning.rpc is None else None):
            ms.tune.tune_tasks(tasks=contexts, task_weights=weights, work_dir=str(work_dir),
                               max_trials_global=total, max_trials_per_task=per_task,
                               num_trials_per_iter=min(64, per_task), builder=builder, runner=runner,
                               measure_callbacks=callbacks)
    finally:
        # The builder keeps its worker processes between batches: end them with the tuning, or one
        # was seen outliving the compile (reparented to init).
        pool = getattr(builder, "pool", None)
        if pool is not None:
            pool.shutdown()
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

    with tvm_target:  # legalize and fuse: the PrimFuncs every schedule source is keyed by
        mod = tvm.transform.Sequential([relax.transform.DecomposeOpsForInference(),
                                        relax.transform.CanonicalizeBindings(),
                                        relax.get_pipeline("zero")])(mod)
    tuning_record: dict[str, Any] = {"trials": 0}
    sources: list[dict[str, Any]] = []
    log_dir = tuning.log_dir
    database = None
    with tempfile.TemporaryDirectory(prefix="edgevision-tune-") as scratch:
        if tuning.trials != 0 or log_dir is not None:
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
            if tuning.trials != 0:
                sources.append({"strategy": "tuned on device" if tuning.rpc else "tuned on this host",
                                "runner": tuning_record["runner"], "trials": tuning_record["trials"],
                                "records": applied})
            else:
                sources.append({"strategy": "tuning log", "log": str(log_dir), "records": applied,
                                "log_targets": _log_targets(work_dir)})
    if tuning.default_search_trials > 0:
        default_db, default_record = _default_search(mod, tvm_target, target_spec, tuning.default_search_trials,
                                                     database, step, tuning.seed)
        if default_record["tasks_searched"]:
            with tvm_target, default_db:
                mod = relax.transform.MetaScheduleApplyDatabase()(mod)
            sources.append(default_record)
    kernels_mod = mod

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
    from ..backends.tvm_kernels import report

    kernels = report(kernels_mod, out_file, target_spec.get("mtriple", "").split("-")[0] or None).to_dict()
    step(f"{kernels['share']:.0%} of {kernels['macs'] / 1e6:.0f} M multiply-accumulates in parallel, "
         f"vectorized loops" + (" (checked in the machine code)" if kernels["binary_checked"] else ""))
    return {"library": out_file.name, "entry": "main", "tvm_target": target_spec,
            "cpu_features": cpu_features(tvm_target),
            "cross_compiler": target.options.get("cross_compiler"), "tuning": tuning_record,
            "schedule": {"strategy": _strategy_name(sources), "sources": sources}, "kernels": kernels}


def _strategy_name(sources: list[dict[str, Any]]) -> str:
    """What scheduled the library, in words: the first source covered most kernels."""
    if not sources:
        return "none (naive loops)"
    names = [s["strategy"] for s in sources]
    return " + ".join(n if n != "default" else "default search" for n in names)


def _log_targets(log_dir: Path) -> list[str]:
    """The targets a shared tuning log was measured on (a log from a Pi says cortex-a72)."""
    import json

    seen: list[str] = []
    path = log_dir / "database_tuning_record.json"
    with open(path) as fh:
        for line in fh:
            try:
                target = json.loads(line)[1][2]
            except (ValueError, IndexError, TypeError):
                continue
            label = str(target.get("mcpu") or target.get("mtriple") or target.get("kind")) \
                if isinstance(target, dict) else str(target)
            if label not in seen:
                seen.append(label)
    return seen
