"""Preprocessing that travels with the model: recorded at compile time, replayed on the device.

Only numpy and OpenCV here: this module runs on devices without PyTorch.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from .errors import InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# cv2.INTER_* values. Bilinear is INTER_LINEAR_EXACT (5), OpenCV's bit-exact fixed-point bilinear: plain
# INTER_LINEAR's SIMD paths round differently on aarch64 and x86 (one level on 21% of a photo's pixels,
# logits up to 0.19 apart, a near-tie top-1 flipped), the exact one gives the same pixels on both.
_INTERPOLATIONS = {"bilinear": 5, "nearest": 0, "bicubic": 2, "area": 3, "lanczos": 4}
# How the image becomes input_size: "crop" scales the short side to resize_short (default
# input/crop_pct) and cuts the centre; "direct" stretches the whole image; "letterbox" keeps the
# aspect ratio and pads the rest with pad_value.
RESIZE_MODES = ("crop", "direct", "letterbox")
INPUT_DTYPES = ("float32", "uint8")
DEFAULT_CROP_PCT = 0.875
# "crop" mode resizes the whole image first only while that stays within this many output images.
_MAX_INTERMEDIATE = 4


@dataclass(frozen=True)
class PreprocessConfig:
    input_size: tuple[int, int] = (224, 224)  # (height, width) the network sees
    resize_short: int | None = 256  # "crop" mode: short side before the crop; None: round(min(input_size) / crop_pct)
    crop: str = "center"  # "none" with resize="crop": the pre-0.2 squeeze; read from old manifests only
    mean: tuple[float, float, float] = IMAGENET_MEAN  # in [0, 1] pixel units
    std: tuple[float, float, float] = IMAGENET_STD
    channel_order: str = "RGB"  # what the network expects
    layout: str = "NCHW"
    interpolation: str = "bilinear"
    resize: str = "crop"
    crop_pct: float = DEFAULT_CROP_PCT
    pad_value: int = 0  # letterbox border, in 0-255 pixel units
    input_dtype: str = "float32"  # "uint8": the network takes raw pixels, mean/std unused

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
        if self.resize not in RESIZE_MODES:
            raise InputError(f"resize mode {self.resize!r} unknown", f"use one of {', '.join(RESIZE_MODES)}")
        if self.input_dtype not in INPUT_DTYPES:
            raise InputError(f"input dtype {self.input_dtype!r} unsupported", f"use one of {', '.join(INPUT_DTYPES)}")
        if not (isinstance(self.crop_pct, (int, float)) and 0.05 <= self.crop_pct <= 1.0):
            raise InputError(f"crop_pct {self.crop_pct!r} must be between 0.05 and 1", "pass e.g. 0.875")
        size = self.input_size
        if (len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in size)
                or min(size) < 2 or max(size) > 8192):
            raise InputError(f"input size {size!r} must be two whole numbers between 2 and 8192",
                             "pass e.g. input_size = [224, 224]")
        if self.resize_short is not None and not (isinstance(self.resize_short, int) and 2 <= self.resize_short <= 16384):
            raise InputError(f"resize_short {self.resize_short!r} must be a whole number of pixels",
                             "pass e.g. 256, or leave it out to use crop_pct")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if len(values) != 3 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
                raise InputError(f"{name} {values!r} must be three finite numbers", f"pass e.g. {name} = [0.5, 0.5, 0.5]")
        if any(v == 0 for v in self.std):
            raise InputError(f"std {self.std!r} contains 0", "pass the per-channel standard deviation, e.g. 0.5")

    @property
    def short_side(self) -> int:
        """The short side "crop" mode scales to before taking input_size from the centre."""
        return self.resize_short if self.resize_short is not None else round(min(self.input_size) / self.crop_pct)

    def with_size(self, size: tuple[int, int]) -> "PreprocessConfig":
        """The same recipe at another input size (the short side follows through crop_pct)."""
        from dataclasses import replace

        return replace(self, input_size=tuple(size), resize_short=None)

    def describe(self) -> str:
        h, w = self.input_size
        if self.resize == "crop" and self.crop == "center":
            how = f"short side {self.short_side}, centre crop {h}x{w}"
        elif self.resize == "letterbox":
            how = f"letterbox {h}x{w} (pad {self.pad_value})"
        else:
            how = f"resize to {h}x{w}"
        norm = ("raw uint8 pixels" if self.input_dtype == "uint8" else
                f"mean {[round(v, 4) for v in self.mean]}, std {[round(v, 4) for v in self.std]}")
        return f"{how} ({self.interpolation}), {norm}, {self.channel_order} {self.layout}"

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
        if "resize" not in values:  # manifests written before resize modes: no short side meant a direct resize
            values["resize"] = "direct" if values.get("resize_short", 256) is None else "crop"
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
    """HxWx3 uint8 image -> one tensor of ``config.tensor_shape(1)[1:]`` in ``config.input_dtype``."""

    check_image(image)
    if config.resize == "crop" and config.crop == "center":
        image = limit_aspect(image, config.short_side, config.input_size)  # memory bound, before any resize
    if channels not in ("BGR", "RGB"):
        raise InputError(f"channels must be 'BGR' or 'RGB', not {channels!r}")
    image = _resized(image, config)
    if channels != config.channel_order:
        image = image[:, :, ::-1]
    if config.input_dtype == "uint8":
        tensor = image
    else:
        mean = np.asarray(config.mean, np.float32) * 255.0
        inv_std = 1.0 / (np.asarray(config.std, np.float32) * 255.0)
        tensor = (image.astype(np.float32) - mean) * inv_std
    if config.layout == "NCHW":
        tensor = tensor.transpose(2, 0, 1)
    return np.ascontiguousarray(tensor, dtype=np.dtype(config.input_dtype))


def _resized(image: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """The HxWx3 image at input_size; never an intermediate larger than the source or the output."""
    import cv2

    interp = _INTERPOLATIONS[config.interpolation]
    out_h, out_w = config.input_size
    h, w = image.shape[:2]
    if config.resize == "letterbox":
        scale = min(out_h / h, out_w / w)
        new_w, new_h = max(1, min(out_w, round(w * scale))), max(1, min(out_h, round(h * scale)))
        inner = cv2.resize(image, (new_w, new_h), interpolation=interp)
        canvas = np.full((out_h, out_w, 3), config.pad_value, dtype=np.uint8)
        top, left = (out_h - new_h) // 2, (out_w - new_w) // 2
        canvas[top:top + new_h, left:left + new_w] = inner
        return canvas
    if config.resize == "crop" and config.crop == "center":
        scale = config.short_side / min(h, w)
        resized_w, resized_h = max(out_w, round(w * scale)), max(out_h, round(h * scale))
        if resized_w * resized_h <= _MAX_INTERMEDIATE * out_w * out_h:
            # Ordinary photos: resize the short side, then cut the centre (torchvision's order, exactly).
            image = cv2.resize(image, (resized_w, resized_h), interpolation=interp)
            top, left = (resized_h - out_h) // 2, (resized_w - out_w) // 2
            return image[top:top + out_h, left:left + out_w]
        # Extreme aspect ratios: cut the same view in source coordinates first, so a 2 x 100000 strip
        # never becomes a 256 x 12.8 M intermediate (sub-pixel alignment differs; memory stays bounded).
        crop_w, crop_h = min(w, max(1, round(out_w / scale))), min(h, max(1, round(out_h / scale)))
        top, left = (h - crop_h) // 2, (w - crop_w) // 2
        image = image[top:top + crop_h, left:left + crop_w]
    return cv2.resize(image, (out_w, out_h), interpolation=interp)


def preprocess_batch(images: Sequence[np.ndarray], config: PreprocessConfig,
                     channels: str = "BGR") -> np.ndarray:
    return np.stack([preprocess(img, config, channels) for img in images])
