"""Backend runtimes fail with pages of C++ context; this turns them into the one line a user needs.

OpenVINO reports an unconvertible operator as ``-- Pad-19 with a message: ... Unsupported padding
mode: [wrap]`` or ``No conversion rule found for operations: com.example.Op``; ONNX Runtime as
``[ONNXRuntimeError] : 1 : FAIL : /src/file.cc:256 fn(...) the reason``. Standard library only:
this module runs on devices.
"""
from __future__ import annotations

import contextlib
import re
from typing import Iterator

from .errors import BackendError, EdgevisionError

_OV_FAILED_OP = re.compile(r"^-- ([\w.]+-\d+) with a message:", re.M)
_OV_NO_RULE = re.compile(r"No conversion rule found for operations?: ([^\n]+)")
_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\] : \d+ : (\w+) : ")
# A C++ source location and signature, e.g. "/onnxruntime_src/core/graph/model.cc:256 ns::Model::Model(...) "
_CPP_LOCATION = re.compile(r"(?:Exception during initialization: )?/?[\w./-]+\.(?:cc|cpp|h|hpp):\d+ "
                           r"(?:[^()\n]*\((?:[^()\n]|\([^()\n]*\))*\)(?: \[with [^\]]*\])? )?")
_ORT_NOT_REGISTERED = re.compile(r"Fatal error: ([\w.:]+)\(-?\d+\) is not a registered function/op")
_NOISE = ("Exception from ", "Check '", "FrontEnd API failed", "Model wasn't fully converted", "Summary:",
          "To facilitate", "Failed operations detailed log", "While validating ONNX node", "-- Conversion is failed")


def summarize(err: BaseException) -> str:
    """The operator (when the message names one) and the reason, on one line."""
    text = str(err).strip()
    failures = _openvino_failures(text)
    if failures:
        # A rejected operator makes its consumers fail too ("rank has to be known"): name the cause first.
        failures.sort(key=lambda f: 0 if "support" in f[1].lower() else 1)
        (op, reason), more = failures[0], len(failures) - 1
        return f"operator {op}: {reason}" + (f" (and {more} dependent operator(s))" if more else "")
    no_rule = _OV_NO_RULE.search(text)
    if no_rule:
        return f"operator {no_rule.group(1).strip()} has no conversion rule"
    ort = _ORT_PREFIX.match(text)
    if ort:
        text = text[ort.end():]
    not_registered = _ORT_NOT_REGISTERED.search(text)
    if not_registered:
        return f"operator {not_registered.group(1)} is not implemented (not a registered function/op)"
    text = _CPP_LOCATION.sub("", text, count=1)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith(_NOISE)]
    line = lines[0] if lines else type(err).__name__
    return line if len(line) <= 300 else line[:297] + "..."


def _openvino_failures(text: str) -> list[tuple[str, str]]:
    """(operator, last line of its message) for each block of OpenVINO's unconverted-operator report."""
    matches = list(_OV_FAILED_OP.finditer(text))
    found = []
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        body = text[match.end():end].split("\nSummary:")[0]
        lines = [ln.strip() for ln in body.splitlines() if ln.strip() and not ln.strip().startswith(_NOISE)]
        found.append((match.group(1), lines[-1] if lines else "conversion failed"))
    return found


def backend_failure(backend: str, doing: str, err: BaseException) -> BackendError:
    """A one-line error for ``backend`` failing at ``doing`` (e.g. 'compile this model for intel-cpu')."""
    return BackendError(f"{backend} cannot {doing}: {summarize(err)}",
                        "replace that layer or pick a target whose backend supports it "
                        "(`edgevision conformance` shows what each backend runs)")


@contextlib.contextmanager
def translated(backend: str, doing: str) -> Iterator[None]:
    """Re-raise a backend's own exception as a one-line BackendError; ours, disk and memory errors pass."""
    try:
        yield
    except (EdgevisionError, OSError, MemoryError):
        raise
    except Exception as err:  # each runtime has its own exception types
        raise backend_failure(backend, doing, err) from err
