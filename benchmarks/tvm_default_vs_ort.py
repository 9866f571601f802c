"""TVM's default schedules (what `--target rpi4` applies, here on the host target) vs untuned TVM vs
ONNX Runtime, on this x86 host: MobileNetV2 (examples/mobilenet_v2.py) and EfficientNet-Lite0 (the
default model), batch 1, fp32.

    python benchmarks/tvm_default_vs_ort.py                       # both models, the default 32 candidates per kernel
    python benchmarks/tvm_default_vs_ort.py --models mobilenet_v2 --trials 4

Why x86: emulated aarch64 time is no measure of speed (qemu-user ran untuned TVM and ONNX Runtime's
NEON kernels within 1.15x of each other, where natively they differ by 40-60x). The same default
strategy applied to tvm-x86 and timed natively next to ONNX Runtime is the proxy for schedule quality.
Each artifact is timed in its own process, the three alternating in rounds so that all see the same
background load; the ratio is the median of per-round ratios. The last line is the ratios.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

# One timing protocol for both TVM benchmarks (a subprocess per artifact, warm-up, median and min).
from tvm_vs_ort import time_artifact

REPO = Path(__file__).resolve().parent.parent
MODELS = {"mobilenet_v2": f"{REPO / 'examples' / 'mobilenet_v2.py'}:mobilenet_v2", "efficientnet_lite0": None}


def build(model: str | None, target: str, out: Path, threads: int, options: dict) -> tuple[Path, float, dict]:
    from edgevision.compiler import CompileRequest, compile_model

    started = time.monotonic()
    result = compile_model(CompileRequest(model=model, target=target, output=out, threads=threads, options=options),
                           progress=lambda msg: print(f"  {msg}", file=sys.stderr, flush=True))
    return result.path, (time.monotonic() - started) / 60, result.manifest.payload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--trials", type=int, default=None, help="default-search candidates per kernel")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--runs", type=int, default=20, help="timed runs per artifact per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    lines = []
    for name in args.models:
        model = MODELS[name]
        with tempfile.TemporaryDirectory(prefix="edgevision-bench-") as tmp:
            out = Path(tmp)
            print(f"{name}: compiling", flush=True)
            ort, _, _ = build(model, "onnxruntime-cpu", out / "ort.evpkg", args.threads, {})
            naive, naive_min, _ = build(model, "tvm-x86", out / "naive.evpkg", args.threads,
                                        {"default_schedule": "off"})
            options = {} if args.trials is None else {"default_schedule": str(args.trials)}
            default, default_min, payload = build(model, "tvm-x86", out / "default.evpkg", args.threads, options)
            rounds: dict[str, list[dict]] = {"ort": [], "naive": [], "default": []}
            for _ in range(args.rounds):
                for key, path in (("ort", ort), ("naive", naive), ("default", default)):
                    rounds[key].append(time_artifact(path, args.threads, args.runs))
        med = {k: statistics.median(r["median_ms"] for r in v) for k, v in rounds.items()}
        best = {k: min(r["min_ms"] for r in v) for k, v in rounds.items()}
        ratio = {k: statistics.median(t["median_ms"] / o["median_ms"] for t, o in zip(rounds[k], rounds["ort"]))
                 for k in ("naive", "default")}
        source = payload["schedule"]["sources"][-1] if payload["schedule"]["sources"] else {}
        print(f"{name}: {args.threads} threads, {args.rounds} alternating rounds x {args.runs} runs, "
              f"mcpu {payload['tvm_target'].get('mcpu')}")
        print(f"  compile: untuned TVM {naive_min:.1f} min, default {default_min:.1f} min "
              f"(search {source.get('minutes', 0)} min, {source.get('trials_per_task', 0)} candidates x "
              f"{source.get('tasks_searched', 0)} kernels); MACs parallel+vectorized: "
              f"{payload['kernels']['share']:.1%}")
        for key, label in (("ort", "onnxruntime"), ("naive", "tvm untuned"), ("default", "tvm default")):
            print(f"  {label:12s} median {med[key]:8.2f} ms  min {best[key]:8.2f} ms  per round "
                  f"{[round(r['median_ms'], 2) for r in rounds[key]]}")
        lines.append(f"{name} untuned/ORT {ratio['naive']:.1f}x default/ORT {ratio['default']:.2f}x "
                     f"(best-vs-best {best['default'] / best['ort']:.2f}x)")
    print("TVM / ONNX Runtime latency ratio: " + "; ".join(lines))


if __name__ == "__main__":
    main()
