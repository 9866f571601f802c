"""ONNX node conformance on a representative subset: pass counts must be what docs/conformance.md states.

The subset covers the convolution path, activations, pooling, normalisation, the classifier head and
the two operators with most failures (Pad, Resize), through ONNX Runtime, OpenVINO and TVM (llvm).
A backend regression, a fixed known failure, or an edited table all make a test here fail.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import REPO, run_cli

SUBSET = ["Conv", "Relu", "HardSigmoid", "MaxPool", "BatchNormalization", "Gemm", "Pad", "Resize"]
BACKENDS = ["onnxruntime", "openvino", "tvm"]
DOC = REPO / "docs" / "conformance.md"


def documented_table() -> dict[str, dict[str, tuple[int, int]]]:
    """op -> backend -> (passed, total) from the first table of docs/conformance.md (feed=constants)."""
    lines = DOC.read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("| operator |"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    table: dict[str, dict[str, tuple[int, int]]] = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip().strip("*") for c in line.strip("|").split("|")]
        counts = {}
        for backend, cell in zip(header[1:], cells[1:]):
            passed, total = re.fullmatch(r"(\d+)/(\d+)", cell).groups()
            counts[backend] = (int(passed), int(total))
        table[cells[0]] = counts
    return table


@pytest.fixture(scope="module")
def results():
    from edgevision.conformance import load_cases, run_conformance

    return run_conformance(load_cases(SUBSET), BACKENDS)


def test_pass_counts_match_the_documented_table(results) -> None:
    from edgevision.conformance import tally

    documented = documented_table()
    measured = tally(results)
    for op in SUBSET:
        for backend in BACKENDS:
            cell = measured[op][backend]
            assert (cell.passed, cell.total) == documented[op][backend], \
                f"{backend} {op}: measured {cell.passed}/{cell.total}, docs say {documented[op][backend]}; " \
                f"failing: {cell.failed}"


def test_failures_are_exactly_the_known_ones(results) -> None:
    from edgevision.conformance import known_failures

    in_subset = {r.case for r in results}
    failed = {(r.backend, r.case) for r in results if not r.passed}
    known = {(backend, case) for backend, _, cases in known_failures() for case in cases if case in in_subset}
    assert failed - known == set(), "new failures (regressions)"
    assert known - failed == set(), ("known failures that now pass: update the backend's "
                                     "conformance_known_failures and docs/conformance.md")


def test_documented_totals_add_up() -> None:
    documented = documented_table()
    ops = [op for op in documented if op != "all"]
    assert len(ops) == 22
    for backend in BACKENDS:
        passed = sum(documented[op][backend][0] for op in ops)
        total = sum(documented[op][backend][1] for op in ops)
        assert documented["all"][backend] == (passed, total)


def test_cases_come_from_onnx_and_run_through_the_cli(tmp_path: Path) -> None:
    out = tmp_path / "conformance.md"
    result = run_cli("-q", "conformance", "--backend", "onnxruntime", "--op", "Relu", "--op", "Gemm",
                     "--op", "Resize", "--markdown", str(out))
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert "| Relu | 2/2 |" in text and "| Gemm | 11/11 |" in text and "| Resize | 37/39 |" in text
    assert "test_resize_downsample_scales_linear_align_corners" in text and "NEW" not in text
