"""ONNX backend node tests for the operators image classifiers use, run through every backend here.

The cases are ONNX's own (``onnx.backend.test``): a one-node model, its inputs and the expected
outputs from ONNX's reference implementation. Each backend runs each case and the result is compared
with the case's own tolerances (``rtol``/``atol``), as ONNX's backend test runner does.

Two ways to present a case to a backend:

* ``constants`` (default): every input but the first becomes an initializer. That is how an
  exported classifier presents these operators: weights, shapes, pads and scales are constants.
  Compilers such as TVM need them constant to plan memory and shapes.
* ``inputs``: every input is fed at run time, exactly as the ONNX test defines it.

Each backend brings its runner (``Backend.conformance_runner``: a runtime called directly on the
case's graph, so the run checks the runtime or compiler, not edgevision's plugin around it) and the
cases it is known to fail (``Backend.conformance_known_failures``, measured with onnxruntime 1.31.1,
openvino 2026.4.1 and apache-tvm 0.27.0 against onnx 1.23 cases).
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .backends import Backend, backend_names, get_backend
from .diagnostics import summarize
from .errors import BackendUnavailable, EdgevisionError
from .quiet import silenced

# A backend's conformance runner: an ONNX model and its input arrays in, its output arrays out.
RunCase = Callable[[Any, Sequence[np.ndarray]], Sequence[np.ndarray]]

log = logging.getLogger(__name__)

# Operator -> module of onnx.backend.test.case.node that defines its cases.
OPERATORS: dict[str, str] = {
    "Conv": "conv", "ConvTranspose": "convtranspose", "Relu": "relu", "Clip": "clip",
    "HardSwish": "hardswish", "HardSigmoid": "hardsigmoid", "Sigmoid": "sigmoid", "MaxPool": "maxpool",
    "AveragePool": "averagepool", "GlobalAveragePool": "globalaveragepool",
    "BatchNormalization": "batch_normalization", "Add": "add", "Mul": "mul", "Concat": "concat",
    "Reshape": "reshape", "Flatten": "flatten", "Gemm": "gemm", "MatMul": "matmul", "Softmax": "softmax",
    "Transpose": "transpose", "Pad": "pad", "Resize": "resize",
}
FEED_MODES = ("constants", "inputs")
_NODE_PACKAGE = "onnx.backend.test.case.node"



def known_failure(backend: str, case: str) -> str | None:
    """Why ``backend`` is known to fail ``case`` (default feed mode), or None when it should pass."""
    for name, reason, cases in known_failures():
        if name == backend and case in cases:
            return reason
    return None


@dataclass(frozen=True)
class NodeCase:
    name: str
    op: str
    model: Any  # onnx.ModelProto
    data_sets: list[tuple[list[np.ndarray], list[np.ndarray]]]
    rtol: float
    atol: float


@dataclass(frozen=True)
class CaseResult:
    backend: str
    op: str
    case: str
    passed: bool
    detail: str = ""  # why it failed: the error's first line or the size of the mismatch


@dataclass
class OpTally:
    passed: int = 0
    total: int = 0
    failed: list[str] = field(default_factory=list)


def _attribute(cases: Iterable[Any], ops: set[str]) -> list[NodeCase]:
    """Keep the cases of ``ops``: one-node models of that op, plus their ``_expanded`` function bodies."""
    by_name = {c.name: c for c in cases}
    picked = []
    for case in by_name.values():
        base = by_name.get(case.name.split("_expanded")[0])
        if base is None or len(base.model.graph.node) != 1:
            continue
        op = base.model.graph.node[0].op_type
        if op in ops:
            data = [([np.asarray(x) for x in inputs], [np.asarray(y) for y in outputs])
                    for inputs, outputs in case.data_sets]
            picked.append(NodeCase(case.name, op, case.model, data, case.rtol, case.atol))
    return sorted(picked, key=lambda c: (list(OPERATORS).index(c.op) if c.op in OPERATORS else 99, c.name))


def load_cases(ops: Sequence[str] | None = None, full_suite: bool = False) -> list[NodeCase]:
    """ONNX node test cases for ``ops`` (default: all of OPERATORS).

    ``full_suite`` builds all ~1900 cases with ``load_model_tests(kind='node')`` (~25 s) and filters
    them; otherwise only the modules defining ``ops`` are imported, which yields the same cases.
    """
    try:
        import onnx.backend.test.case.node as node_cases
        from onnx.backend.test.loader import load_model_tests
    except ImportError as err:
        raise BackendUnavailable("the conformance run needs the onnx package", "pip install 'edgevision[compile]'") from err
    wanted = list(ops) if ops else list(OPERATORS)
    unknown = [op for op in wanted if op not in OPERATORS]
    if unknown:
        raise EdgevisionError(f"no conformance cases for operator(s) {', '.join(unknown)}",
                              f"choose from {', '.join(OPERATORS)}")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the case generators divide by zero on purpose
        if full_suite:
            cases = load_model_tests(kind="node")
        else:
            for op in wanted:
                importlib.import_module(f"{_NODE_PACKAGE}.{OPERATORS[op]}")
            cases = node_cases._NodeTestCases
    return _attribute(cases, set(wanted))


def with_constant_params(model: Any, inputs: list[np.ndarray]) -> tuple[Any, list[np.ndarray]]:
    """The same model with every input but the first turned into an initializer."""
    import onnx
    from onnx import numpy_helper

    frozen = onnx.ModelProto()
    frozen.CopyFrom(model)
    graph_inputs = list(frozen.graph.input)
    for graph_input, value in zip(graph_inputs[1:], inputs[1:]):
        frozen.graph.initializer.append(numpy_helper.from_array(np.asarray(value), graph_input.name))
        frozen.graph.input.remove(graph_input)
    return frozen, inputs[:1]


def _backends() -> list[Backend]:
    """Every registered backend that has a conformance runner (a broken plugin is left out)."""
    found = []
    for name in backend_names():
        try:
            backend = get_backend(name)
        except Exception as err:  # noqa: BLE001 - a plugin that fails to import cannot be tested here
            log.warning("backend %s left out of conformance: %s", name, err)
            continue
        if backend.has_conformance_runner:
            found.append(backend)
    return found


def known_failures() -> list[tuple[str, str, tuple[str, ...]]]:
    """(backend, reason, cases) of the default feed mode ("constants"), as each backend declares them
    (``Backend.conformance_known_failures``). Reasons are what the case exercises."""
    return [(b.name, reason, cases) for b in _backends() for reason, cases in b.conformance_known_failures]


def available_backends() -> list[str]:
    return [b.name for b in _backends() if b.is_available()]


def _reason(err: BaseException) -> str:
    return f"{type(err).__name__}: {summarize(err)}"[:300]


def compare(expected: list[np.ndarray], got: list[np.ndarray], rtol: float, atol: float) -> str:
    """Empty when ``got`` matches ``expected`` within tolerance, else what differs."""
    if len(got) < len(expected):
        return f"{len(got)} outputs, expected {len(expected)}"
    for i, (want, have) in enumerate(zip(expected, got)):
        if tuple(want.shape) != tuple(have.shape):
            return f"output {i} shape {tuple(have.shape)}, expected {tuple(want.shape)}"
        if not np.allclose(have.astype(np.float64), want.astype(np.float64), rtol=rtol, atol=atol, equal_nan=True):
            diff = float(np.max(np.abs(have.astype(np.float64) - want.astype(np.float64))))
            return f"output {i} max|diff| {diff:.3g} (rtol {rtol:g}, atol {atol:g})"
    return ""


def run_case(run: RunCase, case: NodeCase, feed: str = "constants") -> str:
    """Empty string when the backend reproduces every data set of ``case``, else the reason."""
    for inputs, outputs in case.data_sets:
        model = case.model
        if feed == "constants":
            model, inputs = with_constant_params(model, inputs)
        try:
            got = run(model, inputs)
        except Exception as err:  # each backend raises its own types; the case records the reason
            return _reason(err)
        mismatch = compare(outputs, got, case.rtol, case.atol)
        if mismatch:
            return mismatch
    return ""


def run_conformance(cases: Sequence[NodeCase], backends: Sequence[str] | None = None, feed: str = "constants",
                    progress: Callable[[str], None] | None = None) -> list[CaseResult]:
    if feed not in FEED_MODES:
        raise EdgevisionError(f"unknown feed mode {feed!r}", f"use one of {', '.join(FEED_MODES)}")
    names = list(backends) if backends else available_backends()
    results: list[CaseResult] = []
    runners = {b.name: b for b in _backends()}
    for name in names:
        if name not in runners:
            raise EdgevisionError(f"no conformance runner for backend {name!r}", f"use one of {', '.join(runners)}")
        try:
            run = runners[name].conformance_runner()
        except ImportError as err:
            raise BackendUnavailable(f"{name} is not installed here ({err})",
                                     f"pip install 'edgevision[{name}]' or leave it out") from err
        start = time.perf_counter()
        for case in cases:
            with silenced(log, f"{name} {case.name}", native=True, stderr=True):  # importers print their failures
                reason = run_case(run, case, feed)
            results.append(CaseResult(name, case.op, case.name, not reason, reason))
            log.debug("%s %s: %s", name, case.name, reason or "pass")
        if progress:
            passed = sum(r.passed for r in results if r.backend == name)
            progress(f"{name}: {passed}/{len(cases)} cases passed in {time.perf_counter() - start:.1f} s")
    return results


def tally(results: Iterable[CaseResult]) -> dict[str, dict[str, OpTally]]:
    """op -> backend -> passed/total and the failing case names."""
    table: dict[str, dict[str, OpTally]] = defaultdict(lambda: defaultdict(OpTally))
    for r in results:
        cell = table[r.op][r.backend]
        cell.total += 1
        cell.passed += r.passed
        if not r.passed:
            cell.failed.append(r.case)
    return table


def markdown_table(results: Sequence[CaseResult]) -> str:
    backends = list(dict.fromkeys(r.backend for r in results))
    table = tally(results)
    lines = ["| operator | " + " | ".join(backends) + " |", "|---" * (len(backends) + 1) + "|"]
    totals = {b: OpTally() for b in backends}
    for op in [o for o in OPERATORS if o in table]:
        cells = []
        for b in backends:
            cell = table[op][b]
            totals[b].passed += cell.passed
            totals[b].total += cell.total
            cells.append(f"{cell.passed}/{cell.total}")
        lines.append(f"| {op} | " + " | ".join(cells) + " |")
    lines.append("| **all** | " + " | ".join(f"**{t.passed}/{t.total}**" for t in totals.values()) + " |")
    return "\n".join(lines)


def failure_lines(results: Sequence[CaseResult]) -> list[str]:
    """Markdown rows: backend, operator, case, the known reason (or NEW), what was observed."""
    rows = []
    for r in results:
        if not r.passed:
            reason = known_failure(r.backend, r.case) or "**NEW** (not a known failure)"
            rows.append(f"| {r.backend} | {r.op} | `{r.case}` | {reason} | {r.detail.replace('|', '/')} |")
    return rows
