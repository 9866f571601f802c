"""Preprocessing that travels with the model: recorded at compile time, replayed on the device.

Only numpy and OpenCV here: this module runs on devices without PyTorch.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from .errors import InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_INTERPOLATIONS = {"bilinear": 1, "nearest": 0, "bicubic": 2, "area": 3}  # cv2.INTER_* values


@dataclass(frozen=True)
class PreprocessConfig:
    input_size: tuple[int, int] = (224, 224)  # (height, width) the network sees
    resize_short: int | None = 256  # resize the short side to this, then crop; None: resize to input_size
    crop: str = "center"
    mean: tuple[float, float, float] = IMAGENET_MEAN  # in [0, 1] pixel units
    std: tuple[float, float, float] = IMAGENET_STD
    channel_order: str = "RGB"  # what the network expects
    layout: str = "NCHW"
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if self.channel_order not in ("RGB", "BGR"):
            raise InputError(f"channel_order must be RGB or BGR, not {self.channel_order!r}")
        if self.layout not in ("NCHW", "NHWC"):
            raise InputError(f"layout must be NCHW or NHWC, not {self.layout!r}")
        if self.interpolation not in _INTERPOLATIONS:
            raise InputError(f"interpolation {self.interpolation!r} unknown",
                             f"use one of {', '.join(_INTERPOLATIONS)}")
        if self.crop not in ("center", "none"):
            raise InputError(f"crop {self.crop!r} unknown", "use 'center' or 'none'")

    def tensor_shape(self, batch: int = 1) -> tuple[int, int, int, int]:
        h, w = self.input_size
        return (batch, 3, h, w) if self.layout == "NCHW" else (batch, h, w, 3)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PreprocessConfig":
        values = dict(data)
        for key in ("input_size", "mean", "std"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)


def check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray):
        raise InputError(f"expected a numpy image, got {type(image).__name__}",
                         "read it with cv2.imread or pass a numpy array")
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"expected an HxWx3 image, got shape {tuple(image.shape)}",
                         "convert grey or RGBA images with cv2.cvtColor first")
    if image.dtype != np.uint8:
        raise InputError(f"expected a uint8 image, got {image.dtype}",
                         "pass 8-bit pixels (0-255), e.g. image.astype(np.uint8)")
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise InputError(f"image of shape {tuple(image.shape)} is too small to classify")


MAX_RESIZED_PIXELS = 16_000_000  # 48 MB of uint8 pixels: the largest intermediate a short-side resize may make


def limit_aspect(image: np.ndarray, resize_short: int, input_size: tuple[int, int],
                 max_pixels: int = MAX_RESIZED_PIXELS) -> np.ndarray:
    """Bound the memory of a resize that scales the short side to ``resize_short``.

    That resize makes the long side ``resize_short x aspect``: a 2 x 100000 image would become
    256 x 12.8M pixels (10 GB). When the resized image would exceed ``max_pixels`` (aspect ratios
    beyond ~250:1 at 256), the long side is centre-cropped first (a view, no copy) to 4x the short side,
    or to twice what the centre crop keeps if that is more, so the crop that follows sees the same
    centre of the picture (up to a sub-pixel shift of the resampling grid). Ordinary images are
    untouched: their tensors stay bit-identical.
    """
    h, w = image.shape[:2]
    short, long = min(h, w), max(h, w)
    if resize_short * (long * resize_short / short) <= max_pixels:
        return image
    keep = max(1, int(short * max(4.0, 2.0 * max(input_size) / resize_short)))
    if long <= keep:
        return image
    start = (long - keep) // 2
    return image[start:start + keep] if h > w else image[:, start:start + keep]


def preprocess(image: np.ndarray, config: PreprocessConfig, channels: str = "BGR") -> np.ndarray:
    """HxWx3 uint8 image -> one float32 tensor of ``config.tensor_shape(1)[1:]``."""
    import cv2

    check_image(image)
    if config.resize_short is not None:
        image = limit_aspect(image, config.resize_short, config.input_size)  # memory bound, before any resize
    if channels not in ("BGR", "RGB"):
        raise InputError(f"channels must be 'BGR' or 'RGB', not {channels!r}")
    interp = _INTERPOLATIONS[config.interpolation]
    out_h, out_w = config.input_size
    if config.resize_short is not None:
        h, w = image.shape[:2]
        scale = config.resize_short / min(h, w)
        size = (max(out_w, round(w * scale)), max(out_h, round(h * scale)))
        image = cv2.resize(image, size, interpolation=interp)
        if config.crop == "center":
            top = (image.shape[0] - out_h) // 2
            left = (image.shape[1] - out_w) // 2
            image = image[top:top + out_h, left:left + out_w]
        else:
            image = cv2.resize(image, (out_w, out_h), interpolation=interp)
    else:
        image = cv2.resize(image, (out_w, out_h), interpolation=interp)
    if channels != config.channel_order:
        image = image[:, :, ::-1]
    mean = np.asarray(config.mean, np.float32) * 255.0
    inv_std = 1.0 / (np.asarray(config.std, np.float32) * 255.0)
    tensor = (image.astype(np.float32) - mean) * inv_std
    if config.layout == "NCHW":
        tensor = tensor.transpose(2, 0, 1)
    return np.ascontiguousarray(tensor, dtype=np.float32)


def preprocess_batch(images: Sequence[np.ndarray], config: PreprocessConfig,
                     channels: str = "BGR") -> np.ndarray:
    return np.stack([preprocess(img, config, channels) for img in images])
