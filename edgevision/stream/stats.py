"""Stream statistics: end-to-end FPS, per-stage latency percentiles, dropped frames."""
from __future__ import annotations

import collections
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from ..enums import StrEnum

STAGES = ("capture", "preprocess", "infer", "postprocess")
WINDOW = 10_000  # latency samples kept per stage: percentiles describe the last ~5 minutes at 30 fps


class StopReason(StrEnum):
    """Why a stream ended (``StreamStats.stop_reason``; written as its value in --stats-json)."""

    RUNNING = "running"  # not ended yet
    EOF = "eof"  # a file or an image folder ran out
    MAX_FRAMES = "max_frames"
    DISCONNECTED = "disconnected"  # a live source stopped and reconnecting failed
    STALLED = "stalled"  # a live source delivered nothing for stall_timeout_s
    INTERRUPTED = "interrupted"  # Ctrl-C
    STOPPED = "stopped"  # the caller stopped it: a sink's StopStream, break, close()
    ERROR = "error"


@dataclass(frozen=True)
class Latency:
    """Milliseconds."""

    p50: float
    p90: float
    p99: float
    mean: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> "Latency":
        if not seconds:
            return cls(0.0, 0.0, 0.0, 0.0)
        ms = np.asarray(seconds, dtype=np.float64) * 1e3
        p50, p90, p99 = np.percentile(ms, [50, 90, 99])
        return cls(float(p50), float(p90), float(p99), float(ms.mean()))


@dataclass(frozen=True)
class StreamStats:
    source: str
    live: bool
    frames: int  # results delivered
    captured: int  # frames read from the source
    dropped: int  # live sources: frames overwritten by a newer one before preprocessing
    duration_s: float  # pipeline start to the last result
    fps: float  # end to end: frames / duration_s
    model_fps: float  # 1 / mean inference time: what the network alone could do
    reconnects: int
    stop_reason: StopReason
    stages: dict[str, Latency] = field(default_factory=dict)  # capture, preprocess, infer, postprocess
    latency: Latency = Latency(0.0, 0.0, 0.0, 0.0)  # frame read -> result delivered (end to end)

    def stage(self, name: str) -> Latency:
        return self.stages[name]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["latency_ms"] = data.pop("latency")
        data["stages_ms"] = data.pop("stages")
        return data

    def summary(self) -> str:
        infer = self.stages.get("infer")
        drop = f", {self.dropped} dropped" if self.live else ""
        return (f"{self.frames} frames in {self.duration_s:.1f} s: {self.fps:.1f} FPS end to end{drop}, "
                f"model alone {self.model_fps:.1f} FPS (infer p50 {infer.p50 if infer else 0:.1f} ms), "
                f"latency p50 {self.latency.p50:.1f} ms, stopped: {self.stop_reason}")


class StatsRecorder:
    """Written by the pipeline threads, read as a StreamStats snapshot from any thread."""

    def __init__(self, source: str, live: bool) -> None:
        self.source = source
        self.live = live
        self._lock = threading.Lock()
        self._samples = {stage: collections.deque(maxlen=WINDOW) for stage in STAGES}
        self._latency: collections.deque[float] = collections.deque(maxlen=WINDOW)
        self._recent: collections.deque[float] = collections.deque(maxlen=30)
        self.frames = self.captured = self.dropped = self.reconnects = 0
        self.started: float | None = None
        self.last_result: float | None = None
        self.stop_reason = StopReason.RUNNING

    def start(self) -> None:
        self.started = time.perf_counter()

    def add_captured(self, dropped: int) -> None:
        with self._lock:
            self.captured += 1
            self.dropped += dropped

    def add_reconnect(self) -> None:
        with self._lock:
            self.reconnects += 1

    def add_result(self, timings: dict[str, float], latency: float, now: float) -> float:
        """Record one delivered result; returns the FPS over the last 30 results (for overlays)."""
        with self._lock:
            for stage, seconds in timings.items():
                self._samples[stage].append(seconds)
            self._latency.append(latency)
            self._recent.append(now)
            self.frames += 1
            self.last_result = now
            if len(self._recent) < 2:
                return 0.0
            return (len(self._recent) - 1) / max(self._recent[-1] - self._recent[0], 1e-9)

    def snapshot(self) -> StreamStats:
        with self._lock:
            end = self.last_result if self.stop_reason != StopReason.RUNNING and self.last_result else time.perf_counter()
            duration = max(end - self.started, 0.0) if self.started is not None else 0.0
            stages = {stage: Latency.of(list(s)) for stage, s in self._samples.items()}
            infer_mean = stages["infer"].mean
            return StreamStats(
                source=self.source, live=self.live, frames=self.frames, captured=self.captured,
                dropped=self.dropped, duration_s=duration,
                fps=self.frames / duration if duration > 0 else 0.0,
                model_fps=1e3 / infer_mean if infer_mean > 0 else 0.0, reconnects=self.reconnects,
                stop_reason=self.stop_reason, stages=stages, latency=Latency.of(list(self._latency)))
