"""Best compiled backend vs PyTorch eager on the default model (EfficientNet-Lite0), fp32, batch 1.

Each row runs in its own process (``edgevision.bench``): torch eager, and one artifact per target.
Timing rounds are interleaved across the rows, so load from other processes on a shared machine
slows all of them alike. The comparison uses the median (p50) per-call latency; the last line is
the ratio torch-eager p50 / best-backend p50 (higher: the compiled model is that many times faster).

    python benchmarks/backend_vs_torch.py [--targets onnxruntime-cpu,intel-cpu] [--threads N]
        [--iterations 200] [--rounds 10] [--out out/bench] [--reuse] [--json F]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> int:
    from edgevision.bench import BenchSettings, Candidate, run_benchmark
    from edgevision.bench.artifacts import ensure_compiled
    from edgevision.bench.hostinfo import cpus_available

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="model reference (default: EfficientNet-Lite0)")
    parser.add_argument("--targets", default="onnxruntime-cpu,intel-cpu",
                        help="fp32 targets to compile and compare (default: onnxruntime-cpu,intel-cpu)")
    parser.add_argument("--threads", type=int, default=cpus_available())
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--out", type=Path, default=REPO / "out" / "bench")
    parser.add_argument("--reuse", action="store_true", help="reuse artifacts already compiled in --out")
    parser.add_argument("--json", type=Path, help="also write the full report")
    args = parser.parse_args()

    candidates = [Candidate.torch_eager(args.model)]
    for target in [t.strip() for t in args.targets.split(",") if t.strip()]:
        print(f"compiling {target} fp32 (reuse={args.reuse}) ...", file=sys.stderr)
        path = ensure_compiled(args.model, target, "fp32", args.out, reuse=args.reuse, threads=args.threads)
        candidates.append(Candidate.for_artifact(path, f"{target} fp32"))
    settings = BenchSettings(warmup=args.warmup, iterations=args.iterations, rounds=args.rounds, batch=1,
                             threads=args.threads, parallel_requests=1, stream_source=None, stream_frames=1)
    report = run_benchmark(candidates, settings, progress=lambda msg: print(msg, file=sys.stderr))
    if args.json:
        report.write_json(args.json)

    h = report.host
    print(f"host: {h.cpu_model}, {h.cpus_available} CPUs, load average {h.load_average} at start, {h.date_utc}")
    print(f"batch 1, {args.threads} threads, {args.iterations} calls per row in {args.rounds} interleaved rounds")
    for row in report.rows:
        if not row.ok:
            print(f"{row.label:24s} {row.status}: {row.reason}")
            continue
        lat = row.model_only.latency
        print(f"{row.label:24s} p50 {lat.p50_ms:8.2f} ms  p90 {lat.p90_ms:8.2f} ms  mean {lat.mean_ms:8.2f} ms  "
              f"{row.model_only.throughput_fps:7.1f} FPS  peak RSS {row.memory.peak_rss_model_only_mb:.0f} MB")
    torch_row = report.rows[0]
    backends = [r for r in report.rows[1:] if r.ok]
    if not torch_row.ok or not backends:
        print("ratio: not measured (see the failures above)")
        return 1
    best = min(backends, key=lambda r: r.model_only.latency.p50_ms)
    ratio = torch_row.model_only.latency.p50_ms / best.model_only.latency.p50_ms
    print(f"best backend vs torch eager (p50 latency, torch / {best.label}): {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
