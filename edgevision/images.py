"""The one way edgevision reads an image file: bounded in bytes, pixels and time, and strict about damage.

* only regular files: a named pipe or device would block ``open()`` without end;
* at most ``MAX_IMAGE_BYTES`` read; the width and height come from the header (PNG, JPEG, BMP, WebP,
  GIF) and are checked against ``MAX_IMAGE_PIXELS`` *before* anything is decoded;
* damage is refused, not classified: a JPEG without its end marker, a PNG without IEND, and any
  decoder complaint (libjpeg's "Corrupt JPEG data", libpng's errors), which would otherwise be printed
  on stderr while the image decodes half grey.

Only numpy and OpenCV: this runs on devices.
"""
from __future__ import annotations

import contextlib
import os
import struct
import tempfile
import threading
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import InputError
from .files import kind_of_special_file

MAX_IMAGE_PIXELS = 100_000_000  # 100 MP: 300 MB decoded, the most a 4 GB device can spare beside a model
MAX_IMAGE_BYTES = 256 * 1024 * 1024
FORMATS = "JPEG, PNG, BMP or WebP"
# libjpeg warnings that mean the picture is damaged; "N extraneous bytes before marker" (common in
# camera files that decode fine) is not among them.
_DAMAGE = ("premature end", "corrupt jpeg data: bad", "found marker", "invalid", "libpng error", "crc error",
           "not a jpeg", "bogus", "huffman", "incomplete", "truncated")
_stderr_lock = threading.Lock()


def image_size(data: bytes) -> tuple[str, int, int] | None:
    """(format, width, height) from the header alone; None when the format is not recognised."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return "png", width, height
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    if data[:2] == b"BM" and len(data) >= 26:
        header = struct.unpack("<I", data[14:18])[0]
        if header == 12:  # OS/2 BITMAPCOREHEADER
            width, height = struct.unpack("<HH", data[18:22])
        else:
            width, height = struct.unpack("<ii", data[18:26])
        return "bmp", abs(width), abs(height)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        chunk = data[12:16]
        if chunk == b"VP8 ":
            width, height = struct.unpack("<HH", data[26:30])
            return "webp", width & 0x3FFF, height & 0x3FFF
        if chunk == b"VP8L":
            bits = int.from_bytes(data[21:25], "little")
            return "webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        if chunk == b"VP8X":
            return "webp", int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
        return None
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return "gif", width, height
    return None


def _jpeg_size(data: bytes) -> tuple[str, int, int] | None:
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = struct.unpack(">H", data[i + 2:i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOFn
            if i + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return "jpeg", width, height
        if marker == 0xDA or length < 2:  # scan data before any frame header
            return None
        i += 2 + length
    return None


@contextlib.contextmanager
def _decoder_messages() -> Iterator[list[str]]:
    """Collect what C decoders print on fd 2 (libjpeg, libpng) instead of letting it reach the terminal.

    fd 2 is process-wide: a lock keeps two decodes from swapping it at once, and text that other
    threads write meanwhile is passed on to the real stderr afterwards.
    """
    found: list[str] = []
    with _stderr_lock, tempfile.TemporaryFile() as sink:
        saved = os.dup(2)
        try:
            os.dup2(sink.fileno(), 2)
            yield found
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read(1 << 16).decode("utf-8", "replace")
            others = []
            for line in text.splitlines():
                lowered = line.lower()
                (found if any(k in lowered for k in ("jpeg", "png", "libpng", "huffman", "marker")) else others
                 ).append(line.strip())
            if others:
                os.write(2, ("\n".join(others) + "\n").encode())


def read_image_file(path: str | os.PathLike[str], max_pixels: int = MAX_IMAGE_PIXELS,
                    max_bytes: int = MAX_IMAGE_BYTES) -> np.ndarray:
    """BGR uint8 HxWx3 image, as ``cv2.imread`` gives it, or a one-line InputError saying why not."""
    import cv2

    path = Path(path)
    special = kind_of_special_file(path)
    if special:
        raise InputError(f"image {path} is {special}, not a file", "save the image to a file and pass its path")
    try:
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except FileNotFoundError:
        raise InputError(f"image {path} not found", "check the path") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a folder, not an image", "pass the image files, or the folder where a "
                         "command takes folders") from None
    except PermissionError:
        raise InputError(f"cannot read image {path}: permission denied", "check the file's permissions") from None
    if len(data) > max_bytes:
        raise InputError(f"image {path} is larger than {max_bytes >> 20} MB", "resize or recompress it first")
    if not data:
        raise InputError(f"image {path} is empty", "check that it was written completely")
    header = image_size(data)
    if header is None:
        raise InputError(f"cannot decode image {path}: not a {FORMATS} file", "convert it to JPEG or PNG")
    fmt, width, height = header
    if width < 1 or height < 1:
        raise InputError(f"image {path} is corrupt: its header says {width}x{height} pixels",
                         "re-save or re-copy it")
    if width * height > max_pixels:
        raise InputError(f"image {path} is {width}x{height} = {width * height / 1e6:.0f} megapixels, more than "
                         f"the {max_pixels / 1e6:.0f} MP limit", "scale it down first (classifiers see ~224 px)")
    if fmt == "jpeg" and not _ends_with_eoi(data):
        raise InputError(f"image {path} is truncated: the JPEG has no end marker", "copy or download it again")
    if fmt == "png" and b"IEND" not in data[-64:]:
        raise InputError(f"image {path} is truncated: the PNG has no IEND chunk", "copy or download it again")
    with _decoder_messages() as messages:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    damage = [m for m in messages if any(k in m.lower() for k in _DAMAGE)]
    if image is None or damage:
        why = damage[0] if damage else (messages[0] if messages else f"OpenCV cannot decode this {fmt.upper()}")
        raise InputError(f"image {path} is corrupt ({why.rstrip('.')})", "copy or download it again")
    return image


def _ends_with_eoi(data: bytes) -> bool:
    # Some writers pad after the end marker; allow a little trailing slack.
    return b"\xff\xd9" in data[-1024:]
