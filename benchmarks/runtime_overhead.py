"""edgevision runtime overhead: ``Model.run`` vs the raw backend call on the same loaded artifact.

Both call the very same session/request/VM with the same preprocessed photo, in one process:
  wrapped: ``model.run(x)``  (input checks, contiguity, static-batch handling, the runner adapter)
  raw:     the backend's own API: ONNX Runtime ``session.run``, OpenVINO ``request.infer`` + output
           tensor, TVM ``vm["main"](tensor).numpy()``; any other backend: ``runner.run``.
Rounds alternate the two (and flip which goes first) so drift in machine load cancels; the overhead
is the median over rounds of (wrapped p50 / raw p50) - 1. Target: <= 3%. The last line is the ratio.

    python benchmarks/runtime_overhead.py [--artifact A.evpkg] [--rounds 20] [--calls 20] [--threads N]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
TARGET_OVERHEAD = 0.03


def raw_call(model: Any, x: np.ndarray) -> tuple[str, Callable[[], Any]]:
    runner, backend = model.runner, model.manifest.backend
    if backend == "onnxruntime":
        session, feed = runner.session, {runner.session.get_inputs()[0].name: x}
        return "onnxruntime session.run", lambda: session.run(None, feed)[0]
    if backend == "openvino":
        request = runner.request

        def infer() -> Any:
            request.infer({0: x})
            return request.get_output_tensor(0).data
        return "openvino request.infer", infer
    if backend == "tvm":
        import tvm

        main = runner._main  # the VM entry the runner wraps
        return "tvm vm['main']", lambda: main(tvm.runtime.tensor(x)).numpy()
    return f"{backend} runner.run", lambda: runner.run(x)


def timed(fn: Callable[[], Any], calls: int) -> list[float]:
    out, clock = [], time.perf_counter
    for _ in range(calls):
        t0 = clock()
        fn()
        out.append(clock() - t0)
    return out


def main() -> int:
    from edgevision.bench.artifacts import ensure_compiled
    from edgevision.bench.hostinfo import cpus_available, host_info
    from edgevision.runtime import load
    from edgevision.samples import sample_image

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--artifact", type=Path,
                        help="artifact to measure (default: the default model for onnxruntime-cpu, compiled "
                             "into out/bench when missing)")
    parser.add_argument("--threads", type=int, default=cpus_available())
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--calls", type=int, default=20, help="calls per side per round")
    args = parser.parse_args()

    artifact = args.artifact or ensure_compiled(None, "onnxruntime-cpu", "fp32", REPO / "out" / "bench", reuse=True)
    model = load(artifact, threads=args.threads)
    x = np.ascontiguousarray(model.preprocess(sample_image("chelsea"))[None])
    raw_name, raw = raw_call(model, x)
    if not np.allclose(model.run(x), raw(), atol=1e-6):
        print("the raw call does not compute what Model.run computes", file=sys.stderr)
        return 1
    wrapped = lambda: model.run(x)  # noqa: E731
    timed(wrapped, 10)
    timed(raw, 10)

    ratios, all_wrapped, all_raw = [], [], []
    for r in range(args.rounds):
        order = [("w", wrapped), ("r", raw)] if r % 2 == 0 else [("r", raw), ("w", wrapped)]
        got = {name: timed(fn, args.calls) for name, fn in order}
        all_wrapped += got["w"]
        all_raw += got["r"]
        ratios.append(statistics.median(got["w"]) / statistics.median(got["r"]))
    overhead = statistics.median(ratios) - 1
    h = host_info()
    print(f"host: {h.cpu_model}, {h.cpus_available} CPUs, load average {h.load_average}, {h.date_utc}")
    print(f"artifact: {artifact} ({model.manifest.backend} {model.manifest.backend_version}, "
          f"{model.manifest.precision}), batch 1, {args.threads} threads")
    print(f"Model.run        p50 {statistics.median(all_wrapped) * 1e3:8.3f} ms over {len(all_wrapped)} calls")
    print(f"{raw_name:16s} p50 {statistics.median(all_raw) * 1e3:8.3f} ms over {len(all_raw)} calls")
    print(f"per-round ratio spread: min {min(ratios):.3f}, max {max(ratios):.3f} ({args.rounds} rounds)")
    verdict = "within" if overhead <= TARGET_OVERHEAD else "OVER"
    print(f"runtime overhead (Model.run / {raw_name}, median of per-round p50 ratios): {overhead:+.2%} "
          f"({verdict} the <= {TARGET_OVERHEAD:.0%} target)")
    model.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
