"""The register-blocked convolution schedule (edgevision/backends/tvm/blocked_conv.py) on real TVM
kernels: every register block it proposes builds, computes what the unscheduled kernel computes
(bias, ReLU6, padding, stride and residual epilogues included), runs vectorized over output channels
in parallel loops, and depthwise convolutions are left alone. Speed is benchmarks/tvm_default_vs_ort.py's."""
from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from edgevision.backends.tvm import blocked_conv  # noqa: E402
from edgevision.backends.tvm.kernels import primfunc_macs  # noqa: E402

TARGET = {"kind": "llvm", "mcpu": "x86-64-v2", "num-cores": 2}  # 128-bit vectors, as the rpi4 search times


def _fused_conv(in_ch: int, out_ch: int, size: int, kernel: int = 1, stride: int = 1, groups: int = 1,
                residual: bool = False):
    """conv2d + bias + ReLU6 (+ a residual add) as Relax fuses it: one PrimFunc with its epilogue."""
    from tvm import relax

    rng = np.random.default_rng(0)
    weight = rng.standard_normal((out_ch, in_ch // groups, kernel, kernel)).astype("float32") * 0.1
    bias = rng.standard_normal((1, out_ch, 1, 1)).astype("float32")
    builder = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, in_ch, size, size), "float32"))
    with builder.function("main", [x]):
        with builder.dataflow():
            y = builder.emit(relax.op.nn.conv2d(x, relax.const(weight), strides=stride, padding=kernel // 2,
                                                groups=groups))
            y = builder.emit(relax.op.clip(relax.op.add(y, relax.const(bias)), 0.0, 6.0))
            if residual:
                y = builder.emit(relax.op.add(y, x))
            out = builder.emit_output(y)
        builder.emit_func_output(out)
    target = tvm.target.Target(TARGET)
    with target:
        mod = tvm.transform.Sequential([relax.transform.DecomposeOpsForInference(), relax.get_pipeline("zero"),
                                        relax.transform.AttachAttrLayoutFreeBuffers()])(builder.get())
    return mod, target


def _apply(mod, target, sch):
    """What build.py does with a chosen schedule: apply it by workload, fold the weight repacking."""
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    (task,) = ms.relax_integration.extract_tasks(mod, target)
    database = ms.database.MemoryDatabase()
    workload = database.commit_workload(task.dispatched[0])
    func = task.dispatched[0]["main"]
    database.commit_tuning_record(ms.database.TuningRecord(sch.trace, workload, [1e-3], target,
                                                           ms.arg_info.ArgInfo.from_prim_func(func)))
    with target, database:
        scheduled = relax.transform.MetaScheduleApplyDatabase()(mod)
    return tvm.transform.Sequential([relax.transform.SplitLayoutRewritePreproc(),
                                     relax.transform.FoldConstant()])(scheduled)


def _run(mod, target, x: np.ndarray) -> np.ndarray:
    from tvm import relax

    vm = relax.VirtualMachine(tvm.compile(mod, target=target), tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


@pytest.mark.parametrize("in_ch,out_ch,size,kernel,stride,residual", [
    (32, 96, 14, 1, 1, False),   # a pointwise expansion on a 14x14 map
    (96, 32, 7, 1, 1, False),    # a pointwise projection on the late 7x7 map
    (24, 24, 8, 1, 1, True),     # pointwise with a residual add in the epilogue
    (3, 16, 32, 3, 2, False),    # the stem: 3x3, stride 2, padded
])
def test_every_register_block_computes_the_convolution(in_ch, out_ch, size, kernel, stride, residual) -> None:
    mod, target = _fused_conv(in_ch, out_ch, size, kernel, stride, residual=residual)
    x = np.random.default_rng(1).random((1, in_ch, size, size), dtype=np.float32)
    want = _run(mod, target, x)
    func = next(f for f in mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc))
    channels, width = blocked_conv.conv_shape(func)
    assert (channels, width) == (out_ch, size // stride)
    lanes, registers = blocked_conv.vector_registers({"sse4.2"})
    found = blocked_conv.blockings(channels, width, lanes, registers)
    assert found, "no register block proposed"
    for blocking in found:
        assert channels % (blocking.lanes * blocking.vectors) == 0 and width % blocking.rows == 0
        assert blocking.accumulators <= registers - registers // 4
        sch = blocked_conv.schedule(func, blocking)
        assert sch is not None, blocking
        macs = primfunc_macs("main", sch.mod["main"])
        assert macs.macs_per_call == out_ch * in_ch * kernel * kernel * width * width
        assert macs.both_macs == macs.macs_per_call and macs.min_vector_lanes == blocking.lanes, blocking
        got = _run(_apply(mod, target, sch), target, x)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=str(blocking))


def test_depthwise_and_grouped_convolutions_are_left_to_metaschedule() -> None:
    for groups in (32, 4):
        mod, _ = _fused_conv(32, 32, 14, 3, 1, groups=groups)
        func = next(f for f in mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc))
        assert blocked_conv.conv_shape(func) is None


def test_register_blocks_fit_the_register_file_and_the_channels() -> None:
    # AVX-512: 16 lanes, 32 registers; 24 output channels do not divide by 16, so 8 lanes
    assert {b.lanes for b in blocked_conv.blockings(24, 56, 16, 32)} == {8}
    assert all(b.accumulators <= 24 for b in blocked_conv.blockings(192, 7, 16, 32))
    assert blocked_conv.blockings(6, 7, 4, 16) == []  # no 4-lane block of 6 channels
    assert blocked_conv.vector_registers({"neon"}) == (4, 32)
    assert blocked_conv.vector_registers({"avx2", "fma"}) == (8, 16)
