"""The shared value types and small helpers: prediction post-processing, batching, output capture."""
from __future__ import annotations

import numpy as np
import pytest

from edgevision.runtime.prediction import Prediction, softmax, topk, topk_indices


def test_topk_indices_ranks_rows_and_single_rows_alike() -> None:
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((6, 1000)).astype(np.float32)
    batch = topk_indices(scores, 5)
    assert batch.shape == (6, 5)
    np.testing.assert_array_equal(batch, np.argsort(-scores, axis=1)[:, :5])  # no ties in random floats
    np.testing.assert_array_equal(topk_indices(scores[2], 5), batch[2])
    assert topk_indices(scores[:, :3], 5).shape == (6, 3)  # k clipped to the class count


def test_topk_applies_softmax_only_to_logits() -> None:
    logits = np.array([[2.0, 0.0, 1.0]], np.float32)
    (ranked,) = topk(logits, ["a", "b", "c"], 2)
    assert [p.label for p in ranked] == ["a", "c"] and ranked[0].scores == "softmax"
    assert ranked[0].score == pytest.approx(float(softmax(logits)[0, 0]))
    probs = np.array([[0.2, 0.5, 0.3]], np.float32)
    (own,) = topk(probs, ["a", "b", "c"], 1, "probabilities")
    assert own == [Prediction(1, "b", pytest.approx(0.5), "model")]
    assert softmax(np.zeros((2, 4), np.float64)).dtype == np.float64  # the gate's float64 stays float64
