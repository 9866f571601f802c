"""`--precision auto` for the default model on this host: every precision's latency ratio to fp32 and
its agreement with the original, and which one auto picked, in one run.

    python benchmarks/precision_auto.py                    # EfficientNet-Lite0, intel-cpu (OpenVINO)
    python benchmarks/precision_auto.py -t onnxruntime-cpu

Runs the real `edgevision compile --precision auto`: it compiles each precision the target
supports, gates each on the 293 bundled validation inputs against the PyTorch original, times the
ones that pass side by side (30 interleaved rounds, order rotated each round, batch 1) and keeps the
fastest. The table printed is the one stored in the artifact's manifest (payload.precision_auto).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from edgevision.bench.hostinfo import cpu_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-t", "--target", default="intel-cpu")
    parser.add_argument("--work", type=Path, help="folder for the artifact")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="edgevision-auto-"))
    work.mkdir(parents=True, exist_ok=True)
    out = work / f"lite0.{args.target}.auto.evpkg"
    cmd = [sys.executable, "-m", "edgevision.cli", "-q", "compile", "-t", args.target, "--precision", "auto",
           "-o", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO), "OMP_WAIT_POLICY": "PASSIVE"})
    if done.returncode != 0:
        raise SystemExit(f"compile failed: {' '.join(cmd)}\n{done.stderr[-2000:]}")
    with zipfile.ZipFile(out) as zf:
        manifest = json.loads(zf.read("manifest.json"))
    auto = manifest["payload"]["precision_auto"]
    print(f"EfficientNet-Lite0, {args.target}, {cpu_model()} ({os.cpu_count()} CPUs); {auto['timing']}")
    print(f"{'precision':10s} {'ran as':8s} {'gate':5s} {'latency':>10s} {'vs fp32':>8s} {'agreement':>10s} "
          f"{'all top-1':>10s} {'cosine':>8s}")
    for row in auto["candidates"]:
        if row.get("passed"):
            timing = (f"{'same kernels as ' + row['same_as']:>19s}" if row.get("same_as")
                      else f"{row['latency_ms']:8.2f}ms {row['ratio_to_fp32']:7.2f}x")
            print(f"{row['precision']:10s} {row.get('executed', ''):8s} {'PASS':5s} {timing} "
                  f"{row['agreement']:10.1%} {row['top1_all']:10.1%} {row['cosine']:8.4f}")
        else:
            print(f"{row['precision']:10s} {'':8s} {'FAIL':5s} {row.get('why', '')}")
    ratios = ", ".join(f"{r['precision']} {r['ratio_to_fp32']:.2f}x ({r['agreement']:.1%})"
                       for r in auto["candidates"] if r.get("passed") and not r.get("same_as"))
    print(f"auto picked {auto['chosen']} on {args.target} ({auto['why']}): latency vs fp32 "
          f"(decisive top-1 agreement): {ratios}")


if __name__ == "__main__":
    main()
