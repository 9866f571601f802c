"""Tuned TVM vs ONNX Runtime on this x86 host, MobileNetV2 (examples/mobilenet_v2.py), batch 1, fp32.

    python benchmarks/tvm_vs_ort.py                 # tune 32 trials per task (the --tune default)
    python benchmarks/tvm_vs_ort.py --trials 600    # a stated total budget instead
    python benchmarks/tvm_vs_ort.py --reuse         # apply an existing tuning log, no new trials

The tuning database goes to --tuning-log (default ~/.cache/edgevision/tuning/mobilenet_v2-tvm-x86);
a rerun with --reuse rebuilds from it in about a minute. Each runtime is timed in its own process
(TVM imports torch when present; one heavy runtime per process keeps the figures honest).
The last line is the ratio: the median over alternating rounds of tuned-TVM median / ONNX Runtime median.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
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


def summarize(rounds: list[dict]) -> dict:
    return {"median_ms": statistics.median(r["median_ms"] for r in rounds), "min_ms": min(r["min_ms"] for r in rounds),
            "rounds": [round(r["median_ms"], 2) for r in rounds]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=-1, help="total MetaSchedule trials (default: 32 per task)")
    parser.add_argument("--tuning-log", type=Path, default=DEFAULT_LOG)
    parser.add_argument("--reuse", action="store_true", help="no new trials: apply the existing log")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--runs", type=int, default=200, help="timed runs per runtime, split over the rounds")
    parser.add_argument("--rounds", type=int, default=5, help="alternating ORT/TVM rounds, one process each")
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
                                   progress=lambda msg: print(f"  {msg}", file=sys.stderr, flush=True))
        compile_min = (time.monotonic() - started) / 60
        tuning = tvm_result.manifest.payload["tuning"]
        acc = tvm_result.manifest.accuracy
        # Alternate the two in rounds so both see the same background load (this host is noisy):
        # the ratio is the median of per-round ratios, each round timing ORT and TVM back to back.
        rounds: dict[str, list[dict]] = {"ort": [], "tvm": []}
        per_round = max(1, args.runs // args.rounds)
        for _ in range(args.rounds):
            rounds["ort"].append(time_artifact(ort_path, args.threads, per_round))
            rounds["tvm"].append(time_artifact(tvm_result.path, args.threads, per_round))
        ort, tvm = (summarize(rounds[name]) for name in ("ort", "tvm"))
        ratio = statistics.median(t["median_ms"] / o["median_ms"] for t, o in zip(rounds["tvm"], rounds["ort"]))

    mcpu = tvm_result.manifest.payload["tvm_target"].get("mcpu")
    print(f"model: MobileNetV2 1x3x224x224 fp32, {args.threads} threads, {args.runs} runs each in {args.rounds} "
          f"alternating rounds, mcpu {mcpu}")
    print(f"tuning: {tuning.get('tasks', '?')} tasks, {tuning.get('trials', 0)} trials "
          f"({tuning.get('trials_per_task', '-')} per task), {tuning.get('minutes', 0.0)} min tuning, "
          f"{compile_min:.1f} min whole compile, {tuning.get('records')} records applied from {args.tuning_log}")
    blocked = tuning.get("register_blocked")
    if blocked:
        print(f"register-blocked convolutions timed beside the search: {blocked['candidates']} candidates for "
              f"{blocked['dense_convs']} dense convolutions, the fastest record in {blocked['kept']} of them")
    print(f"accuracy gate (tuned TVM vs torch, 32 real views): top-1 {acc.top1_agreement:.0%}, "
          f"max|diff| {acc.max_abs_diff:.2g}")
    print(f"onnxruntime: median {ort['median_ms']:.2f} ms (min {ort['min_ms']:.2f}; per round {ort['rounds']})")
    print(f"tvm tuned:   median {tvm['median_ms']:.2f} ms (min {tvm['min_ms']:.2f}; per round {tvm['rounds']})")
    # The log accumulates across runs: state the new trials and what the database held in total.
    budget = (f"{tuning.get('trials', 0)} new trials" + (" (reused log)" if args.reuse else "")
              + f", {tuning.get('records')} records in the log")
    print(f"best-vs-best (min / min), less sensitive to a busy host: {tvm['min_ms'] / ort['min_ms']:.2f}")
    print(f"tuned TVM / ONNX Runtime latency ratio: {ratio:.2f} "
          f"(MobileNetV2, budget {budget})")


if __name__ == "__main__":
    main()
