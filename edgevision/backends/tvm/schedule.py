"""The default schedule of a TVM build: MetaSchedule's CPU design space sampled per kernel and, for
dense convolutions, the register-blocked schedule (.blocked_conv) at a few register blocks; each
candidate built and timed in this process, the fastest one that is parallel and vectorized kept."""
from __future__ import annotations

import logging
import tempfile
import time
from typing import Any, Callable

from .candidates import Measure, parallel_and_vectorized, record_blocked_convs
from .intrinsics import import_tensor_intrinsics
from .tuning import Progress, progress_reporter, quiet_metaschedule

# Cross targets cannot be timed here: candidates are timed on this host compiled for 128-bit vectors
# (SSE4.2, as NEON's width) and the chosen schedules, which are keyed by workload, not by target,
# are applied to the real target.
HOST_PROXY_MCPU = "x86-64-v2"
log = logging.getLogger(__name__)


RETRY_FACTOR, RETRY_MIN = 4, 64  # second pass: candidates per kernel, as a multiple of the first's, at least


def _build_candidate(mod: Any, target: Any) -> Any:
    """One candidate's module, without its weight-layout block (the build folds that at compile
    time, so a candidate is timed on weights already repacked)."""
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    return tvm_build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod), target=target)


def _in_process_builder(on_build: Callable[[int], None]) -> tuple[Any, dict[str, Any]]:
    """Builds candidates in this process (a TIR kernel builds in well under a second; starting
    builder workers costs ~25 s each) and refuses any that is not ``parallel_and_vectorized``."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder

    built: dict[str, Any] = {}

    @derived_object
    class InProcessBuilder(PyBuilder):
        def build(self, build_inputs: list) -> list:
            results = []
            for item in build_inputs:
                if not parallel_and_vectorized(item.mod["main"]):
                    results.append(BuilderResult(None, "not parallel and vectorized 4 wide"))
                    continue
                try:
                    module = _build_candidate(item.mod, item.target)
                except Exception as err:  # a candidate that fails to build is a failed trial, not an error
                    results.append(BuilderResult(None, f"build failed: {str(err)[:300]}"))
                    continue
                key = f"candidate-{len(built)}-{id(module)}"
                built[key] = module
                results.append(BuilderResult(key, None))
            on_build(len(build_inputs))
            return results

    return InProcessBuilder(), built


def _timer() -> Callable[[Any, list], list[float]]:
    """Times one built candidate in this process with TVM's time_evaluator (a few ms each), on
    arguments shaped by its ArgInfo: the same protocol for MetaSchedule's samples and the rules'."""
    import tvm
    from tvm.s_tir.meta_schedule.runner.config import EvaluatorConfig
    from tvm.s_tir.meta_schedule.runner.local_runner import default_alloc_argument
    from tvm.s_tir.meta_schedule.runner.utils import run_evaluator_common

    config = EvaluatorConfig(number=3, repeat=1, min_repeat_ms=20, enable_cpu_cache_flush=False)
    device = tvm.cpu()

    def time_module(module: Any, args_info: list) -> list[float]:
        args = default_alloc_argument(device, [a.as_json() for a in args_info], 1)
        return run_evaluator_common(module, device, config, args)

    return time_module


def _in_process_runner(built: dict[str, Any]) -> Any:
    """Times MetaSchedule's candidates with ``_timer``."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.runner import PyRunner, RunnerFuture, RunnerResult

    time_module = _timer()

    def finished(result: Any) -> Any:
        return RunnerFuture(lambda: True, lambda: result)

    @derived_object
    class InProcessRunner(PyRunner):
        def run(self, runner_inputs: list) -> list:
            futures = []
            for item in runner_inputs:
                module = built.pop(item.artifact_path, None)
                try:
                    futures.append(finished(RunnerResult(time_module(module, item.args_info), None)))
                except Exception as err:  # noqa: BLE001 - reported as a failed trial
                    futures.append(finished(RunnerResult(None, f"run failed: {str(err)[:300]}")))
            return futures

    return InProcessRunner()


def _in_process_measure(target: Any) -> Measure:
    """Builds and times scheduled kernels here with ``_timer``, as the samples are."""
    from tvm.s_tir import meta_schedule as ms

    time_module = _timer()

    def measure(mods: list[Any]) -> list[list[float] | None]:
        times: list[list[float] | None] = []
        for mod in mods:
            try:
                module = _build_candidate(mod, target)
                times.append([float(t) for t in time_module(
                    module, ms.arg_info.ArgInfo.from_entry_func(mod, remove_preproc=True))])
            except Exception:  # noqa: BLE001 - reported to the caller as a failed candidate
                log.debug("candidate failed to build or run", exc_info=True)
                times.append(None)
        return times

    return measure


def _sample(tasks: list, trials_per_task: int, database: Any, progress: Progress, seed: int | None) -> None:
    """``trials_per_task`` random draws from each task's design space, the fastest that passes the
    filter recorded in ``database``."""
    from tvm.s_tir import meta_schedule as ms

    total = trials_per_task * len(tasks)
    builder, built = _in_process_builder(progress_reporter(total, progress, label="scheduling"))
    with tempfile.TemporaryDirectory(prefix="edgevision-schedule-") as work_dir, quiet_metaschedule():
        contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
            tasks, work_dir, strategy="replay-trace", seed=seed)
        ms.tune.tune_tasks(tasks=contexts, task_weights=weights, work_dir=work_dir, max_trials_global=total,
                           max_trials_per_task=trials_per_task, num_trials_per_iter=trials_per_task,
                           builder=builder, runner=_in_process_runner(built), database=database,
                           cost_model="random", task_scheduler="round-robin",
                           measure_callbacks=[ms.measure_callback.AddToDatabase()])


def _is_scheduled(func: Any) -> bool:
    return bool(func.attrs and func.attrs.get("tirx.is_scheduled", False))


def default_search(mod: Any, real_target: Any, target_spec: dict[str, Any], trials_per_task: int,
                    known: Any, progress: Progress, seed: int | None) -> tuple[Any, dict[str, Any]]:
    """Schedule every task ``known`` (a database, or None) has no record for: sample MetaSchedule's
    CPU design space (multi-level tiling, parallelize/vectorize/unroll, inlining) ``trials_per_task``
    times, add the register-blocked schedule of each dense convolution, time each candidate here and
    keep the fastest that is parallel and vectorized."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    cross = "mtriple" in target_spec
    if cross:  # time on this host at NEON's vector width; parallel extents follow the device's cores
        proxy = {"kind": "llvm", "mcpu": HOST_PROXY_MCPU, "num-cores": int(target_spec.get("num-cores", 4))}
        search_target = tvm.target.Target(proxy)
    else:
        search_target = real_target
    import_tensor_intrinsics()
    tasks = ms.relax_integration.extract_tasks(mod, search_target)
    # the kernels a tuning log covers arrive here scheduled already, not as the log's workloads
    todo = [t for t in tasks if not _is_scheduled(t.dispatched[0]["main"])
            and (known is None or not known.has_workload(t.dispatched[0]))]
    record: dict[str, Any] = {"strategy": "default", "trials_per_task": trials_per_task, "tasks": len(tasks),
                              "tasks_searched": len(todo), "search_target": str(search_target.attrs.get("mcpu", "")),
                              "measured_on": "this host" + (f" as {HOST_PROXY_MCPU} (128-bit vectors)" if cross else "")}
    database = ms.database.MemoryDatabase()
    if not todo:
        record["minutes"] = 0.0
        return database, record
    started = time.monotonic()

    def unscheduled(tasks: list) -> list:
        return [t for t in tasks
                if database.query_tuning_record(t.dispatched[0], search_target, t.task_name) is None]

    progress(f"scheduling {len(todo)} kernels ({trials_per_task} candidates each, timed on this host)")
    _sample(todo, trials_per_task, database, progress, seed)
    blocked = record_blocked_convs(todo, database, search_target, _in_process_measure(search_target), progress)
    record["register_blocked"] = blocked.summary(database)
    # Small late feature maps (3x3, 6x6) rarely tile to 4-wide vectors in a few random samples; a
    # candidate that fails the filter costs only its sampling, so the kernels left naive get many more.
    left = unscheduled(todo)
    if left:
        retry = max(RETRY_MIN, trials_per_task * RETRY_FACTOR)
        progress(f"scheduling {len(left)} kernel{'s' if len(left) > 1 else ''} again ({retry} candidates "
                 "each): no candidate so far was parallel and vectorized")
        _sample(left, retry, database, progress, None if seed is None else seed + 1)
    record["minutes"] = round((time.monotonic() - started) / 60, 2)
    # Tasks where no candidate was both parallel and vectorized (or none built) keep naive loops.
    record["tasks_resampled"] = len(left)
    record["tasks_scheduled"] = len(todo) - len(unscheduled(todo))
    return database, record


def strategy_name(sources: list[dict[str, Any]]) -> str:
    """What scheduled the library, in words: the first source covered most kernels."""
    if not sources:
        return "none (naive loops)"
    names = [s["strategy"] for s in sources]
    return " + ".join(n if n != "default" else "default search" for n in names)
