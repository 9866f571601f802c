"""Tuned TVM vs ONNX Runtime on this x86 host, MobileNetV2 (examples/mobilenet_v2.py), batch 1, fp32.

    python benchmarks/tvm_vs_ort.py                 # tune 32 trials per task (the --tune default)
    python benchmarks/tvm_vs_ort.py --trials 600    # a stated total budget instead
    python benchmarks/tvm_vs_ort.py --reuse         # apply an existing tuning log, no new trials

The tuning database goes to --tuning-log (default ~/.cache/edgevision/tuning/mobilenet_v2-tvm-x86);
a rerun with --reuse rebuilds from it in about a minute. Each runtime is timed in its own process
(TVM imports torch when present; one heavy runtime per process keeps the figures honest).
The last line is the ratio: tuned-TVM median / ONNX Runtime median.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODEL = f"{REPO / 'examples' / 'mobilenet_v2.py'}:mobilenet_v2"
DEFAULT_LOG = Path.home() / ".cache" / "edgevision" / "tuning" / "mobilenet_v2-tvm-x86"

TIMER = """
import json, statistics, sys, time
import numpy as np
from edgevision.runtime import load
model = load(sys.argv[1], threads=int(sys.argv[2]))
x = np.random.default_rng(0).standard_normal(tuple(int(d) for d in model.input_shape)).astype(np.float32)
for _ in range(10):
    model.run(x)
times = []
for _ in range(int(sys.argv[3])):
    t = time.perf_counter(); model.run(x); times.append((time.perf_counter() - t) * 1e3)
print(json.dumps({"median_ms": statistics.median(times), "min_ms": min(times), "runs": len(times)}))
"""


def time_artifact(path: Path, threads: int, runs: int) -> dict:
    done = subprocess.run([sys.executable, "-c", TIMER, str(path), str(threads), str(runs)], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
    if done.returncode != 0:
        raise SystemExit(f"timing {path.name} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=-1, help="total MetaSchedule trials (default: 32 per task)")
    parser.add_argument("--tuning-log", type=Path, default=DEFAULT_LOG)
    parser.add_argument("--reuse", action="store_true", help="no new trials: apply the existing log")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()

    from edgevision.compiler import CompileRequest, compile_model

    with tempfile.TemporaryDirectory(prefix="edgevision-bench-") as tmp:
        out = Path(tmp)
        ort_path = compile_model(CompileRequest(model=MODEL, target="onnxruntime-cpu", output=out / "m.ort.evpkg",
                                                threads=args.threads)).path
        options = {"tuning_log": str(args.tuning_log)}
        if not args.reuse:
            options["tune_trials"] = "auto" if args.trials < 0 else str(args.trials)
        started = time.monotonic()
        tvm_result = compile_model(CompileRequest(model=MODEL, target="tvm-x86", output=out / "m.tvm.evpkg",
                                                  threads=args.threads, options=options),
                                   progress=lambda msg: print(f"  {msg}", flush=True))
        compile_min = (time.monotonic() - started) / 60
        tuning = tvm_result.manifest.payload["tuning"]
        acc = tvm_result.manifest.accuracy
        ort = time_artifact(ort_path, args.threads, args.runs)
        tvm = time_artifact(tvm_result.path, args.threads, args.runs)

    mcpu = tvm_result.manifest.payload["tvm_target"].get("mcpu")
    print(f"model: MobileNetV2 1x3x224x224 fp32, {args.threads} threads, median of {args.runs} runs, mcpu {mcpu}")
    print(f"tuning: {tuning.get('tasks', '?')} tasks, {tuning.get('trials', 0)} trials "
          f"({tuning.get('trials_per_task', '-')} per task), {tuning.get('minutes', 0.0)} min tuning, "
          f"{compile_min:.1f} min whole compile, {tuning.get('records')} records applied from {args.tuning_log}")
    print(f"accuracy gate (tuned TVM vs torch, 32 real views): top-1 {acc.top1_agreement:.0%}, "
          f"max|diff| {acc.max_abs_diff:.2g}")
    print(f"onnxruntime: median {ort['median_ms']:.2f} ms (min {ort['min_ms']:.2f})")
    print(f"tvm tuned:   median {tvm['median_ms']:.2f} ms (min {tvm['min_ms']:.2f})")
    # The log accumulates across runs: state the new trials and what the database held in total.
    budget = (f"{tuning.get('trials', 0)} new trials" + (" (reused log)" if args.reuse else "")
              + f", {tuning.get('records')} records in the log")
    print(f"tuned TVM / ONNX Runtime latency ratio: {tvm['median_ms'] / ort['median_ms']:.2f} "
          f"(MobileNetV2, budget {budget})")


if __name__ == "__main__":
    main()
