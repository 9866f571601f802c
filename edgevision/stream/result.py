"""One classified frame, as the stream iterator yields it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..runtime.prediction import Prediction
from .overlay import draw_overlay


@dataclass
class StreamResult:
    frame_index: int  # position in the source, counting dropped frames: gaps show drops
    timestamp: float  # wall-clock time (time.time()) when the frame was read
    frame: np.ndarray  # the BGR frame as read, unmodified
    predictions: list[Prediction]  # top-k, after smoothing when enabled
    timings: dict[str, float]  # seconds per stage: capture, preprocess, infer, postprocess
    latency: float = 0.0  # seconds from the frame being read to this result
    fps: float = 0.0  # end-to-end FPS over the last 30 results, when this one was delivered
    media_time: float | None = None  # position in the video stream (file, URL, pipe), seconds
    name: str | None = None  # image file name, for folder and glob sources
    _annotated: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def top(self) -> Prediction:
        return self.predictions[0]

    def annotated(self) -> np.ndarray:
        """The frame with label, score and FPS drawn on it (drawn once, shared by every sink)."""
        if self._annotated is None:
            self._annotated = draw_overlay(self.frame, self.predictions, self.fps,
                                           self.timings.get("infer", 0.0) * 1e3)
        return self._annotated

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, without the pixels."""
        return {"frame_index": self.frame_index, "timestamp": round(self.timestamp, 6),
                "media_time": None if self.media_time is None else round(self.media_time, 4),
                "name": self.name,
                "predictions": [{"index": p.index, "label": p.label, "score": round(p.score, 6)}
                                for p in self.predictions],
                "timings_ms": {k: round(v * 1e3, 3) for k, v in self.timings.items()},
                "latency_ms": round(self.latency * 1e3, 3), "fps": round(self.fps, 2)}
