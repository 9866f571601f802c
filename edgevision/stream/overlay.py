"""Draw what the model sees on the frame: top classes, scores, and honest FPS figures."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..runtime.prediction import Prediction

TEXT = (255, 255, 255)
SHADE = (0, 0, 0)


def draw_overlay(frame: np.ndarray, predictions: Sequence[Prediction], fps: float, infer_ms: float,
                 lines: int = 3) -> np.ndarray:
    """A copy of ``frame`` (BGR) with the top ``lines`` classes and a footer with FPS and inference time.

    FPS is end to end (what the viewer gets); the inference time is the network alone, so a gap between
    the two shows that capture or preprocessing, not the model, limits the rate.
    """
    import cv2

    out = frame.copy()
    height, width = out.shape[:2]
    scale = max(0.4, min(1.2, width / 1000))
    thickness = 1 if scale < 0.8 else 2
    line_h = int(30 * scale) + 4
    texts = [f"{p.label.split(',')[0][:32]}  {p.score:.0%}" for p in list(predictions)[:lines]]
    texts.append(f"{fps:.1f} FPS  |  infer {infer_ms:.1f} ms" if fps > 0 else f"-- FPS  |  infer {infer_ms:.1f} ms")
    box_w = max(cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)[0][0] for t in texts) + 12
    box_h = line_h * len(texts) + 6
    region = out[:min(box_h, height), :min(box_w, width)]
    # Darken instead of painting black: the scene stays visible behind the text.
    region[:] = (region * 0.4).astype(np.uint8)
    for i, text in enumerate(texts):
        y = line_h * (i + 1) - 4
        colour = (80, 255, 80) if i == 0 else TEXT
        cv2.putText(out, text, (6, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness, cv2.LINE_AA)
    return out
