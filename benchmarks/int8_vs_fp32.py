"""INT8 vs FP32 latency, per backend, measured side by side in one run, next to top-1 agreement.

    python benchmarks/int8_vs_fp32.py                       # EfficientNet-Lite0, ORT + OpenVINO
    python benchmarks/int8_vs_fp32.py --quantizer nncf      # OpenVINO INT8 from NNCF instead
    python benchmarks/int8_vs_fp32.py --work DIR --runs 300 # keep/reuse artifacts, longer timing

Compiles four artifacts with the real `edgevision compile` (ONNX Runtime fp32/int8, OpenVINO
fp32/int8; torch stays out of the timing process), loads all four in one process and times them
interleaved — run r times model A, B, C, D once each, in an order rotated every round — so load
from other processes hits every model alike. Batch 1, --threads threads each (default 2),
OpenVINO LATENCY hint with one infer request. Agreement: INT8 top-1 vs the FP32 artifact of the
same backend on the 32 gate views (8 photos x 4 views), and the gate's own figures vs torch.
The last line prints INT8/FP32 latency ratios.
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
BUILDS = [("onnxruntime", "onnxruntime-cpu", "fp32"), ("onnxruntime", "onnxruntime-cpu", "int8"),
          ("openvino", "intel-cpu", "fp32"), ("openvino", "intel-cpu", "int8")]


def compile_artifacts(work: Path, quantizer: str) -> dict[tuple[str, str], Path]:
    paths = {}
    for backend, target, precision in BUILDS:
        tag = f"-{quantizer}" if precision == "int8" and backend == "openvino" else ""
        path = work / f"lite0.{target}.{precision}{tag}.evpkg"
        if not path.exists():
            cmd = [sys.executable, "-m", "edgevision.cli", "-q", "compile", "-t", target, "--precision", precision,
                   "-o", str(path)]
            if precision == "int8" and backend == "openvino":
                cmd += ["--quantizer", quantizer]
            print(f"compiling {path.name} ...", flush=True)
            done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
            if done.returncode != 0:
                raise SystemExit(f"compile failed: {' '.join(cmd)}\n{done.stderr[-2000:]}")
        paths[(backend, precision)] = path
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="folder for the artifacts (reused when present)")
    parser.add_argument("--quantizer", choices=["onnxruntime", "nncf"], default="onnxruntime",
                        help="how the OpenVINO INT8 artifact is quantized (ONNX Runtime's is always onnxruntime)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=100, help="timed rounds (each runs every model once)")
    args = parser.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="edgevision-int8-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    paths = compile_artifacts(work, args.quantizer)

    import numpy as np

    from edgevision.compiler.gate import validation_tensors
    from edgevision.runtime import load

    models = {key: load(path, threads=args.threads) for key, path in paths.items()}
    assert "torch" not in sys.modules, "torch in the timing process"
    views = validation_tensors(models[("onnxruntime", "fp32")].preprocess_config)
    logits = {key: np.concatenate([m.run(views[i:i + 1]) for i in range(len(views))]) for key, m in models.items()}

    x = views[:1]
    keys = list(models)
    for _ in range(10):
        for key in keys:
            models[key].run(x)
    times: dict[tuple[str, str], list[float]] = {key: [] for key in keys}
    for r in range(args.runs):
        for key in keys[r % len(keys):] + keys[:r % len(keys)]:
            start = time.perf_counter()
            models[key].run(x)
            times[key].append((time.perf_counter() - start) * 1e3)

    print(f"\nEfficientNet-Lite0, batch 1, {args.threads} threads, {args.runs} interleaved rounds, "
          f"OpenVINO INT8 by {args.quantizer}")
    print(f"{'backend':12s} {'prec':5s} {'median ms':>9s} {'p90 ms':>7s} {'top-1 vs fp32':>14s} "
          f"{'gate vs torch (top-1 / top-5 / KL / cos)':>42s}")
    ratios = {}
    for backend, precision in keys:
        t = sorted(times[(backend, precision)])
        acc = models[(backend, precision)].manifest.accuracy
        agree = float((logits[(backend, precision)].argmax(1) == logits[(backend, "fp32")].argmax(1)).mean())
        gate = (f"{acc.top1_agreement:.1%} / {acc.top5_agreement:.1%} / {acc.mean_kl:.3f} / {acc.mean_cosine:.3f}"
                if acc else "-")
        print(f"{backend:12s} {precision:5s} {statistics.median(t):9.2f} {t[int(0.9 * len(t))]:7.2f} "
              f"{agree:14.1%} {gate:>42s}")
    for backend in ("onnxruntime", "openvino"):
        ratios[backend] = statistics.median(times[(backend, "int8")]) / statistics.median(times[(backend, "fp32")])
    print(json.dumps({"artifacts": str(work)}))
    print("INT8/FP32 latency ratio: " + ", ".join(f"{b} {r:.2f} ({1 / r:.2f}x faster)" for b, r in ratios.items()))


if __name__ == "__main__":
    main()
