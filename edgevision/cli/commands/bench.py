"""edgevision bench [ARTIFACT...] [--model M --targets a,b:bf16] [--json F] [--plot F] [--rpc HOST:PORT]"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ..console import Console
from ..validate import non_negative_int, positive_int

if TYPE_CHECKING:
    from ...bench import BenchReport, RowResult


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="measure latency, FPS and memory per artifact or target; table, JSON and chart",
        description="Model-only latency/throughput (warm-up, N iterations, percentiles) and end-to-end "
                    "stream FPS, reported separately. Each artifact runs in its own process; timing "
                    "rounds are interleaved across artifacts so machine noise hits all of them alike.")
    p.add_argument("artifacts", nargs="*", type=Path, help="artifact files to measure")
    p.add_argument("--model", help="model to compile for --targets (default: EfficientNet-Lite0)")
    p.add_argument("--targets", help="comma-separated TARGET[:PRECISION] to compile and measure; 'auto' = every "
                                     "target this host can run (default when no ARTIFACT is given)")
    p.add_argument("--precisions", metavar="LIST",
                   help="compile and measure each target at every one of these (e.g. fp32,bf16,int8), side by "
                        "side; each is gated; a precision the target cannot take is a row saying why")
    p.add_argument("--out", type=Path, default=Path("out/bench"), help="folder for compiled artifacts")
    p.add_argument("--reuse", action="store_true",
                   help="reuse artifacts already in --out (checked by target and precision, not by model)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="backend compile option for --targets, repeatable (e.g. tune_trials=64)")
    p.add_argument("--torch", action="store_true", help="add the model in PyTorch eager mode as the baseline row")
    timing = p.add_argument_group("model-only timing")
    timing.add_argument("--warmup", type=non_negative_int, default=10, help="untimed calls first (default 10)")
    timing.add_argument("--iterations", "-n", type=positive_int, default=100, help="timed calls per row (default 100)")
    timing.add_argument("--rounds", type=positive_int, default=5, help="interleaved rounds the calls are split into")
    timing.add_argument("--batch", type=positive_int, default=1, help="images per call (default 1)")
    timing.add_argument("--threads", type=positive_int, help="runtime threads (default: every CPU this process may use)")
    timing.add_argument("--parallel", type=positive_int, default=1,
                        help="parallel requests, each with its own loaded model (default 1)")
    e2e = p.add_argument_group("end to end")
    e2e.add_argument("--source", default="sample",
                     help="video file, folder, camera index or URL for stream FPS (default: the bundled clip)")
    e2e.add_argument("--frames", type=positive_int, default=100, help="frames to stream per artifact (default 100)")
    e2e.add_argument("--no-stream", action="store_true", help="skip the end-to-end measurement")
    remote = p.add_argument_group("remote boards (TVM RPC)")
    remote.add_argument("--rpc", metavar="HOST:PORT",
                        help="time TVM artifacts for another architecture on a board through TVM RPC")
    remote.add_argument("--key", help="device key registered with the RPC tracker at HOST:PORT (e.g. rpi4)")
    out = p.add_argument_group("output")
    out.add_argument("--json", type=Path, help="write every figure and the host description as JSON")
    out.add_argument("--plot", type=Path, help="write a PNG bar chart of FPS per target/precision")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, console: Console) -> int:
    from ...artifact import read_manifest
    from ...bench import BenchSettings, run_benchmark
    from ...bench.hostinfo import cpus_available
    from ...bench.plan import plan_benchmark
    from ...bench.results import RowStatus
    from ...bench.session import check_settings
    from ...errors import InputError
    from ...files import refuse_overwriting_inputs
    from ...remote import RemoteDevice
    from .compile import parse_options

    if args.key and not args.rpc:
        raise InputError("--key names a board behind a TVM RPC tracker", "also pass --rpc HOST:PORT")
    refuse_overwriting_inputs({"--json": args.json, "--plot": args.plot},
                              {f"artifact {i + 1}": path for i, path in enumerate(args.artifacts)})
    from ...bench.plan import parse_precisions

    precisions = parse_precisions(args.precisions)  # before minutes of compiling
    if precisions and args.artifacts and not args.targets:
        raise InputError("--precisions applies to compiled --targets, not to artifact files",
                         "add --targets (e.g. --targets intel-cpu) or drop --precisions")
    for path in args.artifacts:
        read_manifest(path)  # a missing or broken artifact is one line now, not a failed row minutes later
    settings = BenchSettings(warmup=args.warmup, iterations=args.iterations, rounds=args.rounds, batch=args.batch,
                             threads=args.threads or cpus_available(), parallel_requests=args.parallel,
                             stream_source=None if args.no_stream else args.source, stream_frames=args.frames)
    check_settings(settings)  # before minutes of compiling
    endpoint = RemoteDevice.parse(args.rpc, args.key) if args.rpc else None
    compiles = bool(args.targets or not args.artifacts)
    plan = plan_benchmark(args.artifacts, targets=args.targets, model=args.model, out_dir=args.out,
                          reuse=args.reuse, threads=args.threads,
                          options=parse_options(args.option) if compiles else None, endpoint=endpoint,
                          torch=args.torch, precisions=precisions, status=console.status)
    with console.status("benchmarking") as step:
        report = run_benchmark(plan.candidates, settings, progress=step)
    report.rows += plan.unrunnable
    show(report, console)
    if args.json:
        report.write_json(args.json)
        console.print(f"wrote {args.json}")
    if args.plot:
        from ...bench.plot import plot_fps

        plot_fps(report, args.plot)
        console.print(f"wrote {args.plot}")
    failed = [r for r in report.rows if r.status == RowStatus.FAILED]
    if failed:
        first = failed[0]
        console.error(f"{len(failed)} of {len(report.rows)} rows failed ({first.label}: {first.reason}) — "
                      "see the table; rerun with --debug for details")
        return 1
    return 0


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _precision(row: "RowResult") -> str:
    from ...bench.results import same_precision

    if row.effective_precision and row.precision and not same_precision(row.precision, row.effective_precision):
        return f"{row.precision} (runs {row.effective_precision})"
    return row.precision or "-"


def show(report: "BenchReport", console: Console) -> None:
    from ...bench.results import RowStatus

    s, h = report.settings, report.host
    base = report.baseline()
    base_fps = base.model_only.throughput_fps if base else None
    rows = []
    for r in report.rows:
        mo, acc = r.model_only, r.accuracy
        gate = "-" if not acc else f"{'pass' if acc['passed'] else 'FAIL'} {acc['top1_agreement']:.0%}"
        if mo is None:
            rows.append([r.label, r.device, r.status, _precision(r), _fmt(r.size_mb, 1), gate] + ["-"] * 7)
            continue
        lat = mo.latency
        ratio = f"{mo.throughput_fps / base_fps:.2f}x" if base_fps else "-"
        peak = _fmt(r.memory.peak_rss_model_only_mb, 0) if r.memory else "-"
        rows.append([r.label, r.device, r.status, _precision(r), _fmt(r.size_mb, 1), gate, _fmt(lat.mean_ms),
                     _fmt(lat.p50_ms), _fmt(lat.p90_ms), _fmt(lat.p99_ms), _fmt(mo.throughput_fps, 1), ratio, peak])
    threads = "runtime default" if s.threads is None else s.threads
    console.table(f"model only: batch {s.batch}, {threads} threads, {s.parallel_requests} parallel request(s), "
                  f"{s.iterations} timed calls after {s.warmup} warm-up, {s.rounds} interleaved rounds",
                  ["row", "device", "status", "precision", "size MB", "gate top-1", "mean ms", "p50 ms", "p90 ms",
                   "p99 ms", "FPS", f"x {base.label if base else 'base'}", "peak RSS MB"], rows)
    streamed = [r for r in report.rows if r.end_to_end]
    if streamed:
        e2e_rows = []
        for r in streamed:
            e, stages = r.end_to_end, r.end_to_end.details.get("stages_ms", {})
            p50 = [_fmt(stages.get(k, {}).get("p50")) for k in ("capture", "preprocess", "infer")]
            peak = _fmt(r.memory.peak_rss_end_to_end_mb, 0) if r.memory else "-"
            e2e_rows.append([r.label, _fmt(e.fps, 1), str(e.frames), str(e.dropped), _fmt(e.duration_s), *p50, peak])
        console.table(f"end to end: Model.stream on {Path(streamed[0].end_to_end.source).name}, {s.stream_frames} "
                      "frames (decode + preprocess + model + top-5, pipelined)",
                      ["row", "FPS", "frames", "dropped", "seconds", "capture p50 ms", "preprocess p50 ms",
                       "infer p50 ms", "peak RSS MB"], e2e_rows)
    for r in report.rows:
        if r.status != RowStatus.OK and r.reason:
            console.print(f"{r.label}: {r.status} — {r.reason}")
        elif r.end_to_end_note and r.status == RowStatus.OK and s.stream_source is not None:
            console.print(f"{r.label}: end to end {r.end_to_end_note}")
    libs = ", ".join(f"{k} {v}" for k, v in sorted(h.libraries.items()))
    console.print(f"host: {h.cpu_model} ({h.machine}), {h.cpus_available} of {h.logical_cpus} CPUs usable, "
                  f"features: {' '.join(h.cpu_features) or 'none of note'}; load average "
                  f"{'/'.join(str(v) for v in h.load_average) or '?'} at start; {h.system} {h.kernel}; "
                  f"Python {h.python}; {libs}; edgevision {h.edgevision}; {h.date_utc}")
