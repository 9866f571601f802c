"""Soak: stream many frames through the runtime and watch the process's memory (RSS) stay flat.

Frames come from the bundled clip (bikes.mp4, 250 frames), read with OpenCV and reopened at its end,
so 10,000 frames are 40 passes over a real street scene. Each frame goes through
``Model.predict`` (preprocess, inference, top-5). RSS is sampled every ``--sample-every`` frames.

Growth is measured after a warm-up (allocators and runtime caches settle in the first frames):
baseline = median RSS over the first 10% of samples after warm-up, final = median over the last 10%.
The last line is the growth in percent; the exit code is 1 when it reaches ``--max-growth``.

    python benchmarks/soak.py [--artifact A.evpkg] [--frames 10000] [--warmup 500] [--max-growth 5]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DEFAULT_ARTIFACT = REPO / "out" / "efficientnet-lite0.onnxruntime-cpu.evpkg"


@dataclass
class SoakResult:
    frames: int
    warmup: int
    seconds: float
    samples: list[tuple[int, int]] = field(default_factory=list)  # (frames done, RSS bytes)
    top1: dict[int, int] = field(default_factory=dict)  # class index -> frames it was top-1

    def _window(self, first: bool) -> list[int]:
        after = [rss for done, rss in self.samples if done > self.warmup]
        n = max(1, len(after) // 10)
        return after[:n] if first else after[-n:]

    @property
    def baseline_rss(self) -> float:
        return statistics.median(self._window(first=True))

    @property
    def final_rss(self) -> float:
        return statistics.median(self._window(first=False))

    @property
    def peak_rss(self) -> int:
        return max(rss for _, rss in self.samples)

    @property
    def growth_percent(self) -> float:
        return 100.0 * (self.final_rss - self.baseline_rss) / self.baseline_rss


def frames_from_clip(clip: Path):
    """BGR frames from ``clip``, looping forever; the capture is reopened at the end, as a player would."""
    import cv2

    while True:
        cap = cv2.VideoCapture(str(clip))
        if not cap.isOpened():
            raise RuntimeError(f"cannot open {clip}")
        produced = 0
        try:
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                produced += 1
                yield frame
        finally:
            cap.release()
        if produced == 0:
            raise RuntimeError(f"{clip} has no frames")


def run_soak(model, clip: Path, frames: int, warmup: int = 500, sample_every: int = 50,
             progress: Callable[[int, int], None] | None = None) -> SoakResult:
    """``progress(frames done, RSS bytes)`` is called at every sample."""
    import gc

    import psutil

    process = psutil.Process()
    result = SoakResult(frames=frames, warmup=warmup, seconds=0.0)
    gc.collect()
    started = time.perf_counter()
    for done, frame in enumerate(frames_from_clip(clip), start=1):
        top = model.predict(frame, top_k=5)[0]
        result.top1[top.index] = result.top1.get(top.index, 0) + 1
        if done % sample_every == 0 or done == frames:
            result.samples.append((done, process.memory_info().rss))
            if progress:
                progress(*result.samples[-1])
        if done >= frames:
            break
    result.seconds = time.perf_counter() - started
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--artifact", type=Path, default=DEFAULT_ARTIFACT,
                        help="compiled artifact (default: the demo's ONNX Runtime one, compiled when missing)")
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=500, help="frames before the baseline is taken")
    parser.add_argument("--sample-every", type=int, default=50, help="frames between RSS samples")
    parser.add_argument("--threads", type=int, help="inference threads (default: the artifact's)")
    parser.add_argument("--max-growth", type=float, default=5.0, help="fail (exit 1) at this RSS growth in %%")
    args = parser.parse_args()

    from edgevision.runtime import load
    from edgevision.samples import sample_clip

    if not args.artifact.exists():
        from edgevision.compiler import CompileRequest, compile_model

        print(f"compiling {args.artifact} ...", flush=True)
        compile_model(CompileRequest(target="onnxruntime-cpu", output=args.artifact))
    clip = sample_clip()
    with load(args.artifact, threads=args.threads) as model:
        m = model.manifest
        print(f"soak: {args.frames} frames of {clip.name} through Model.predict, artifact {args.artifact.name} "
              f"({m.model_name}, {m.backend} {m.backend_version}, {m.precision}), warm-up {args.warmup} frames",
              flush=True)
        report_every = max(args.sample_every, args.frames // 10)

        def progress(done: int, rss: int) -> None:
            if done % report_every == 0:
                print(f"  frame {done:6d}: RSS {rss / 2**20:7.1f} MB", flush=True)

        result = run_soak(model, clip, args.frames, args.warmup, args.sample_every, progress)
        top = sorted(result.top1.items(), key=lambda kv: -kv[1])[:3]
        labels = ", ".join(f"{model.labels[i]} ({n})" for i, n in top)
    mb = 1 / 2**20
    print(f"{result.frames} frames in {result.seconds:.1f} s ({result.frames / result.seconds:.1f} FPS); "
          f"most frequent top-1: {labels}")
    print(f"RSS baseline {result.baseline_rss * mb:.1f} MB (after {result.warmup} frames), "
          f"final {result.final_rss * mb:.1f} MB, peak {result.peak_rss * mb:.1f} MB")
    print(f"RSS growth after warm-up: {result.growth_percent:+.2f}% over {result.frames} frames "
          f"(limit {args.max_growth:g}%)")
    return 0 if result.growth_percent < args.max_growth else 1


if __name__ == "__main__":
    sys.exit(main())
