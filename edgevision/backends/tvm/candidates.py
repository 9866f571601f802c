"""Hand-written schedules measured beside MetaSchedule's candidates: the register-blocked convolution
(.blocked_conv) at each of its register blocks, recorded as TuningRecords in the same database, so
the fastest of all is what a build applies. Who times them is the caller's: the default search times
in this process, ``--tune`` with its own builder and runner (worker processes, or the board over
RPC), so each database holds times taken one way."""
from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass, field
from typing import Any, Callable

from . import blocked_conv
from .kernels import primfunc_macs

log = logging.getLogger(__name__)

MIN_VECTOR_LANES = 4  # a 128-bit register of float32: narrower vector loops leave NEON half empty
# IRModules of one kernel, scheduled -> each one's run seconds, or None where it failed to build or run
Measure = Callable[[list[Any]], list["list[float] | None"]]


def parallel_and_vectorized(func: Any) -> bool:
    """Whether all of a kernel's multiply-accumulates sit in loops that are parallel and vectorized
    at least MIN_VECTOR_LANES wide: a schedule that is fast on this host only because LLVM
    vectorized it by itself may not be on another target."""
    macs = primfunc_macs("main", func)
    return not macs.macs_per_call or (macs.both_macs == macs.macs_per_call
                                      and macs.min_vector_lanes >= MIN_VECTOR_LANES)


def vector_unit(target: Any) -> tuple[int, int]:
    """(float32 lanes, vector registers) the register blocks are sized for on ``target``."""
    from tvm.target import codegen

    return blocked_conv.vector_registers({str(f) for f in codegen.llvm_get_cpu_features(target)})


@dataclass
class BlockedRecords:
    """What ``record_blocked_convs`` committed: per convolution, its workload and our fastest mean."""

    dense_convs: int = 0
    candidates: int = 0
    fastest: list[tuple[Any, float]] = field(default_factory=list)

    def summary(self, database: Any) -> dict[str, int]:
        """The manifest's counts; ``kept``: convolutions where one of ours is still the fastest
        record in ``database`` (ask after the search that competes with them)."""
        kept = 0
        for workload, ours in self.fastest:
            top = database.get_top_k(workload, 1)
            kept += bool(top) and statistics.fmean(float(t) for t in top[0].run_secs) >= ours
        return {"dense_convs": self.dense_convs, "candidates": self.candidates, "kept": kept}


def record_blocked_convs(tasks: list, database: Any, target: Any, measure: Measure,
                         progress: Callable[[str], None]) -> BlockedRecords:
    """Measure the register-blocked schedule of every dense convolution among ``tasks`` at each of
    its register blocks and commit them to ``database``."""
    from tvm.s_tir import meta_schedule as ms

    lanes, registers = vector_unit(target)
    convs = [(t, shape) for t in tasks if (shape := blocked_conv.conv_shape(t.dispatched[0]["main"]))]
    records = BlockedRecords(dense_convs=len(convs))
    if convs:
        progress(f"timing register-blocked schedules of {len(convs)} dense convolutions")
    for task, (channels, width) in convs:
        func = task.dispatched[0]["main"]
        schedules = [sch for b in blocked_conv.blockings(channels, width, lanes, registers)
                     if (sch := blocked_conv.schedule(func, b)) is not None
                     and parallel_and_vectorized(sch.mod["main"])]
        if not schedules:
            continue
        workload = database.commit_workload(task.dispatched[0])
        means = []
        for sch, secs in zip(schedules, measure([s.mod for s in schedules])):
            if secs is None:  # a blocking that fails to build or run is one candidate fewer
                continue
            database.commit_tuning_record(ms.database.TuningRecord(
                sch.trace, workload, secs, target, ms.arg_info.ArgInfo.from_prim_func(func)))
            means.append(statistics.fmean(secs))
        records.candidates += len(means)
        if means:
            records.fastest.append((workload, min(means)))
    return records
