"""NNCF's ``quantize_with_accuracy_control`` as a quantizer (``--quantizer nncf-accuracy-control``).

NNCF quantizes, ranks its quantizers by how much each one's error moves the output, and returns
them to float, worst first, until the metric is within ``max_drop`` of the original's. The metric
here is top-1 agreement with the FP32 model on the calibration samples: unlabelled, like the rest
of the INT8 path, and never the gate's validation inputs, so the gate stays an independent check.
The search is bounded: at most ``max_iterations`` groups go back to float (the
``max_float_groups`` option; each iteration costs one validation).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..errors import BackendUnavailable
from .qdq import excluded_nodes, nncf_preset, quiet_nncf
from .reader import TensorReader
from .recipe import QuantRecipe
from .sensitivity import COMPUTE_OPS, quantized_layers

log = logging.getLogger(__name__)
MAX_ITERATIONS = 8  # each iteration returns one group of quantizers to float and validates again
DEFAULT_MAX_DROP = 0.02  # top-1 agreement with FP32 on the calibration samples may fall to 98%


def _top1(session: Any, feeds: Iterable[dict[str, np.ndarray]]) -> np.ndarray:
    return np.array([int(np.argmax(session.run(None, feed)[0])) for feed in feeds])


def _session(model: Any) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def quantize_with_accuracy_control(float_onnx: Path, out_path: Path, reader: TensorReader, recipe: QuantRecipe,
                                   max_drop: float = DEFAULT_MAX_DROP,
                                   max_iterations: int = MAX_ITERATIONS) -> dict[str, Any]:
    """Write the QDQ model to ``out_path``; return what the manifest records (the layers NNCF put
    back to float, the agreement it reached, the bounds it ran under)."""
    try:
        import nncf
        import onnx
        from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters
    except ImportError as err:
        raise BackendUnavailable("--quantizer nncf-accuracy-control needs NNCF", "pip install 'edgevision[int8]'") from err
    model = onnx.load(str(float_onnx))
    feeds = list(reader)
    reference = _top1(_session(model), feeds)
    # Each item carries the FP32 answer: NNCF validates on subsets it picks itself.
    items = list(zip(feeds, reference.tolist()))
    seen: list[float] = []

    def agreement(candidate: Any, data: Iterable[tuple[dict[str, np.ndarray], int]]) -> tuple[float, None]:
        batch = list(data)
        got = _top1(_session(candidate), (feed for feed, _ in batch))
        value = float(np.mean(got == np.array([want for _, want in batch]))) if batch else 1.0
        seen.append(value)
        return value, None  # None: NNCF ranks quantizers by how far their outputs move, not by 0/1 hits

    ignored = excluded_nodes(float_onnx, recipe)
    started = time.monotonic()
    with quiet_nncf(log, "NNCF accuracy control"):
        quantized = nncf.quantize_with_accuracy_control(
            model, nncf.Dataset(feeds), nncf.Dataset(items, lambda item: item[0]), agreement,
            max_drop=max_drop, preset=nncf_preset(recipe), subset_size=len(feeds),
            ignored_scope=nncf.IgnoredScope(names=ignored) if ignored else None,
            advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(
                max_num_iterations=max_iterations, num_ranking_workers=1))
    onnx.save(quantized, str(out_path))
    achieved = float(np.mean(_top1(_session(quantized), feeds) == reference))
    still_quantized = set(quantized_layers(quantized))
    compute = [n.name for n in model.graph.node if n.op_type in COMPUTE_OPS]
    restored = [{"layer": name, "why": "returned to float by NNCF accuracy control"}
                for name in compute if name not in still_quantized and name not in ignored]
    return {"restored": restored, "max_agreement_drop": max_drop, "max_iterations": max_iterations,
            "samples": len(feeds), "agreement_after": round(achieved, 4),
            "validations": len(seen), "seconds": round(time.monotonic() - started, 1)}
