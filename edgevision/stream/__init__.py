"""Classify a camera, video file, image folder, URL or pipe frame by frame with a pipelined runner.

    from edgevision.runtime import load
    model = load("model.evpkg")
    for result in model.stream(0):            # camera 0; or "clip.mp4", "rtsp://...", "frames/*.jpg"
        print(result.frame_index, result.predictions[0].label, result.timings["infer"])
    stats = model.stream("clip.mp4").run()   # or consume everything and get StreamStats
"""
from .channel import Channel, ChannelPolicy, Closed
from .overlay import draw_overlay
from .result import StreamResult
from .runner import Stream
from .sinks import CallbackSink, DisplaySink, JsonLinesSink, Sink, StopStream, VideoSink
from .smoothing import EmaSmoother
from .sources import CameraOptions, ReconnectPolicy, SourceKind, SourceSpec, describe_source
from .stats import Latency, StopReason, StreamStats

__all__ = ["CallbackSink", "CameraOptions", "Channel", "ChannelPolicy", "Closed", "DisplaySink", "EmaSmoother",
           "JsonLinesSink", "Latency", "ReconnectPolicy", "Sink", "SourceKind", "SourceSpec", "StopReason",
           "StopStream", "Stream", "StreamResult", "StreamStats", "VideoSink", "describe_source", "draw_overlay"]
