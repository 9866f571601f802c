"""edgevision demo: the main job on the bundled default, end to end."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..console import Console
from ..validate import non_negative_int
from .predict import classify_files


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="compile the default model for this host, classify the bundled images and clip")
    p.add_argument("--target", help="default: intel-cpu when its backend is installed, else onnxruntime-cpu")
    p.add_argument("--out", type=Path, default=Path("out"), help="folder for the artifact (default: ./out)")
    p.add_argument("--frames", type=non_negative_int, default=0, help="stop the clip after this many frames (0: all)")
    p.set_defaults(handler=run)


# The demo's targets for this host, best first: the first whose backend is installed here is used.
HOST_TARGETS = ("intel-cpu", "onnxruntime-cpu")


def host_target() -> str:
    from ...backends import get_backend
    from ...targets import get_target

    for name in HOST_TARGETS[:-1]:
        if get_backend(get_target(name).backend).is_available():
            return name
    return HOST_TARGETS[-1]


def classify_clip(model, clip: Path, max_frames: int, console: Console) -> None:
    """The clip through the real stream runner (edgevision.stream), as `edgevision stream` runs it."""
    from .stream import print_stats

    stream = model.stream(clip, top_k=1, max_frames=max_frames or None)
    with stream:
        for result in stream:
            if result.frame_index % 50 == 0:
                top = result.predictions[0]
                console.print(f"frame {result.frame_index:4d}: {top.label} {top.score:.2f}")
    print_stats(console, stream.stats)


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
