"""edgevision demo: the main job on the bundled default, end to end."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..console import Console
from .predict import classify_files


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="compile the default model for this host, classify the bundled images and clip")
    p.add_argument("--target", help="default: intel-cpu when OpenVINO is installed, else onnxruntime-cpu")
    p.add_argument("--out", type=Path, default=Path("out"), help="folder for the artifact (default: ./out)")
    p.add_argument("--frames", type=int, default=0, help="stop the clip after this many frames (0: all)")
    p.set_defaults(handler=run)


def host_target() -> str:
    from ...backends import get_backend

    return "intel-cpu" if get_backend("openvino").is_available() else "onnxruntime-cpu"


def classify_clip(model, clip: Path, max_frames: int, console: Console) -> None:
    import cv2

    from ...errors import InputError

    cap = cv2.VideoCapture(str(clip))
    if not cap.isOpened():
        raise InputError(f"cannot open video {clip}", "check the file and that OpenCV has FFmpeg")
    frames, infer_s, start = 0, 0.0, time.perf_counter()
    try:
        while not max_frames or frames < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            t0 = time.perf_counter()
            top = model.predict(frame, top_k=1)[0]
            infer_s += time.perf_counter() - t0
            frames += 1
            if frames % 50 == 1:
                console.print(f"frame {frames:4d}: {top.label} {top.score:.2f}")
    finally:
        cap.release()
    total = time.perf_counter() - start
    if frames:
        console.print(f"{clip.name}: {frames} frames, end-to-end {frames / total:.1f} FPS "
                      f"(preprocess + model {frames / infer_s:.1f} FPS)")


def run(args: argparse.Namespace, console: Console) -> int:
    from ...compiler import CompileRequest, compile_model
    from ...runtime import load
    from ...samples import sample_clip

    target = args.target or host_target()
    out = args.out / f"efficientnet-lite0.{target}.evpkg"
    with console.status(f"compiling EfficientNet-Lite0 for {target}") as step:
        result = compile_model(CompileRequest(target=target, output=out), progress=step)
    acc = result.manifest.accuracy
    console.print(f"compiled {out}: accuracy gate {'PASS' if acc.passed else 'FAIL'} — top-1 agreement "
                  f"{acc.top1_agreement:.1%}, max|diff| {acc.max_abs_diff:.2g} over {acc.images} images")
    with load(out) as model:
        console.print("top-5 on the bundled images (ms = preprocess + inference):")
        from .predict import expand
        classify_files(model, expand([]), 5, console)
        classify_clip(model, sample_clip(), args.frames, console)
    return 0
