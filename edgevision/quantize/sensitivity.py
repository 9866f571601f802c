"""Sensitivity pass: find the layers whose INT8 error hurts the output most and return them to float.

Works on the QDQ graph itself, without recalibrating: a layer goes back to float by feeding it the
float tensor in front of its input QuantizeLinear and its original float weights and bias. Each
candidate is scored leave-one-out (all of INT8 except that layer) by how much it lowers the mean KL
divergence between FP32 and INT8 class scores on the calibration samples; the validation images
the gate checks are never used, so the gate stays an independent check. Layers then return to
float, most harmful first, while each removes at least a set share of the all-INT8 error, up to a
budget of float layers (measured on EfficientNet-Lite0: docs/int8.md).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..batching import run_batched
from ..runtime.prediction import softmax

log = logging.getLogger(__name__)
COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass(frozen=True)
class SensitivityResult:
    """What the manifest records: the layers kept float, each with the KL it removed."""

    restored: list[dict[str, Any]]
    agreement_before: float
    agreement_after: float
    kl_before: float
    kl_after: float
    candidates: int
    samples: int
    seconds: float
    target: float
    reason: str = ""
    ranking: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"restored": self.restored, "agreement_before": round(self.agreement_before, 4),
                "agreement_after": round(self.agreement_after, 4), "kl_before": round(self.kl_before, 5),
                "kl_after": round(self.kl_after, 5), "candidates": self.candidates, "samples": self.samples,
                "seconds": round(self.seconds, 1), "min_gain": self.target, "stopped": self.reason,
                "ranking": self.ranking}


def _producers(graph: Any) -> dict[str, Any]:
    return {out: node for node in graph.node for out in node.output}


def quantized_layers(qdq: Any) -> list[str]:
    """Compute nodes of a QDQ model that take at least one dequantized input."""
    producers = _producers(qdq.graph)
    names = []
    for node in qdq.graph.node:
        if node.op_type in COMPUTE_OPS and any(
                producers.get(i) is not None and producers[i].op_type == "DequantizeLinear" for i in node.input):
            names.append(node.name)
    return names


def _prune(model: Any) -> None:
    """Drop nodes whose outputs nothing reads, then initializers nothing reads."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    while True:
        used = outputs | {i for n in graph.node for i in n.input}
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    used = {i for n in graph.node for i in n.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)


def with_float_layers(qdq: Any, float_model: Any, names: Sequence[str]) -> Any:
    """A copy of ``qdq`` in which the nodes ``names`` run in float (inputs, weights and bias)."""
    import onnx

    model = onnx.ModelProto()
    model.CopyFrom(qdq)
    graph = model.graph
    producers = _producers(graph)
    float_inits = {i.name: i for i in float_model.graph.initializer}
    float_nodes = {n.name: n for n in float_model.graph.node}
    have = {i.name for i in graph.initializer}
    wanted = set(names)
    for node in graph.node:
        if node.name not in wanted:
            continue
        original = float_nodes.get(node.name)
        for index, name in enumerate(node.input):
            dq = producers.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            source = producers.get(dq.input[0])
            if source is not None and source.op_type == "QuantizeLinear":
                node.input[index] = source.input[0]  # the float activation in front of the quantizer
            elif original is not None and index < len(original.input) and original.input[index] in float_inits:
                # Under a new name: the bias DequantizeLinear's output carries the original one.
                float_name = f"{original.input[index]}_float"
                if float_name not in have:
                    init = onnx.TensorProto()
                    init.CopyFrom(float_inits[original.input[index]])
                    init.name = float_name
                    graph.initializer.append(init)
                    have.add(float_name)
                node.input[index] = float_name
    _prune(model)
    return model


def _free_batch(model: Any) -> Any:
    """A copy whose first input and outputs take any batch size."""
    import onnx

    free = onnx.ModelProto()
    free.CopyFrom(model)
    for value in [free.graph.input[0], *free.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].Clear()
            dims[0].dim_param = "batch"
    return free


class _Scorer:
    """Runs a candidate ONNX model on the calibration samples and compares it with FP32."""

    def __init__(self, tensors: np.ndarray, input_name: str, reference: np.ndarray, batch: int,
                 decisive_margin: float) -> None:
        self.tensors, self.input_name, self.batch = tensors, input_name, batch
        self.reference = softmax(reference.astype(np.float64))
        ordered = np.sort(reference, axis=1)
        self.decisive = (ordered[:, -1] - ordered[:, -2]) >= decisive_margin
        self.ref_top1 = reference.argmax(1)

    def __call__(self, model: Any) -> tuple[float, float]:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 4
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        out = run_batched(lambda part: session.run(None, {self.input_name: part})[0], self.tensors,
                          self.batch).astype(np.float64)
        q = softmax(out)
        kl = float((self.reference * (np.log(self.reference + 1e-12) - np.log(q + 1e-12))).sum(1).mean())
        agree = out.argmax(1) == self.ref_top1
        decisive = agree[self.decisive] if self.decisive.any() else agree
        return kl, float(decisive.mean())


def restore_sensitive(qdq_path: Path, float_path: Path, tensors: np.ndarray, input_name: str,
                      reference: np.ndarray, out_path: Path, max_float: int, min_gain: float, budget_s: float = 180.0,
                      decisive_margin: float = 0.5, already_float: Sequence[str] = (),
                      step: Callable[[str], None] | None = None) -> SensitivityResult:
    """Return to float the layers of ``qdq_path`` whose leave-one-out KL gain is >= ``min_gain`` of the
    all-INT8 KL, most harmful first, at most ``max_float``; scoring stops after ``budget_s`` seconds."""
    import onnx

    started = time.monotonic()
    final, float_model = onnx.load(str(qdq_path)), onnx.load(str(float_path))
    # Scored in batches of 16 where the graph allows a free batch dimension (5-10x faster than one by one).
    qdq, score = _free_batch(final), _Scorer(tensors, input_name, reference, 16, decisive_margin)
    try:
        kl0, agree0 = score(qdq)
    except Exception:  # a graph that fixes its batch size inside (a Reshape to 1 x ...): one input at a time
        qdq, score = final, _Scorer(tensors, input_name, reference, 1, decisive_margin)
        kl0, agree0 = score(qdq)
    candidates = [n for n in quantized_layers(qdq) if n not in set(already_float)]
    if max_float <= 0 or not candidates:
        onnx.save(final, str(out_path))
        return SensitivityResult([], agree0, agree0, kl0, kl0, len(candidates), len(tensors),
                                 time.monotonic() - started, min_gain, "nothing to restore")
    if step:
        step(f"INT8 sensitivity pass: scoring {len(candidates)} layers on {len(tensors)} calibration samples")
    gains = []
    reason = ""
    for name in candidates:
        if time.monotonic() - started > budget_s:
            reason = f"scored {len(gains)} of {len(candidates)} layers within {budget_s:.0f} s; "
            break
        kl, _ = score(with_float_layers(qdq, float_model, [name]))
        gains.append((kl0 - kl, name))
    gains.sort(reverse=True)
    chosen = [(g, n) for g, n in gains if g >= min_gain * kl0][:max_float]
    restored = [{"layer": n, "why": f"sensitivity pass: as float it removes {g / kl0:.0%} of the INT8 error "
                 f"(KL {kl0:.4g} -> {kl0 - g:.4g} on calibration)"} for g, n in chosen]
    model, kl, agree = final, kl0, agree0
    if chosen:
        kl, agree = score(with_float_layers(qdq, float_model, [n for _, n in chosen]))
        model = with_float_layers(final, float_model, [n for _, n in chosen])  # the batch size as exported
    reason += (f"{len(chosen)} layers remove >= {min_gain:.0%} of the error each" if len(chosen) < max_float
               else f"budget of {max_float} float layers spent")
    onnx.save(model, str(out_path))
    ranking = [{"layer": n, "kl_gain": round(g, 5)} for g, n in gains[:8]]
    log.info("sensitivity pass: %d layers float, KL %.4f -> %.4f", len(chosen), kl0, kl)
    return SensitivityResult(restored, agree0, agree, kl0, kl, len(candidates), len(tensors),
                             time.monotonic() - started, min_gain, reason, ranking)
