"""edgevision stream ARTIFACT --source 0|/dev/video0|clip.mp4|'frames/*.jpg'|rtsp://...|FIFO"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ...files import refuse_overwriting_inputs, write_atomic
from ..console import Console
from ..validate import non_negative_float, non_negative_int, positive_float, positive_int

if TYPE_CHECKING:
    from ...stream import Stream, StreamResult, StreamStats


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stream", help="classify a camera, video file, image folder, URL or pipe frame by frame",
                       description="Classify frames from a camera, video file, image folder/glob, RTSP/HTTP URL "
                                   "or named pipe with a pipelined runner; prints labels and stream statistics.")
    p.add_argument("artifact", type=Path)
    p.add_argument("-s", "--source", default=None,
                   help="camera index (0), /dev/videoN, video file, image folder or glob, rtsp://... URL, "
                        "or FIFO (default: the bundled sample clip)")
    p.add_argument("--live", action=argparse.BooleanOptionalAction, default=None,
                   help="drop stale frames (default: on for cameras, URLs and pipes, off for files)")
    p.add_argument("-k", "--top-k", type=positive_int, default=5)
    p.add_argument("-n", "--max-frames", type=positive_int, help="stop after this many results")
    p.add_argument("--smooth", type=non_negative_int, default=0, metavar="N",
                   help="average class scores over about N frames to steady the label (0: off)")
    p.add_argument("--show", action="store_true", help="display frames with the overlay (needs a GUI OpenCV)")
    p.add_argument("--save", type=Path, metavar="VIDEO", help="write frames with the overlay (.mp4, .avi, .mkv)")
    p.add_argument("--json", type=Path, metavar="JSONL", help="write one JSON line per frame")
    p.add_argument("--stats-json", type=Path, metavar="JSON", help="write the final statistics as JSON")
    p.add_argument("--print-every", type=non_negative_int, default=1, metavar="N",
                   help="print every Nth result (0: only the final statistics)")
    cam = p.add_argument_group("camera")
    cam.add_argument("--width", type=positive_int)
    cam.add_argument("--height", type=positive_int)
    cam.add_argument("--fps", type=positive_float, help="requested camera frame rate")
    cam.add_argument("--buffer-size", type=positive_int, default=1, help="frames the driver may queue (default 1)")
    cam.add_argument("--fourcc", help="camera pixel format, e.g. MJPG")
    net = p.add_argument_group("disconnects")
    net.add_argument("--reconnect", type=non_negative_int, default=3, metavar="N",
                     help="reconnect attempts after a live source drops (0: stop at once)")
    net.add_argument("--reconnect-delay", type=non_negative_float, default=0.5, metavar="S",
                     help="first wait before reconnecting, doubled each attempt up to 5 s")
    net.add_argument("--open-timeout", type=positive_float, default=5.0, metavar="S",
                     help="give up opening a URL or pipe after S seconds")
    p.add_argument("--threads", type=positive_int, help="inference threads")
    p.add_argument("--device", help="override the artifact's device, e.g. OpenVINO GPU")
    p.set_defaults(handler=run)


def format_result(result: "StreamResult") -> str:
    where = f"{result.media_time:7.2f}s" if result.media_time is not None else (result.name or "")
    top = "; ".join(f"{p.label.split(',')[0]} {p.score:.2f}" for p in result.predictions[:3])
    return (f"frame {result.frame_index:5d} {where}  {top}  "
            f"[infer {result.timings['infer'] * 1e3:.1f} ms, {result.fps:.1f} FPS]")


def print_stats(console: Console, stats: "StreamStats") -> None:
    rows = [(stage, f"{lat.p50:.2f}", f"{lat.p90:.2f}", f"{lat.p99:.2f}")
            for stage, lat in [*stats.stages.items(), ("end to end", stats.latency)]]
    console.table("stream latency (ms)", ["stage", "p50", "p90", "p99"], rows)
    console.print(f"stream: {stats.summary()}" + (f", {stats.reconnects} reconnects" if stats.reconnects else ""))


def camera_options(args: argparse.Namespace):
    from ...stream import CameraOptions

    return CameraOptions(width=args.width, height=args.height, fps=args.fps, buffer_size=args.buffer_size,
                         fourcc=args.fourcc)


def open_source_first(args: argparse.Namespace, source):
    """Open and check the source before the model loads: a missing camera or bad URL costs no model load."""
    from ...stream.sources import describe_source, open_source

    return open_source(describe_source(source), camera_options(args), args.open_timeout)


def open_stream(args: argparse.Namespace, model, source) -> "Stream":
    from ...stream import ReconnectPolicy

    camera = camera_options(args)
    reconnect = ReconnectPolicy(attempts=args.reconnect, delay_s=args.reconnect_delay)
    return model.stream(source, live=args.live, top_k=args.top_k, max_frames=args.max_frames,
                        smooth=args.smooth, camera=camera, reconnect=reconnect, open_timeout_s=args.open_timeout)


def run(args: argparse.Namespace, console: Console) -> int:
    import json

    from ...runtime import load
    from ...stream import DisplaySink, JsonLinesSink, VideoSink

    source = args.source
    if source is None:
        from ...samples import sample_clip

        source = str(sample_clip())
        console.info(f"• source: bundled sample clip {Path(source).name} (pass --source 0 for a camera)")
    source_file = Path(source) if not source.strip().isdigit() and os.path.exists(source) else None
    refuse_overwriting_inputs({"--save": args.save, "--json": args.json, "--stats-json": args.stats_json},
                              {"the artifact": args.artifact, "the source": source_file})
    opened = open_source_first(args, source)
    try:
        model = load(args.artifact, threads=args.threads, device=args.device)
    except BaseException:
        opened.close()
        raise
    with model:
        stream = open_stream(args, model, opened)
        with stream:
            if args.show:
                stream.add_sink(DisplaySink(f"edgevision: {stream.spec.name}"))
            if args.save:
                stream.add_sink(VideoSink(args.save, fps=stream.fps))
            if args.json:
                stream.add_sink(JsonLinesSink(args.json))
            console.info(f"• streaming {stream.spec.name} ({'live: latest frame' if stream.live else 'every frame'}"
                         f") with {model.manifest.model_name} on {model.manifest.backend}")
            interrupted = ""
            try:
                for result in stream:
                    if args.print_every and result.frame_index % args.print_every == 0:
                        console.print(format_result(result))
            except KeyboardInterrupt as err:
                # Ctrl-C (and SIGTERM/SIGHUP, see edgevision.signals) is how a camera stream ends: the
                # outputs are finalised, the statistics reported, and the exit is normal.
                interrupted = getattr(err, "name", "") or "SIGINT"
        stats = stream.stats
    print_stats(console, stats)
    if args.save and stats.frames:
        console.info(f"• wrote {args.save}")
    if args.stats_json:
        write_atomic(args.stats_json, (json.dumps(stats.to_dict(), indent=2) + "\n").encode())
    if interrupted:
        console.info(f"• stopped by {'Ctrl-C' if interrupted == 'SIGINT' else interrupted}")
    return 0
