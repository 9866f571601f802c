"""Running a function over a large batch in slices: the one batching helper (numpy only).

The runtime runs a static-batch artifact one fixed batch at a time, the accuracy gate and the INT8
sensitivity pass feed their validation tensors in batches; all of them slice here.
"""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np


def batch_slices(total: int, size: int) -> Iterator[slice]:
    """Consecutive slices of at most ``size`` rows covering ``range(total)``; the last may be shorter."""
    if size < 1:
        raise ValueError(f"batch size must be at least 1, not {size}")
    for start in range(0, total, size):
        yield slice(start, min(start + size, total))


def run_batched(fn: Callable[[np.ndarray], np.ndarray], inputs: np.ndarray, size: int,
                dtype: np.dtype | type | None = None) -> np.ndarray:
    """``fn`` over consecutive slices of ``inputs`` (at most ``size`` rows each), outputs concatenated.

    ``dtype``: convert each output as it comes (e.g. float32), so float16 outputs are not concatenated twice.
    """
    outputs = [fn(inputs[part]) for part in batch_slices(len(inputs), size)]
    if dtype is not None:
        outputs = [np.asarray(out, dtype) for out in outputs]
    return np.concatenate(outputs)
