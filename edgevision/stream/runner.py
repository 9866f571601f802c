"""The pipelined stream runner: capture, preprocessing and inference overlap in three threads.

    capture thread ──frames──▶ preprocess thread ──tensors──▶ inference thread ──results──▶ caller
    (source.read)              (model.preprocess)             (model.run)                   (softmax, top-k,
                                                                                              smoothing, sinks)

Decoding (FFmpeg), OpenCV resizing and the backends' run() release the GIL, so the stages really run
at the same time: when preprocessing is cheaper than inference the pipeline runs at the model's rate.

Live sources (camera, URL, pipe) use the latest-frame policy: the capture thread reads continuously
(so the driver's buffer never fills with stale frames) into a one-slot ``latest`` channel, where an
unclaimed frame is overwritten and counted as dropped. The preprocessing thread takes a frame only when
the inference queue has room (and inference takes a tensor only when the results slot has room), so
the frame it picks is the newest one and no work is spent on frames that would be thrown away. Files and image folders use blocking bounded channels: every frame is
processed, and a slow model slows the reading instead of growing a queue.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import numpy as np

from ..errors import EdgevisionError
from ..runtime.prediction import probabilities, topk_from_probs
from .channel import Channel, ChannelPolicy, Closed
from .result import StreamResult
from .sinks import CallbackSink, Sink, StopStream
from .smoothing import EmaSmoother
from .sources import CameraOptions, Frame, FrameSource, ReconnectPolicy, SourceKind, describe_source, \
    open_source, wait_for_reconnect
from .stats import StatsRecorder, StopReason, StreamStats

if TYPE_CHECKING:
    from ..runtime.model import Model

log = logging.getLogger(__name__)


@dataclass
class _Captured:
    frame: Frame
    index: int
    timestamp: float  # time.time()
    read_at: float  # perf_counter when read() returned
    capture_s: float


class Stream:
    """Iterate over classified frames: ``for result in model.stream(0): ...``; or ``stats = stream.run()``.

    Opening the source happens here, so a source that cannot be opened fails at once with a one-line
    EdgevisionError. The threads start on iteration. A stream is iterated once; breaking out of the loop,
    an exception or Ctrl-C stops the threads and releases the source.
    """

    def __init__(self, model: "Model", source: "str | int | os.PathLike[str] | FrameSource", *, live: bool | None = None,
                 top_k: int = 5, max_frames: int | None = None, smooth: int = 0,
                 camera: CameraOptions | None = None, reconnect: ReconnectPolicy | None = None,
                 open_timeout_s: float = 5.0, read_timeout_s: float = 10.0, stall_timeout_s: float = 15.0,
                 queue_size: int = 2, warmup: bool = True,
                 sinks: Iterable[Sink | Callable[[StreamResult], Any]] = ()) -> None:
        if top_k < 1:
            raise EdgevisionError(f"top_k must be at least 1, not {top_k}")
        if max_frames is not None and max_frames < 1:
            raise EdgevisionError(f"max_frames must be at least 1, not {max_frames}", "or None for all frames")
        self.model = model
        # An already opened FrameSource (the CLI opens it before paying the model load) is used as it is.
        opened = source if isinstance(source, FrameSource) else None
        self.spec = opened.spec if opened is not None else describe_source(source)
        self.live = self.spec.live if live is None else live
        self.top_k = top_k
        self.max_frames = max_frames
        self.reconnect = reconnect if reconnect is not None else ReconnectPolicy()
        self.stall_timeout_s = stall_timeout_s
        self.warmup = warmup
        self._smoother = EmaSmoother(smooth) if smooth and smooth > 1 else None
        self.sinks: list[Sink] = []
        for sink in sinks:
            self.add_sink(sink)
        self.source: FrameSource = opened or open_source(self.spec, camera, open_timeout_s, read_timeout_s)
        if self.live:
            self._frames: Channel[_Captured] = Channel(1, ChannelPolicy.LATEST)
            self._tensors: Channel[tuple[_Captured, np.ndarray, float]] = Channel(1)
            self._results: Channel[tuple[_Captured, np.ndarray, float, float]] = Channel(1)
        else:
            self._frames = Channel(queue_size)
            self._tensors = Channel(queue_size)
            self._results = Channel(queue_size)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._error: BaseException | None = None
        self._last_activity = time.perf_counter()
        self._recorder = StatsRecorder(self.spec.name, self.live)
        self._started = False
        self._closed = False
        self._generator: weakref.ref[Iterator[StreamResult]] | None = None

    @property
    def fps(self) -> float | None:
        """The source's nominal frame rate, when it reports one (e.g. for writing a video)."""
        return self.source.fps

    @property
    def stats(self) -> StreamStats:
        return self._recorder.snapshot()

    def add_sink(self, sink: Sink | Callable[[StreamResult], Any]) -> None:
        """Add a sink; one whose ``path`` is the source or the model's artifact is refused (data loss)."""
        from ..files import refuse_overwriting_inputs

        path = getattr(sink, "path", None)
        if path is not None:
            source = self.spec.target if self.spec.kind in (SourceKind.FILE, SourceKind.FIFO) else None
            refuse_overwriting_inputs({f"{type(sink).__name__} output": path},
                                      {"the stream's source": source, "the artifact": getattr(self.model, "path", None)})
        self.sinks.append(sink if hasattr(sink, "write") else CallbackSink(sink))  # type: ignore[arg-type]

    def run(self) -> StreamStats:
        """Consume the whole stream (results go to the sinks) and return the final statistics."""
        for _ in self:
            pass
        return self.stats

    def __iter__(self) -> Iterator[StreamResult]:
        if self._started or self._closed:
            raise EdgevisionError("this stream was already consumed", "call model.stream() again")
        self._started = True
        generator = self._iterate()
        # Only a weak reference: the caller's loop must own the generator, so that breaking out of the
        # loop drops it and its ``finally`` stops the threads at once.
        self._generator = weakref.ref(generator)
        return generator

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- pipeline ------------------------------------------------------------------------------------

    def _iterate(self) -> Iterator[StreamResult]:
        failed = True
        try:
            if self.warmup:
                # The first inference allocates and tunes; keep it out of the stats and the live drop count.
                self.model.run(np.zeros(self.model.preprocess_config.tensor_shape(1), np.float32))
            self._start_threads()
            delivered = 0
            while True:
                item = self._next_inferred()
                if item is None:
                    break
                result = self._postprocess(*item)
                delivered += 1
                try:
                    for sink in self.sinks:
                        sink.write(result)
                except StopStream:
                    self._recorder.stop_reason = StopReason.STOPPED
                    yield result
                    break
                yield result
                if self.max_frames is not None and delivered >= self.max_frames:
                    self._recorder.stop_reason = StopReason.MAX_FRAMES
                    break
            failed = False
        except KeyboardInterrupt:
            self._recorder.stop_reason = StopReason.INTERRUPTED
            failed = False
            raise
        except GeneratorExit:
            if self._recorder.stop_reason == StopReason.RUNNING:
                self._recorder.stop_reason = StopReason.STOPPED
            failed = False
            raise
        finally:
            if failed and self._recorder.stop_reason == StopReason.RUNNING:
                self._recorder.stop_reason = StopReason.ERROR
            self._shutdown(failed)

    def _start_threads(self) -> None:
        self._recorder.start()
        self._last_activity = time.perf_counter()
        for name, target in (("capture", self._capture_loop), ("preprocess", self._preprocess_loop),
                             ("infer", self._infer_loop)):
            thread = threading.Thread(target=self._guard, args=(target,), name=f"edgevision-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _guard(self, loop: Callable[[], None]) -> None:
        try:
            loop()
        except Closed:
            pass
        except BaseException as err:  # handed to the caller's thread, which re-raises it
            if self._error is None:
                self._error = err
            self._stop.set()
            for channel in (self._frames, self._tensors, self._results):
                channel.close()

    def _capture_loop(self) -> None:
        index = 0
        try:
            while not self._stop.is_set():
                if not self.live and self.max_frames is not None and index >= self.max_frames:
                    self._recorder.stop_reason = StopReason.MAX_FRAMES
                    break
                started = time.perf_counter()
                frame = self.source.read()
                read_at = time.perf_counter()
                self._last_activity = read_at
                if frame is None:
                    if self._stop.is_set():
                        break
                    reconnectable = self.live and self.spec.kind != SourceKind.IMAGES  # an image folder just ends
                    if reconnectable and self.reconnect.attempts > 0:
                        log.warning("%s stopped delivering frames; reconnecting", self.spec.name)
                        self._last_activity = float("inf")  # reconnecting is bounded by its own policy
                        if wait_for_reconnect(self.source, self.reconnect, self._stop):
                            self._recorder.add_reconnect()
                            self._last_activity = time.perf_counter()
                            continue
                        self._last_activity = time.perf_counter()
                    reason = StopReason.DISCONNECTED if reconnectable else StopReason.EOF
                    if self._recorder.stop_reason == StopReason.RUNNING:
                        self._recorder.stop_reason = reason
                    break
                item = _Captured(frame, index, time.time(), read_at, read_at - started)
                index += 1
                self._recorder.add_captured(self._frames.put(item))
        finally:
            self._frames.close()
            self.source.close()

    def _preprocess_loop(self) -> None:
        try:
            while not self._stop.is_set():
                if self.live:
                    self._tensors.wait_for_space()  # pull on demand: take the newest frame only when it can go on
                item = self._frames.get()
                started = time.perf_counter()
                tensor = self.model.preprocess(item.frame.image)[None]
                self._tensors.put((item, tensor, time.perf_counter() - started))
        finally:
            self._tensors.close()

    def _infer_loop(self) -> None:
        try:
            while not self._stop.is_set():
                if self.live:
                    self._results.wait_for_space()  # a slow consumer: infer the newest tensor when it is ready
                item, tensor, preprocess_s = self._tensors.get()
                started = time.perf_counter()
                logits = self.model.run(tensor)[0]
                self._results.put((item, logits, preprocess_s, time.perf_counter() - started))
        finally:
            self._results.close()

    def _next_inferred(self) -> tuple[_Captured, np.ndarray, float, float] | None:
        while True:
            try:
                return self._results.get(timeout=0.25)
            except Closed:
                if self._error is not None:
                    raise self._error
                return None
            except TimeoutError:
                idle = time.perf_counter() - self._last_activity
                if self.live and idle > self.stall_timeout_s:
                    log.warning("%s delivered no frame for %.0f s; stopping", self.spec.name, idle)
                    self._recorder.stop_reason = StopReason.STALLED
                    return None

    def _postprocess(self, item: _Captured, logits: np.ndarray, preprocess_s: float,
                     infer_s: float) -> StreamResult:
        started = time.perf_counter()
        probs = probabilities(logits, self.model.manifest.scores)
        if self._smoother is not None:
            probs = self._smoother.update(probs)
        predictions = topk_from_probs(probs, self.model.labels, self.top_k, self.model.manifest.scores)
        now = time.perf_counter()
        timings = {"capture": item.capture_s, "preprocess": preprocess_s, "infer": infer_s,
                   "postprocess": now - started}
        latency = now - item.read_at
        fps = self._recorder.add_result(timings, latency, now)
        return StreamResult(frame_index=item.index, timestamp=item.timestamp, frame=item.frame.image,
                            predictions=predictions, timings=timings, latency=latency, fps=fps,
                            media_time=item.frame.media_time, name=item.frame.name)

    def _shutdown(self, failed: bool) -> None:
        self._stop.set()
        for channel in (self._frames, self._tensors, self._results):
            channel.close()
        for thread in self._threads:
            # A capture thread blocked in a stalled read cannot be interrupted; it is a daemon and
            # releases the source itself when the read returns.
            thread.join(timeout=2.0)
            if thread.is_alive():
                log.warning("%s did not stop within 2 s; leaving it to finish in the background", thread.name)
        if not self._threads:
            self.source.close()
        self._finish_sinks(failed)
        self._closed = True

    def _finish_sinks(self, failed: bool) -> None:
        errors: list[BaseException] = []
        for sink in self.sinks:
            try:
                abort = getattr(sink, "abort", None)
                if failed and abort is not None:
                    abort()
                else:
                    sink.close()
            except Exception as err:  # one failing sink must not leave the others open
                errors.append(err)
        self.sinks = []
        if errors and not failed:
            raise errors[0]

    def close(self) -> None:
        """Stop the pipeline and release the source; safe to call more than once."""
        if self._closed:
            return
        self._started = True
        generator = self._generator() if self._generator is not None else None
        if generator is not None:
            generator.close()  # type: ignore[attr-defined]  # runs _iterate's shutdown
        if not self._closed:  # never iterated, or iter() called without next()
            if self._recorder.stop_reason == StopReason.RUNNING:
                self._recorder.stop_reason = StopReason.STOPPED
            self._shutdown(failed=False)

    def __del__(self) -> None:
        if not getattr(self, "_started", True):
            self.source.close()
