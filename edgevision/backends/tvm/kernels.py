"""What the TVM library really does with the model's multiply-accumulates: a static report.

Emulated time says nothing about a Pi's speed (qemu flattens a 60x gap to nothing), so the speed
evidence for an aarch64 library is static. Two views, both computed at compile time:

* the scheduled TIR: every multiply-accumulate statement (``C[..] = C[..] + A[..] * B[..]``: the
  convolutions, depthwise convolutions and matmuls), executed as often as its loop nest says and
  as often as the Relax graph calls the kernel, is classed as running in a parallel loop, in a
  vectorized loop, both, or neither;
* the linked library (aarch64 only, when ``aarch64-linux-gnu-objdump`` is installed): each kernel's
  machine code is searched for NEON multiply-accumulates (``fmla``/``fmul`` on ``v`` registers) and
  for the parallel-launch call; a kernel whose TIR says "vectorized" but whose code has no NEON
  arithmetic (TVM scalarises loops it cannot vectorize) does not count as vectorized.
"""
from __future__ import annotations

import logging
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

OBJDUMP = {"aarch64": "aarch64-linux-gnu-objdump"}
# NEON float arithmetic on vector registers, e.g. "fmla v0.4s, v1.4s, v2.s[1]" or "fmul v3.4s, ...".
# .2s is NEON at half width (a vectorized loop of 2 floats); both count as NEON.
NEON_FMA = re.compile(r"\b(fmla|fmul|fmls)\s+v\d+\.(4s|2s|2d|8h|4h)")
SYMBOL = re.compile(r"^[0-9a-f]+ <([^>]+)>:$")
# TVM names a kernel's packed entry __tvm_ffi_<kernel>, its body <kernel>_compute_ (the parallel body).
KERNEL_OF_SYMBOL = re.compile(r"^(?:__tvm_ffi_)?(.+?)(?:_compute_)?(?:\.\d+)?$")


@dataclass
class KernelMacs:
    """One TIR kernel: multiply-accumulates per call, calls per inference, how its loops run."""

    name: str
    calls: int
    macs_per_call: int = 0
    parallel_macs: int = 0  # per call, in a loop nest with a parallel loop
    vector_macs: int = 0  # per call, in a vectorized loop
    both_macs: int = 0  # per call, both
    min_vector_lanes: int = 0  # the narrowest vectorized loop around a MAC (0: none vectorized)
    neon_in_binary: bool | None = None  # None: the machine code was not inspected

    @property
    def macs(self) -> int:
        return self.macs_per_call * self.calls

    @property
    def fast_macs(self) -> int:
        """MACs in loops that are parallel and vectorized (and, where inspected, NEON in the code)."""
        return 0 if self.neon_in_binary is False else self.both_macs * self.calls


@dataclass
class KernelReport:
    macs: int
    parallel_vectorized_macs: int
    share: float  # parallel_vectorized_macs / macs
    parallel_share: float
    vectorized_share: float
    kernels: int  # kernels that do multiply-accumulates
    binary_checked: bool
    slow_kernels: list[dict[str, Any]] = field(default_factory=list)  # the largest that are not both

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_mac(store: Any) -> bool:
    """``C[i] = C[i] + A * B`` (either operand order), the update of a conv or matmul reduction."""
    import tvm
    from tvm import tirx

    value = store.value
    if not isinstance(value, tirx.Add):
        return False
    for acc, product in ((value.a, value.b), (value.b, value.a)):
        # tirx.BufferLoad builds an ir.TensorLoad whose source is the buffer
        if (isinstance(acc, tvm.ir.TensorLoad) and acc.source.same_as(store.buffer)
                and isinstance(product, tirx.Mul)):
            return True
    return False


def _walk(stmt: Any, loops: tuple[tuple[int, int], ...], out: KernelMacs) -> None:
    """Depth-first over one PrimFunc body; ``loops`` holds (extent, ForKind) of the enclosing Fors."""
    from tvm import s_tir, tirx

    if isinstance(stmt, tirx.For):
        extent = int(stmt.extent) if isinstance(stmt.extent, tirx.IntImm) else 1
        _walk(stmt.body, loops + ((extent, int(stmt.kind)),), out)
    elif isinstance(stmt, tirx.SeqStmt):
        for child in stmt.seq:
            _walk(child, loops, out)
    elif isinstance(stmt, s_tir.SBlockRealize):
        _walk(stmt.block, loops, out)
    elif isinstance(stmt, s_tir.SBlock):
        if stmt.init is not None:
            _walk(stmt.init, loops, out)
        _walk(stmt.body, loops, out)
    elif isinstance(stmt, tirx.IfThenElse):
        _walk(stmt.then_case, loops, out)
        if stmt.else_case is not None:
            _walk(stmt.else_case, loops, out)
    elif isinstance(stmt, tirx.BufferStore):
        if _is_mac(stmt):
            count = 1
            for extent, _ in loops:
                count *= extent
            kinds = {kind for _, kind in loops}
            parallel, vector = int(tirx.ForKind.PARALLEL) in kinds, int(tirx.ForKind.VECTORIZED) in kinds
            out.macs_per_call += count
            out.parallel_macs += count if parallel else 0
            out.vector_macs += count if vector else 0
            out.both_macs += count if parallel and vector else 0
            lanes = max((extent for extent, kind in loops if kind == int(tirx.ForKind.VECTORIZED)), default=0)
            if lanes:
                out.min_vector_lanes = min(out.min_vector_lanes or lanes, lanes)
    elif hasattr(stmt, "body"):  # AttrStmt, DeclBuffer, AllocBuffer, Bind, AssertStmt, ...
        _walk(stmt.body, loops, out)


def primfunc_macs(name: str, func: Any) -> KernelMacs:
    """One PrimFunc's multiply-accumulates per call and how its loops run them."""
    entry = KernelMacs(name, 1)
    _walk(func.body, (), entry)
    return entry


def _call_counts(mod: Any) -> dict[str, int]:
    """How often ``main`` calls each PrimFunc (one inference)."""
    import tvm
    from tvm import relax

    call_tir = {tvm.ir.Op.get("relax.call_tir"), tvm.ir.Op.get("relax.call_tir_inplace")}
    counts: dict[str, int] = {}

    def visit(node: Any) -> None:
        if isinstance(node, relax.Call) and node.op in call_tir:
            name = node.args[0].name_hint
            counts[name] = counts.get(name, 0) + 1

    for gvar, func in mod.functions.items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func.body, visit)
    return counts


def kernel_macs(mod: Any) -> list[KernelMacs]:
    """Per-kernel multiply-accumulates of a Relax module whose PrimFuncs are (or are not) scheduled:
    the module as it goes into ``tvm.compile``, after legalization, fusion and any database."""
    from tvm import tirx

    counts = _call_counts(mod)
    kernels = []
    for gvar, func in mod.functions.items():
        if not isinstance(func, tirx.PrimFunc) or gvar.name_hint not in counts:
            continue
        entry = primfunc_macs(gvar.name_hint, func)
        entry.calls = counts[gvar.name_hint]
        if entry.macs_per_call:
            kernels.append(entry)
    return kernels


def _neon_kernels(library: Path, objdump: str) -> dict[str, bool]:
    """Kernel -> whether the machine code of any of its functions (packed entry, compute body)
    holds NEON float multiply(-accumulate) instructions."""
    done = subprocess.run([objdump, "-d", "--no-show-raw-insn", str(library)], capture_output=True,
                          text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "objdump failed")
    found: dict[str, bool] = {}
    current = None
    for line in done.stdout.splitlines():
        match = SYMBOL.match(line)
        if match:
            current = KERNEL_OF_SYMBOL.match(match.group(1)).group(1)
            found.setdefault(current, False)
        elif current is not None and not found[current] and NEON_FMA.search(line):
            found[current] = True
    return found


def report(mod: Any, library: Path | None = None, arch: str | None = None, top: int = 5) -> KernelReport:
    """The share of multiply-accumulates in parallel, vectorized loops; with ``library`` and an
    architecture objdump knows, vectorized also has to show as NEON arithmetic in the machine code."""
    kernels = kernel_macs(mod)
    objdump = shutil.which(OBJDUMP[arch]) if arch in OBJDUMP else None
    checked = False
    if library is not None and objdump:
        try:
            neon = _neon_kernels(library, objdump)
        except (OSError, RuntimeError, subprocess.TimeoutExpired) as err:
            log.warning("could not disassemble %s (%s): the kernel report rests on the TIR alone", library, err)
        else:
            checked = True
            for kernel in kernels:
                kernel.neon_in_binary = neon.get(kernel.name, False)
    total = sum(k.macs for k in kernels) or 1
    fast = sum(k.fast_macs for k in kernels)
    slow = sorted((k for k in kernels if k.fast_macs < k.macs), key=lambda k: -k.macs)[:top]
    return KernelReport(
        macs=sum(k.macs for k in kernels), parallel_vectorized_macs=fast, share=round(fast / total, 4),
        parallel_share=round(sum(k.parallel_macs * k.calls for k in kernels) / total, 4),
        vectorized_share=round(sum(k.vector_macs * k.calls for k in kernels) / total, 4),
        kernels=len(kernels), binary_checked=checked,
        slow_kernels=[{"kernel": k.name, "macs": k.macs, "share_of_model": round(k.macs / total, 4),
                       "parallel": k.parallel_macs == k.macs_per_call, "vectorized": k.vector_macs == k.macs_per_call,
                       "neon_in_binary": k.neon_in_binary} for k in slow])
