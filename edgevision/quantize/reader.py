"""Calibration data: a folder of images or a video, preprocessed exactly as the artifact will be.

The reader handed to the quantizers is as small as ONNX Runtime's CalibrationDataReader:
``get_next()`` yields one feed dict at a time until it returns None.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import InputError
from ..preprocess import PreprocessConfig, preprocess
from ..samples import IMAGE_SUFFIXES

log = logging.getLogger(__name__)
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg")
# The images shipped in the repository: real photos and film frames, none in the validation set.
BUNDLED_DIR = Path(__file__).resolve().parent.parent / "data" / "calibration" / "images"


@dataclass(frozen=True)
class CalibrationSpec:
    """Where calibration data comes from and how much of it to use."""

    source: Path
    size: int = 64  # at most this many samples
    seed: int = 0  # picks which samples when the source holds more than ``size``
    every: int | None = None  # video: keep every N-th frame; None spreads ``size`` frames evenly

    def __post_init__(self) -> None:
        if self.size < 1:
            raise InputError(f"--calib-size must be at least 1, not {self.size}", "pass e.g. --calib-size 64")
        if self.every is not None and self.every < 1:
            raise InputError(f"--calib-every must be at least 1, not {self.every}", "pass e.g. --calib-every 10")


class TensorReader:
    """Preprocessed calibration tensors, fed one sample at a time (ONNX Runtime's reader protocol)."""

    def __init__(self, tensors: np.ndarray, input_name: str, names: list[str]) -> None:
        self.tensors = tensors
        self.input_name = input_name
        self.names = names  # where each sample came from, for the manifest and for debugging
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self.tensors):
            return None
        sample = self.tensors[self._next:self._next + 1]
        self._next += 1
        return {self.input_name: sample}

    def rewind(self) -> None:
        self._next = 0

    def __len__(self) -> int:
        return len(self.tensors)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for i in range(len(self.tensors)):
            yield {self.input_name: self.tensors[i:i + 1]}


def _pick(count: int, size: int, seed: int) -> list[int]:
    """Deterministic subset: the same source, size and seed always give the same samples."""
    if count <= size:
        return list(range(count))
    return sorted(np.random.default_rng(seed).choice(count, size=size, replace=False).tolist())


def _image_files(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    except OSError as err:
        raise InputError(f"cannot read calibration folder {folder} ({err.strerror or err})",
                         "check the path and its permissions") from err


def _read_images(paths: list[Path]) -> list[tuple[str, np.ndarray]]:
    from ..errors import InputError
    from ..images import read_image_file

    images = []
    for path in paths:
        try:
            images.append((str(path), read_image_file(path)))
        except InputError as err:  # the bounded reader: pixel limit, damage, pipes
            log.warning("skipping calibration image %s: %s", path, err.problem)
    return images


def _read_video(path: Path, spec: CalibrationSpec) -> list[tuple[str, np.ndarray]]:
    import cv2

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise InputError(f"cannot open calibration video {path}", "pass a video OpenCV can read (mp4, avi, mkv)")
    try:
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        every = spec.every or (max(1, total // spec.size) if total > 0 else 1)
        frames, index = [], 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            if index % every == 0:
                frames.append((f"{path}#frame{index}", frame))
            index += 1
    finally:
        capture.release()
    return [frames[i] for i in _pick(len(frames), spec.size, spec.seed)]


def check_source(source: Path) -> None:
    """Cheap up-front check (no decoding), so a wrong --calib fails before minutes of export work."""
    source = Path(source)
    if source.is_dir():
        if not _image_files(source):
            raise InputError(f"calibration folder {source} holds no images (.jpg/.png, searched recursively)",
                             "pass a folder of representative photos, or a video file")
    elif not source.exists():
        raise InputError(f"calibration source {source} does not exist", "pass a folder of images or a video file")
    elif source.suffix.lower() not in VIDEO_SUFFIXES + IMAGE_SUFFIXES:
        raise InputError(f"calibration source {source} is neither a folder, an image nor a video",
                         f"pass a folder of images or a video ({', '.join(VIDEO_SUFFIXES[:3])})")


def calibration_images(spec: CalibrationSpec) -> list[tuple[str, np.ndarray]]:
    """(name, BGR uint8 image) pairs: the sampled calibration set, decoded."""
    source = Path(spec.source)
    check_source(source)
    if source.is_dir():
        paths = _image_files(source)
        images = _read_images([paths[i] for i in _pick(len(paths), spec.size, spec.seed)])
    elif source.suffix.lower() in VIDEO_SUFFIXES:
        images = _read_video(source, spec)
    else:
        images = _read_images([source])
    if not images:
        raise InputError(f"no readable calibration images in {source}",
                         "check that the files are valid jpg/png images or that the video decodes")
    return images


def calibration_reader(spec: CalibrationSpec, config: PreprocessConfig, input_name: str) -> TensorReader:
    """The sampled calibration set, preprocessed with the artifact's own PreprocessConfig."""
    images = calibration_images(spec)
    tensors = np.stack([preprocess(image, config, channels="BGR") for _, image in images])
    return TensorReader(tensors, input_name, [name for name, _ in images])
