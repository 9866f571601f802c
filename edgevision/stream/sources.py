"""Where frames come from: cameras, video files, image folders/globs, URLs and named pipes, through OpenCV.

Every source answers ``read()`` with the next frame or ``None`` at its end (or on a disconnect), and
``reopen()`` for the reconnect loop. Opening never blocks without a bound: URLs get OpenCV's FFmpeg
timeouts, and a FIFO without a writer is given up after ``open_timeout_s`` (see ``_open_fifo``).
"""
from __future__ import annotations

import glob
import logging
import os
import stat
import sys
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..enums import StrEnum
from ..errors import InputError
from ..samples import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

URL_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")
SOURCE_HELP = ("pass a camera index (0), /dev/videoN, a video file, an image folder or glob, "
               "an rtsp:// or http:// URL, or a named pipe (FIFO)")


@dataclass(frozen=True)
class CameraOptions:
    """Requested camera settings; drivers may pick the nearest mode they support."""

    width: int | None = None
    height: int | None = None
    fps: float | None = None
    buffer_size: int | None = 1  # frames OpenCV queues in the driver; 1 keeps them fresh
    fourcc: str | None = None  # e.g. "MJPG": many USB cameras only reach full fps compressed


@dataclass(frozen=True)
class ReconnectPolicy:
    """What a live source does when it stops delivering: retry with exponential backoff, then stop."""

    attempts: int = 3  # 0: stop at the first disconnect
    delay_s: float = 0.5
    backoff: float = 2.0
    max_delay_s: float = 5.0

    def delays(self) -> Iterator[float]:
        delay = self.delay_s
        for _ in range(self.attempts):
            yield min(delay, self.max_delay_s)
            delay *= self.backoff


class SourceKind(StrEnum):
    CAMERA = "camera"  # an index or /dev/videoN
    FILE = "file"  # a video file
    IMAGES = "images"  # an image, a folder of images or a glob
    URL = "url"  # rtsp://, http://, ...
    FIFO = "fifo"  # a named pipe another program writes video into


# Sources that produce frames whether or not we keep up: by default they drop stale frames.
LIVE_KINDS = frozenset({SourceKind.CAMERA, SourceKind.URL, SourceKind.FIFO})


@dataclass(frozen=True)
class SourceSpec:
    kind: SourceKind
    target: Any  # what OpenCV opens: int index, path string, URL, or a list of image paths
    name: str  # for messages and logs

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", SourceKind(self.kind))  # "camera" given as a string is accepted

    @property
    def live(self) -> bool:
        """The default policy: a camera, URL or pipe produces frames whether or not we keep up."""
        return self.kind in LIVE_KINDS


@dataclass
class Frame:
    image: np.ndarray
    media_time: float | None = None  # position in the video stream (PTS), seconds; None for cameras
    name: str | None = None  # the image file, for folder sources


def describe_source(source: str | int | os.PathLike[str]) -> SourceSpec:
    """Classify what the user passed; raise a one-line InputError when it names nothing that exists."""
    if isinstance(source, int) or (isinstance(source, str) and source.strip().isdigit()):
        index = int(source)
        if sys.platform.startswith("linux") and not os.path.exists(f"/dev/video{index}"):
            raise InputError(f"camera {index} not found (/dev/video{index} does not exist)",
                             "plug in a camera or check `ls /dev/video*`; " + SOURCE_HELP)
        return SourceSpec(SourceKind.CAMERA, index, f"camera {index}")
    text = os.fspath(source)
    if text.lower().startswith(URL_SCHEMES):
        return SourceSpec(SourceKind.URL, text, _redact(text))
    path = Path(text).expanduser()
    if text.startswith("/dev/video"):
        if not path.exists():
            raise InputError(f"camera {text} not found", "plug in a camera or check `ls /dev/video*`")
        return SourceSpec(SourceKind.CAMERA, str(path), text)
    if path.exists():
        mode = path.stat().st_mode
        if stat.S_ISFIFO(mode):
            return SourceSpec(SourceKind.FIFO, str(path), f"pipe {path}")
        if path.is_dir():
            images = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if not images:
                raise InputError(f"no images (.jpg/.png) in folder {path}", SOURCE_HELP)
            return SourceSpec(SourceKind.IMAGES, images, f"{len(images)} images in {path}")
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return SourceSpec(SourceKind.IMAGES, [path], str(path))
        return SourceSpec(SourceKind.FILE, str(path), str(path))
    if glob.has_magic(text):
        matches = sorted(Path(p) for p in glob.glob(os.path.expanduser(text), recursive=True))
        images = [p for p in matches if p.suffix.lower() in IMAGE_SUFFIXES]
        if not images:
            raise InputError(f"no images match {text}", SOURCE_HELP)
        return SourceSpec(SourceKind.IMAGES, images, f"{len(images)} images matching {text}")
    raise InputError(f"source {text} not found", SOURCE_HELP)


def _redact(url: str) -> str:
    """rtsp://user:secret@host/... -> rtsp://user:***@host/... so passwords stay out of logs."""
    scheme, _, rest = url.partition("://")
    creds, at, host = rest.partition("@")
    if at and ":" in creds and "/" not in creds:
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return url


class FrameSource(ABC):
    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec

    @property
    def fps(self) -> float | None:
        """The source's nominal frame rate when it reports one."""
        return None

    @abstractmethod
    def read(self) -> Frame | None:
        """The next frame, or None at the end of the source or when it disconnected."""

    def reopen(self) -> bool:
        """Try once to open the source again after a disconnect; True when it delivers again."""
        return False

    @abstractmethod
    def close(self) -> None: ...


class ImageSource(FrameSource):
    """Image files one after another; unreadable files are skipped with a warning, as a folder may hold junk."""

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        self._paths = list(spec.target)
        self._next = 0

    def read(self) -> Frame | None:
        from ..images import read_image_file

        while self._next < len(self._paths):
            path = self._paths[self._next]
            self._next += 1
            try:
                return Frame(read_image_file(path), None, path.name)
            except InputError as err:
                log.warning("skipping %s: %s", path, err.problem)
        return None

    def close(self) -> None:
        self._next = len(self._paths)


class VideoCaptureSource(FrameSource):
    """cv2.VideoCapture for cameras, files, URLs and FIFOs."""

    def __init__(self, spec: SourceSpec, camera: CameraOptions | None = None, open_timeout_s: float = 5.0,
                 read_timeout_s: float = 10.0) -> None:
        super().__init__(spec)
        self.camera = camera or CameraOptions()
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        self._cap: Any = None
        # Stream position (PTS) for files, URLs and pipes; a camera's clock is not comparable.
        self._media_time = spec.kind != SourceKind.CAMERA
        if not self._open():
            raise InputError(f"cannot open {spec.name}", self._open_hint())

    @property
    def fps(self) -> float | None:
        import cv2

        value = float(self._cap.get(cv2.CAP_PROP_FPS)) if self._cap is not None else 0.0
        return value if 0 < value < 1000 else None

    def _open_hint(self) -> str:
        return {SourceKind.CAMERA: "check that no other program uses it and that you may read it (group video)",
                SourceKind.FILE: "check that it is a video OpenCV's FFmpeg can decode",
                SourceKind.URL: "check the address, credentials and network; the stream did not answer in "
                       f"{self.open_timeout_s:g} s",
                SourceKind.FIFO: f"start the program that writes video into it; none arrived within {self.open_timeout_s:g} s "
                        "(--open-timeout)",
                }.get(self.spec.kind, SOURCE_HELP)

    def _open(self) -> bool:
        import cv2

        kind, target = self.spec.kind, self.spec.target
        timeouts = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.open_timeout_s * 1000),
                    cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.read_timeout_s * 1000)]
        if kind == SourceKind.CAMERA:
            cap = cv2.VideoCapture(target, cv2.CAP_ANY)
            if cap.isOpened():
                self._configure_camera(cap)
        elif kind == SourceKind.FIFO:
            cap = _open_fifo(target, self.open_timeout_s, timeouts)
        else:
            cap = cv2.VideoCapture(target, cv2.CAP_FFMPEG, timeouts)
        if not cap.isOpened():
            cap.release()
            return False
        self._cap = cap
        return True

    def _configure_camera(self, cap: Any) -> None:
        import cv2

        c = self.camera
        wanted = [(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*c.fourcc) if c.fourcc else None),
                  (cv2.CAP_PROP_FRAME_WIDTH, c.width), (cv2.CAP_PROP_FRAME_HEIGHT, c.height),
                  (cv2.CAP_PROP_FPS, c.fps), (cv2.CAP_PROP_BUFFERSIZE, c.buffer_size)]
        for prop, value in wanted:
            if value is not None and not cap.set(prop, float(value)):
                log.warning("%s ignored setting %s=%s", self.spec.name, prop, value)
        log.info("%s: %dx%d at %.1f fps", self.spec.name, cap.get(cv2.CAP_PROP_FRAME_WIDTH),
                 cap.get(cv2.CAP_PROP_FRAME_HEIGHT), cap.get(cv2.CAP_PROP_FPS))

    def read(self) -> Frame | None:
        import cv2

        if self._cap is None:
            return None
        ok, image = self._cap.read()
        if not ok or image is None:
            return None
        media_time = self._cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0 if self._media_time else None
        return Frame(image, media_time)

    def reopen(self) -> bool:
        self.close()
        return self._open()

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class _NotOpened:
    """What a source that gave up looks like to the caller: a capture that is not open."""

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return False

    def release(self) -> None:
        pass


def _open_fifo(path: str, timeout_s: float, timeouts: list[int]) -> Any:
    """Open a named pipe with OpenCV, giving up after ``timeout_s`` instead of blocking without end.

    Three ways a pipe blocks: open(2) for reading waits for a writer; FFmpeg's header probe waits for
    data from a writer that opened the pipe but writes nothing; and neither can be interrupted while
    OpenCV is inside them. So: we hold the pipe open read-write ourselves (our open never blocks, and
    OpenCV's open returns at once), wait in Python (interruptible by Ctrl-C and SIGTERM) until the pipe
    has data, and let OpenCV probe it in a helper thread that we stop waiting for at the deadline. A
    probe still stuck then is left to finish in its (daemon) thread; its capture is released when it does.
    """
    import select

    import cv2

    deadline = time.monotonic() + timeout_s
    keeper = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    try:
        poller = select.poll()
        poller.register(keeper, select.POLLIN)
        if not poller.poll(max(0, int(timeout_s * 1000))):
            log.info("%s: no data within %.1f s", path, timeout_s)
            return _NotOpened()
        opened: list[Any] = []
        done = threading.Event()
        abandoned = threading.Event()

        def probe() -> None:
            cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG, timeouts)
            opened.append(cap)
            done.set()
            if abandoned.is_set():
                cap.release()

        threading.Thread(target=probe, name="edgevision-fifo-open", daemon=True).start()
        if done.wait(max(0.0, deadline - time.monotonic())):
            return opened[0]
        abandoned.set()
        if done.is_set():  # it finished between the wait and the flag
            return opened[0]
        log.info("%s: the writer sent no video header within %.1f s", path, timeout_s)
        return _NotOpened()
    finally:
        os.close(keeper)


def open_source(spec: SourceSpec, camera: CameraOptions | None = None, open_timeout_s: float = 5.0,
                read_timeout_s: float = 10.0) -> FrameSource:
    if spec.kind == SourceKind.IMAGES:
        return ImageSource(spec)
    return VideoCaptureSource(spec, camera, open_timeout_s, read_timeout_s)


def wait_for_reconnect(source: FrameSource, policy: ReconnectPolicy, stop: threading.Event) -> bool:
    """Reopen ``source`` with backoff; False when every attempt failed or ``stop`` was set."""
    for attempt, delay in enumerate(policy.delays(), 1):
        if stop.wait(delay):
            return False
        started = time.perf_counter()
        if source.reopen():
            log.warning("%s reconnected (attempt %d)", source.spec.name, attempt)
            return True
        log.warning("%s: reconnect attempt %d/%d failed after %.1f s", source.spec.name, attempt,
                    policy.attempts, time.perf_counter() - started)
    return False
