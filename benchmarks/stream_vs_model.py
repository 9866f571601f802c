"""Stream FPS vs model-only FPS on the same artifact, in one process.

model-only: ``model.run`` on one preprocessed frame, back to back (the network's own rate).
stream:     ``model.stream(clip)`` over the bundled clip, every frame decoded, preprocessed,
            inferred and post-processed by the pipelined runner (end-to-end FPS).

Rounds alternate the two so that load from other processes hits both alike; the best round of each
is compared. The pipeline hides capture and preprocessing behind inference when they are cheaper than
inference and a core is free for them, so the ratio should be >= 0.95 then. The last line is the ratio.

    python benchmarks/stream_vs_model.py [--artifact A.evpkg] [--frames 250] [--rounds 3] [--threads N]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DEFAULT_ARTIFACT = REPO / "out" / "efficientnet-lite0.onnxruntime-cpu.evpkg"


def model_only_fps(model, tensor, frames: int) -> float:
    started = time.perf_counter()
    for _ in range(frames):
        model.run(tensor)
    return frames / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--artifact", type=Path, default=DEFAULT_ARTIFACT,
                        help="compiled artifact (default: the demo's ONNX Runtime one, compiled when missing)")
    parser.add_argument("--frames", type=int, default=250, help="frames per round (the clip has 250)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, help="inference threads (default: the artifact's)")
    args = parser.parse_args()

    import cv2

    from edgevision.runtime import load
    from edgevision.samples import sample_clip

    if not args.artifact.exists():
        from edgevision.compiler import CompileRequest, compile_model

        print(f"compiling {args.artifact} ...", flush=True)
        compile_model(CompileRequest(target="onnxruntime-cpu", output=args.artifact))
    clip = sample_clip()
    cap = cv2.VideoCapture(str(clip))
    ok, frame = cap.read()
    cap.release()
    if not ok:
        raise SystemExit(f"cannot read {clip}")

    model = load(args.artifact, threads=args.threads)
    tensor = model.preprocess(frame)[None]
    for _ in range(10):
        model.run(tensor)
    print(f"artifact {args.artifact.name}: {model.manifest.backend}, threads={args.threads or 'artifact default'}, "
          f"{os.cpu_count()} CPUs, clip {clip.name}, {args.frames} frames per round")
    best_model = best_stream = 0.0
    paired: list[float] = []
    for round_ in range(1, args.rounds + 1):
        model_fps = model_only_fps(model, tensor, args.frames)
        stats = model.stream(clip, live=False, top_k=5, max_frames=args.frames).run()
        best_model, best_stream = max(best_model, model_fps), max(best_stream, stats.fps)
        paired.append(stats.fps / model_fps)
        s = stats.stages
        print(f"round {round_}: model-only {model_fps:6.1f} FPS | stream {stats.fps:6.1f} FPS "
              f"({stats.frames} frames; capture {s['capture'].mean:.1f} + preprocess {s['preprocess'].mean:.1f} ms "
              f"vs infer {s['infer'].mean:.1f} ms per frame, mean)", flush=True)
    print(f"best: model-only {best_model:.1f} FPS, stream {best_stream:.1f} FPS; "
          f"median of per-round ratios {sorted(paired)[len(paired) // 2]:.3f}")
    print(f"stream/model-only FPS ratio: {best_stream / best_model:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
