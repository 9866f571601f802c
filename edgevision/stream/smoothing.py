"""Temporal smoothing: a label that flickers between two classes frame to frame is hard to read."""
from __future__ import annotations

import numpy as np


class EmaSmoother:
    """Exponential moving average of class probabilities over about ``window`` frames.

    alpha = 2 / (window + 1), the usual span convention: a class must lead for a few frames before the
    top-1 label changes, while a real scene change still shows within ``window`` frames.
    """

    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError("smoothing window must be >= 1 frame")
        self.alpha = 2.0 / (window + 1)
        self._state: np.ndarray | None = None

    def update(self, probs: np.ndarray) -> np.ndarray:
        if self._state is None or self._state.shape != probs.shape:
            self._state = probs.astype(np.float64)
        else:
            self._state = self.alpha * probs + (1.0 - self.alpha) * self._state
        return self._state

    def reset(self) -> None:
        self._state = None
