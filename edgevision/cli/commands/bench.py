"""edgevision bench [ARTIFACT...] [--model M --targets a,b:bf16] [--json F] [--plot F] [--rpc HOST:PORT]"""
from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path
from typing import TYPE_CHECKING

from ..console import Console
from ..validate import non_negative_int, positive_int

if TYPE_CHECKING:
    from ...bench import BenchReport, Candidate, RowResult

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


def parse_targets(text: str) -> list[tuple[str, str | None]]:
    from ...errors import InputError

    wanted: list[tuple[str, str | None]] = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        name, _, precision = item.partition(":")
        if precision and precision not in ("fp32", "fp16", "bf16", "int8"):
            raise InputError(f"precision {precision!r} in --targets {item!r} is unknown",
                             "use TARGET or TARGET:fp32|fp16|bf16|int8")
        wanted.append((name, precision or None))
    if not wanted:
        raise InputError(f"--targets {text!r} names no target", "write e.g. --targets onnxruntime-cpu,intel-cpu:bf16")
    return wanted


def runnable_targets() -> list[str]:
    """Every target this host can compile for and run, aliases (same backend, device, options) once."""
    from ...backends import get_backend
    from ...errors import EdgevisionError
    from ...targets import available_targets

    names, seen = [], set()
    for name, target in sorted(available_targets().items()):
        if target.arch != platform.machine():
            continue  # another device's target (even with a portable payload): name it to bench it here
        try:
            backend = get_backend(target.backend)
            ok = backend.is_available() and not backend.compile_requirements(target) and backend.can_run(target)[0]
        except EdgevisionError:
            ok = False
        key = (target.backend, target.device, target.arch, json.dumps(target.options, sort_keys=True))
        if ok and key not in seen:
            seen.add(key)
            names.append(name)
    return names


def compile_candidates(args: argparse.Namespace, console: Console) -> tuple[list["Candidate"], list["RowResult"]]:
    """Compile the requested targets; a target that cannot run here becomes a skipped row, not an error."""
    from ...backends import get_backend
    from ...bench import Candidate, RowResult
    from ...bench.artifacts import ensure_compiled, model_slug
    from ...remote import RemoteDevice
    from ...errors import EdgevisionError
    from ...targets import get_target
    from .compile import parse_options

    options = parse_options(args.option)
    endpoint = RemoteDevice.parse(args.rpc, args.key) if args.rpc else None
    text = args.targets or "auto"
    wanted: list[tuple[str, str | None]] = []
    for name, precision in parse_targets(text):
        wanted += [(n, precision) for n in runnable_targets()] if name == "auto" else [(name, precision)]
    candidates: list[Candidate] = []
    unrunnable: list[RowResult] = []
    done: set[tuple[str, str]] = set()
    for name, precision in wanted:
        target = get_target(name)
        precision = precision or target.default_precision
        if (target.name, precision) in done:
            continue
        done.add((target.name, precision))
        label = f"{target.name} {precision}"
        backend = get_backend(target.backend)
        remote = endpoint is not None and backend.remote_timing is not None
        ok, why = (True, "") if remote else backend.can_run(target)
        if not ok:
            if backend.remote_timing is not None:
                why += "; time it on the board with --rpc HOST:PORT --key KEY"
            unrunnable.append(RowResult(label=label, kind="artifact", device="this host", status="skipped",
                                        reason=f"not runnable here: {why}", target=target.name,
                                        backend=target.backend, precision=precision))
            continue
        try:
            with console.status(f"compiling {model_slug(args.model)} for {target.name} ({precision})") as step:
                out = ensure_compiled(args.model, target.name, precision, args.out, reuse=args.reuse,
                                      threads=args.threads, options=options, progress=step)
        except EdgevisionError as err:
            # The target cannot take this model (an operator, the accuracy gate): a result, not a crash.
            unrunnable.append(RowResult(label=label, kind="artifact", device="this host", status="unsupported",
                                        reason=f"compile failed: {err}", target=target.name,
                                        backend=target.backend, precision=precision))
            continue
        candidates.append(Candidate.remote(out, endpoint) if remote else Candidate.for_artifact(out, label))
    return candidates, unrunnable


def artifact_candidates(args: argparse.Namespace) -> list["Candidate"]:
    import platform

    from ...artifact import read_manifest
    from ...backends import get_backend
    from ...bench import Candidate
    from ...remote import RemoteDevice
    from ...errors import EdgevisionError

    endpoint = RemoteDevice.parse(args.rpc, args.key) if args.rpc else None
    found = []
    for path in args.artifacts:
        remote = False
        if endpoint is not None:
            try:
                m = read_manifest(path)
                remote = get_backend(m.backend).remote_timing is not None and m.target.arch != platform.machine()
            except EdgevisionError:
                pass  # the row reports the broken artifact
        found.append(Candidate.remote(path, endpoint) if remote else Candidate.for_artifact(path))
    return found


def run(args: argparse.Namespace, console: Console) -> int:
    from ...bench import BenchSettings, Candidate, run_benchmark
    from ...bench.hostinfo import cpus_available
    from ...bench.session import check_settings
    from ...errors import InputError

    from ...artifact import read_manifest
    from ...files import refuse_overwriting_inputs

    if args.key and not args.rpc:
        raise InputError("--key names a board behind a TVM RPC tracker", "also pass --rpc HOST:PORT")
    refuse_overwriting_inputs({"--json": args.json, "--plot": args.plot},
                              {f"artifact {i + 1}": path for i, path in enumerate(args.artifacts)})
    for path in args.artifacts:
        read_manifest(path)  # a missing or broken artifact is one line now, not a failed row minutes later
    settings = BenchSettings(warmup=args.warmup, iterations=args.iterations, rounds=args.rounds, batch=args.batch,
                             threads=args.threads or cpus_available(), parallel_requests=args.parallel,
                             stream_source=None if args.no_stream else args.source, stream_frames=args.frames)
    check_settings(settings)  # before minutes of compiling
    candidates = artifact_candidates(args)
    unrunnable = []
    if args.targets or not args.artifacts:
        compiled, unrunnable = compile_candidates(args, console)
        candidates += compiled
    if args.torch:
        candidates.insert(0, Candidate.torch_eager(args.model))
    if not candidates and not unrunnable:
        raise InputError("nothing to measure", "pass artifact files or --targets")
    with console.status("benchmarking") as step:
        report = run_benchmark(candidates, settings, progress=step)
    report.rows += unrunnable
    show(report, console)
    if args.json:
        report.write_json(args.json)
        console.print(f"wrote {args.json}")
    if args.plot:
        from ...bench.plot import plot_fps

        plot_fps(report, args.plot)
        console.print(f"wrote {args.plot}")
    failed = [r for r in report.rows if r.status == "failed"]
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
        if r.status != "ok" and r.reason:
            console.print(f"{r.label}: {r.status} — {r.reason}")
        elif r.end_to_end_note and r.status == "ok" and s.stream_source is not None:
            console.print(f"{r.label}: end to end {r.end_to_end_note}")
    libs = ", ".join(f"{k} {v}" for k, v in sorted(h.libraries.items()))
    console.print(f"host: {h.cpu_model} ({h.machine}), {h.cpus_available} of {h.logical_cpus} CPUs usable, "
                  f"features: {' '.join(h.cpu_features) or 'none of note'}; load average "
                  f"{'/'.join(str(v) for v in h.load_average) or '?'} at start; {h.system} {h.kernel}; "
                  f"Python {h.python}; {libs}; edgevision {h.edgevision}; {h.date_utc}")
