"""A register-blocked schedule for dense NCHW convolutions, timed next to MetaSchedule's samples.

MetaSchedule's CPU design space vectorizes the innermost output axis, which in NCHW is the width:
7 or 14 lanes on the late feature maps, which neither 4-lane NEON nor 16-lane AVX-512 fills, and
random samples of it ran the 7x7 pointwise convolutions of EfficientNet-Lite0 at 17-29 GFLOP/s
where ONNX Runtime's MLAS runs them at 93-98 (2-core Xeon, AVX-512). This schedule is the classic
CPU convolution kernel instead: a block of ``rows`` output pixels x ``vectors * lanes`` output
channels is accumulated in registers over the whole reduction, vectorized over output channels,
with the weights repacked at compile time to [oc / block, ic, kh, kw, block] (a layout-free buffer
folded into the constant) so that each step is one vector load and ``rows`` broadcast FMAs. It ran
the same convolutions at 119-125 GFLOP/s. Depthwise and grouped convolutions are not dense and are
left to MetaSchedule.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CONV_BLOCK = "conv2d_nchw"
LOOP_KINDS = "SSSSRRR"  # n, oc, y, x | ic, kh, kw


@dataclass(frozen=True)
class Blocking:
    """``rows`` output pixels of one row x ``vectors`` vectors of ``lanes`` output channels."""

    lanes: int
    vectors: int
    rows: int

    @property
    def accumulators(self) -> int:
        return self.vectors * self.rows


def vector_registers(features: set[str]) -> tuple[int, int]:
    """(float32 lanes, vector registers) of the widest vector unit a target has."""
    if "avx512f" in features:
        return 16, 32
    if "avx2" in features or "avx" in features:
        return 8, 16
    if "neon" in features:
        return 4, 32
    return 4, 16  # SSE, the host proxy of NEON's width


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def blockings(out_channels: int, width: int, lanes: int, registers: int, limit: int = 6) -> list[Blocking]:
    """The register blocks worth timing, largest first: the accumulators leave registers for the
    weight vectors and the broadcast input (a quarter of the file), and the channel block divides
    ``out_channels`` (a lane count that does not is halved, down to 4)."""
    budget = registers - registers // 4
    while lanes > 4 and out_channels % lanes:
        lanes //= 2
    if out_channels % lanes:
        return []
    found = []
    for vectors in (v for v in (1, 2, 3, 4) if out_channels % (v * lanes) == 0):
        fitting = [r for r in _divisors(width) if r > 1 and vectors * r <= budget]
        for rows in sorted(fitting, reverse=True)[:2]:
            found.append(Blocking(lanes, vectors, rows))
    found.sort(key=lambda b: (-b.accumulators, -b.vectors))
    return found[:limit]


def conv_shape(func: Any) -> tuple[int, int] | None:
    """(output channels, output width) of a kernel this schedule applies to, or None: one dense
    ``conv2d_nchw`` block whose reduction runs over all input channels (not depthwise, not grouped)."""
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    try:
        block = sch.get_sblock(CONV_BLOCK)
    except s_tir.ScheduleError:
        return None
    stmt = sch.get(block)
    kinds = "".join("S" if int(v.iter_type) == 0 else "R" if int(v.iter_type) == 2 else "?" for v in stmt.iter_vars)
    if kinds != LOOP_KINDS:
        return None
    extents = [int(v.dom.extent) for v in stmt.iter_vars]
    data = stmt.reads[0].source
    if len(data.shape) != 4 or int(data.shape[1]) != extents[4]:  # groups != 1
        return None
    return extents[1], extents[3]


def schedule(func: Any, blocking: Blocking) -> Any | None:
    """The traced schedule of ``func`` with ``blocking``, or None where a step does not apply (an
    epilogue that is not elementwise, a producer other than padding)."""
    from tvm import IRModule, s_tir
    from tvm.s_tir import meta_schedule as ms

    sch = s_tir.Schedule(IRModule({"main": func}))
    try:
        conv = sch.get_sblock(CONV_BLOCK)
        for producer in sch.get_producers(conv):  # the padding, read in place
            sch.compute_inline(producer)
        n, oc, y, x, ic, kh, kw = sch.get_loops(conv)
        width = int(sch.get(x).extent)
        oc_out, oc_vec, oc_lane = sch.split(oc, [None, blocking.vectors, blocking.lanes])
        x_out, x_in = sch.split(x, [width // blocking.rows, blocking.rows])
        sch.reorder(n, oc_out, y, x_out, ic, kh, kw, x_in, oc_vec, oc_lane)
        acc = sch.cache_write(conv, 0, "local")
        while consumers := sch.get_consumers(acc):  # bias, activation, residual: on the registers
            if len(consumers) != 1:
                return None
            sch.reverse_compute_inline(consumers[0])
        sch.reverse_compute_at(acc, x_out)
        # channels innermost in the accumulator block: its vectors are then whole registers
        sch.transform_layout(conv, ("write", 0), lambda b, c, h, w: (b, h, w, c))
        sch.parallel(sch.fuse(n, oc_out, y))
        sch.vectorize(oc_lane)
        sch.unroll(oc_vec)
        sch.unroll(x_in)
        *_, store_c, store_x = sch.get_loops(acc)
        store_vec, store_lane = sch.split(store_c, [blocking.vectors, blocking.lanes])
        sch.reorder(store_x, store_vec, store_lane)
        sch.vectorize(store_lane)
        sch.unroll(store_vec)
        sch.unroll(store_x)
        sch.decompose_reduction(conv, ic)
    except s_tir.ScheduleError:
        return None
    # What follows is a postproc: a search that replays this trace to mutate it drops the weight
    # repacking and repacks the result itself (kept, a second repacking of the repacked buffer fails).
    sch.enter_postproc()
    if not ms.postproc.RewriteLayout().apply(sch):  # weights to [oc/block, ic, kh, kw, block]
        return None
    return sch
