"""TVM MetaSchedule tuning: the options (--tune, --tuning-log, tune_rpc), the tuner with a reusable
database, builders that keep their workers, and the progress reporting shared with .schedule."""
from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Mapping

from ...errors import InputError
from ..base import option, option_names, read_options
from ...quiet import silenced
from .candidates import Measure, record_blocked_convs
from .intrinsics import import_tensor_intrinsics

log = logging.getLogger(__name__)
METASCHEDULE_LOGGER = "tvm.s_tir.meta_schedule"

AUTO_TRIALS = -1  # --tune without a number: DEFAULT_TRIALS_PER_TASK for every task
DEFAULT_TRIALS_PER_TASK = 32  # ~12 min for MobileNetV2 on 2 x86 cores; gets within ~2x of ORT
BUILDER_TIMEOUT_S = 300.0  # the stock 30 s was too short for a worker that imported the intrinsics unmemoized (25-50 s)
# The default schedule: MetaSchedule's CPU design space sampled this many times per task, each
# candidate built and timed in this process (no worker start-up), the fastest parallel+vectorized
# one kept (.schedule). See docs/tvm-rpi4.md ("Default schedules") for the alternatives measured.
DEFAULT_SEARCH_TRIALS = 32
Progress = Callable[[str], None]


@dataclass(frozen=True)
class RpcTuning:
    """Measure candidates on a board registered with a TVM RPC tracker instead of this host."""

    tracker_host: str
    tracker_port: int
    key: str
    session_timeout_s: int = 120


def _trials(key: str, value: Any) -> int:
    raw = value or 0
    try:
        trials = AUTO_TRIALS if raw == "auto" else int(raw)
    except (TypeError, ValueError):
        raise InputError(f"{key}={value!r} is not a number", "pass an integer, e.g. --tune 2000") from None
    if trials < 0 and trials != AUTO_TRIALS:
        raise InputError(f"--tune {trials} is negative", "pass a positive number of trials, or 0")
    return trials


def _rpc(key: str, value: Any) -> RpcTuning | None:
    if not value:
        return None
    host, _, rest = str(value).partition(":")
    port, _, board = rest.partition(":")
    if not (host and port.isdigit() and board):
        raise InputError(f"{key}={value!r} is not HOST:PORT:KEY", "write e.g. --option tune_rpc=127.0.0.1:9190:rpi4")
    return RpcTuning(host, int(port), board)


def _default_schedule(key: str, value: Any) -> int:
    raw = 0 if str(value).lower() in ("off", "none") else value
    try:
        trials = int(raw)
    except (TypeError, ValueError):
        raise InputError(f"{key}={value!r} is not a number or off",
                         "write e.g. --option default_schedule=8, or default_schedule=off for naive loops") from None
    if trials < 0:
        raise InputError(f"{key}={trials} is negative", "pass 0 (off) or more trials per task")
    return trials


@dataclass(frozen=True)
class TvmOptions:
    """The ``--option`` keys of TVM targets (``--tune`` and ``--tuning-log`` set the first two)."""

    tune_trials: int = option(0, "MetaSchedule measurements in total; auto: 32 per task; 0: no tuning", _trials)
    tuning_log: Path | None = option(None, "tuning database folder: reused when it exists, extended when tuning")
    tune_rpc: RpcTuning | None = option(None, "HOST:PORT:KEY of a TVM RPC tracker: time candidates on that board",
                                        _rpc, lambda rpc: f"{rpc.tracker_host}:{rpc.tracker_port}:{rpc.key}")
    device_check: Literal["auto", "on", "off"] = option(
        "auto", "cross targets: run the artifact on the emulated device at compile (auto: when the sysroot is cached)")
    default_schedule: int = option(DEFAULT_SEARCH_TRIALS, "candidates per kernel of the default schedule search "
                                   "when nothing else schedules it; off: naive loops", _default_schedule)


@dataclass(frozen=True)
class TuningOptions:
    trials: int = 0  # total MetaSchedule trials; 0: no tuning (a given log is still applied); AUTO: per task
    log_dir: Path | None = None  # database folder: reused when it exists, written when tuning
    rpc: RpcTuning | None = None
    seed: int | None = 0
    default_search_trials: int = DEFAULT_SEARCH_TRIALS  # per task, when nothing else schedules it; 0: off

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> "TuningOptions":
        """Read ``tune_trials``, ``tuning_log``, ``tune_rpc`` (HOST:PORT:KEY) and ``default_schedule`` from
        CLI options (other keys, e.g. the core's or the quantizer's, are not TVM's to judge)."""
        ours = option_names(TvmOptions)
        typed = read_options(TvmOptions, {k: v for k, v in options.items() if k in ours}, "tvm")
        return cls(trials=typed.tune_trials, log_dir=typed.tuning_log, rpc=typed.tune_rpc,
                   default_search_trials=typed.default_schedule)


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
            self.on_build = on_build  # builds outside the search's budget swap in a silent one

        def build(self, build_inputs: list) -> list:
            if self.pool is None or self.batches % recycle_every == 0:
                if self.pool is not None:
                    self.pool.shutdown()
                self.pool = PopenPoolExecutor(max_workers=os.cpu_count() or 1, timeout=timeout_s,
                                              initializer=import_tensor_intrinsics)
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
            self.on_build(len(build_inputs))
            return results

    return PersistentBuilder()


def _worker_measure(builder: Any, runner: Any, target: Any) -> Measure:
    """Measures scheduled kernels with the search's own builder and runner, as its candidates are."""
    from tvm.s_tir import meta_schedule as ms

    def measure(mods: list[Any]) -> list[list[float] | None]:
        built = builder.build([ms.builder.BuilderInput(mod, target) for mod in mods])
        futures = [runner.run([ms.runner.RunnerInput(b.artifact_path, "cpu", ms.arg_info.ArgInfo.from_entry_func(
            mod, remove_preproc=True))])[0] if b.error_msg is None else None for mod, b in zip(mods, built)]
        times: list[list[float] | None] = []
        for future in futures:
            result = future.result() if future is not None else None
            times.append(None if result is None or result.error_msg is not None
                         else [float(t) for t in result.run_secs])
        return times

    return measure


@contextlib.contextmanager
def quiet_metaschedule() -> Iterator[None]:
    """Run MetaSchedule without it writing to the terminal. It logs every trial at INFO (with the
    whole TIR), and each set of tuning contexts it creates adds a handler that prints to stdout (and
    says, once, that the level it found is not INFO): create the contexts inside this block too."""
    logger = logging.getLogger(METASCHEDULE_LOGGER)
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        with silenced(log, "MetaSchedule"):
            yield
    finally:
        logger.setLevel(level)
        for handler in [h for h in logger.handlers if h.get_name() == f"{METASCHEDULE_LOGGER}.console"]:
            logger.removeHandler(handler)  # it writes to the captured stdout of this block


def progress_reporter(total: int, progress: Progress, label: str = "tuning") -> Callable[[int], None]:
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


def tune(mod: Any, target: Any, tuning: TuningOptions, work_dir: Path, progress: Progress,
          threads: int | None = None) -> dict[str, Any]:
    from tvm.s_tir import meta_schedule as ms

    import_tensor_intrinsics()
    tasks = ms.relax_integration.extract_tasks(mod, target)
    if tuning.trials == AUTO_TRIALS:
        per_task, total = DEFAULT_TRIALS_PER_TASK, DEFAULT_TRIALS_PER_TASK * len(tasks)
    else:
        per_task, total = max(1, math.ceil(tuning.trials / max(1, len(tasks)))), tuning.trials
    on_build = progress_reporter(total, progress)
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
    # inherit TVM_NUM_THREADS, and without it TVM uses half the CPUs on x86 (see .backend).
    try:
        with _environment(TVM_NUM_THREADS=str(threads) if threads and tuning.rpc is None else None), \
                quiet_metaschedule():
            # the register-blocked convolutions go first: the evolutionary search starts from the
            # database's best, and both are timed by the same builder and runner
            database = tuning_database(work_dir)
            builder.on_build = lambda count: None
            blocked = record_blocked_convs(tasks, database, target, _worker_measure(builder, runner, target), progress)
            builder.on_build = on_build
            contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
                tasks, str(work_dir), seed=tuning.seed)
            ms.tune.tune_tasks(tasks=contexts, task_weights=weights, work_dir=str(work_dir),
                               max_trials_global=total, max_trials_per_task=per_task,
                               num_trials_per_iter=min(64, per_task), builder=builder, runner=runner,
                               database=database, measure_callbacks=callbacks)
    finally:
        # The builder keeps its worker processes between batches: end them with the tuning, or one
        # was seen outliving the compile (reparented to init).
        pool = getattr(builder, "pool", None)
        if pool is not None:
            pool.shutdown()
    return {"tasks": len(tasks), "trials": total, "trials_per_task": per_task,
            "minutes": round((time.monotonic() - started) / 60, 2), "register_blocked": blocked.summary(database),
            "runner": f"rpc {tuning.rpc.key}@{tuning.rpc.tracker_host}:{tuning.rpc.tracker_port}"
            if tuning.rpc else "local"}


def tuning_database(log_dir: Path) -> Any:
    from tvm.s_tir import meta_schedule as ms

    return ms.database.JSONDatabase(path_workload=str(log_dir / "database_workload.json"),
                                    path_tuning_record=str(log_dir / "database_tuning_record.json"))


def log_targets(log_dir: Path) -> list[str]:
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
