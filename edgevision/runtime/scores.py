"""From a model's output row to ranked predictions: the one place that decides about softmax.

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
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def probabilities(outputs: np.ndarray, kind: str = "logits") -> np.ndarray:
    """(N, classes) model outputs as (N, classes) float32 probabilities."""
    outputs = np.asarray(outputs, dtype=np.float32)
    return outputs if kind == "probabilities" else softmax(outputs)


def topk_from_probs(probs: np.ndarray, labels: list[str], k: int, kind: str = "logits") -> list[Prediction]:
    """The k best classes of one row of probabilities, best first."""
    k = max(1, min(k, probs.shape[-1]))
    idx = np.argpartition(-probs, k - 1)[:k]
    idx = idx[np.argsort(-probs[idx], kind="stable")]
    source = "model" if kind == "probabilities" else "softmax"
    return [Prediction(int(i), labels[int(i)], float(probs[i]), source) for i in idx]


def topk(outputs: np.ndarray, labels: list[str], k: int, kind: str = "logits") -> list[list[Prediction]]:
    return [topk_from_probs(row, labels, k, kind) for row in probabilities(outputs, kind)]
