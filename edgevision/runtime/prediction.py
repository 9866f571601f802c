"""Prediction values and the post-processing every consumer shares: softmax, top-k, ranked predictions.

The one home for them: the runtime (``Model.predict``), the stream (``StreamResult.predictions``), the
accuracy gate and the INT8 sensitivity pass all import from here. numpy only, so the stream and the
compiler depend on this leaf module and never on ``runtime.model``.

It is also the one place that decides about softmax.

A classifier ends either in logits (softmax turns them into probabilities here) or already in
probabilities (a final Softmax/Sigmoid, found in the graph at compile time or stated in the model
card); those are used as they are, since a second softmax flattens them (1.00 became 0.73).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SCORE_KINDS = ("logits", "probabilities")


@dataclass(frozen=True)
class Prediction:
    index: int
    label: str
    score: float
    # "softmax": edgevision's softmax over the model's logits; "model": the model's own probabilities.
    scores: str = "softmax"


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, in the input's float dtype (float64 stays float64)."""
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def topk_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest scores along the last axis, best first (k clipped to the class count).

    A partial sort (argpartition) then a stable sort of the k: cheap for 1000 classes per frame.
    Works on one row (classes,) or a batch (N, classes).
    """
    scores = np.asarray(scores)
    k = max(1, min(int(k), scores.shape[-1]))
    idx = np.argpartition(-scores, k - 1, axis=-1)[..., :k]
    order = np.argsort(-np.take_along_axis(scores, idx, axis=-1), axis=-1, kind="stable")
    return np.take_along_axis(idx, order, axis=-1)


def probabilities(outputs: np.ndarray, kind: str = "logits") -> np.ndarray:
    """(N, classes) model outputs as (N, classes) float32 probabilities."""
    outputs = np.asarray(outputs, dtype=np.float32)
    return outputs if kind == "probabilities" else softmax(outputs)


def topk_from_probs(probs: np.ndarray, labels: list[str], k: int, kind: str = "logits") -> list[Prediction]:
    """The k best classes of one row of probabilities, best first."""
    idx = topk_indices(probs, k)
    source = "model" if kind == "probabilities" else "softmax"
    return [Prediction(int(i), labels[int(i)], float(probs[i]), source) for i in idx]


def topk(outputs: np.ndarray, labels: list[str], k: int, kind: str = "logits") -> list[list[Prediction]]:
    return [topk_from_probs(row, labels, k, kind) for row in probabilities(outputs, kind)]
