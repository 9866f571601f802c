"""Where results go besides the iterator: a video file, a JSON-lines log, a window, a callback.

A sink is any object with ``write(result)`` and ``close()``; ``abort()`` (optional) is called instead of
``close()`` when the stream failed, so nothing half-written is left behind. File sinks write to a
temporary name and move it into place on close.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import IO, Any, Callable, Protocol

from ..errors import EdgevisionError, InputError
from ..files import finish_temp, temp_path_beside
from .result import StreamResult

log = logging.getLogger(__name__)

CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "FFV1", ".webm": "VP80"}


class StopStream(Exception):
    """Raised by a sink (e.g. the window when the user presses q) to end the stream cleanly."""


class Sink(Protocol):
    def write(self, result: StreamResult) -> None: ...

    def close(self) -> None: ...


class CallbackSink:
    def __init__(self, callback: Callable[[StreamResult], Any]) -> None:
        self.callback = callback

    def write(self, result: StreamResult) -> None:
        self.callback(result)

    def close(self) -> None:
        pass


class VideoSink:
    """Frames with the overlay (or raw with ``overlay=False``) into a video file OpenCV can write."""

    def __init__(self, path: str | os.PathLike[str], fps: float | None = None, overlay: bool = True,
                 codec: str | None = None) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if codec is None and suffix not in CODECS:
            raise InputError(f"cannot choose a video codec for {self.path.name}",
                             f"use one of {', '.join(CODECS)} as the file suffix")
        self.codec = codec or CODECS[suffix]
        self.fps = fps
        self.overlay = overlay
        self._writer: Any = None
        self._temp: Path | None = None
        self.frames = 0

    def write(self, result: StreamResult) -> None:
        import cv2

        image = result.annotated() if self.overlay else result.frame
        if self._writer is None:
            height, width = image.shape[:2]
            self._size = (width, height)
            self._temp = temp_path_beside(self.path)
            self._writer = cv2.VideoWriter(str(self._temp), cv2.VideoWriter_fourcc(*self.codec),
                                           float(self.fps or 25.0), (width, height))
            if not self._writer.isOpened():
                self.abort()
                raise InputError(f"OpenCV cannot write {self.codec} video to {self.path}",
                                 "use .mp4 (mp4v), .avi (MJPG) or .mkv (FFV1)")
        if image.shape[1::-1] != self._size:  # image folders may mix sizes; a video cannot
            image = cv2.resize(image, self._size)
        self._writer.write(image)
        self.frames += 1

    def close(self) -> None:
        if self._writer is None:
            return
        self._writer.release()
        self._writer = None
        if self.frames and self._temp is not None:
            finish_temp(self._temp, self.path)
            log.info("wrote %d frames to %s", self.frames, self.path)
        elif self._temp is not None:
            self._temp.unlink(missing_ok=True)
        self._temp = None

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self._temp is not None:
            self._temp.unlink(missing_ok=True)
            self._temp = None


class JsonLinesSink:
    """One JSON object per result (see StreamResult.to_dict)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._temp: Path | None = None  # created at the first write: a sink never used leaves nothing
        self._file: IO[str] | None = None
        self._done = False

    def write(self, result: StreamResult) -> None:
        assert not self._done, "sink already closed"
        if self._file is None:
            self._temp = temp_path_beside(self.path)
            self._file = self._temp.open("x", encoding="utf-8")
        self._file.write(json.dumps(result.to_dict()) + "\n")

    def close(self) -> None:
        if self._done:
            return
        self._done = True
        if self._file is None:  # no results: an empty log, still written atomically
            self._temp = temp_path_beside(self.path)
            self._temp.touch(exist_ok=False)
        else:
            self._file.close()
            self._file = None
        finish_temp(self._temp, self.path)

    def abort(self) -> None:
        self._done = True
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._temp is not None:
            self._temp.unlink(missing_ok=True)


class DisplaySink:
    """An OpenCV window; q or Esc ends the stream. Needs an OpenCV build with GUI support."""

    def __init__(self, title: str = "edgevision") -> None:
        import cv2

        self.title = title
        if os.name == "posix" and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise EdgevisionError("--show needs a display, and DISPLAY is not set",
                                  "run on the device's desktop, or use --save out.mp4")
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL)
        except cv2.error as err:
            raise EdgevisionError("this OpenCV build has no GUI support (opencv-python-headless)",
                                  "pip install opencv-python instead, or use --save out.mp4") from err

    def write(self, result: StreamResult) -> None:
        import cv2

        cv2.imshow(self.title, result.annotated())
        if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
            raise StopStream

    def close(self) -> None:
        import cv2

        cv2.destroyWindow(self.title)
