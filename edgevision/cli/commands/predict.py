"""edgevision predict ARTIFACT IMAGE..."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..console import Console
from ..validate import positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify image files with an artifact")
    p.add_argument("artifact", type=Path)
    p.add_argument("images", nargs="*", type=Path, help="image files or folders (default: the bundled samples)")
    p.add_argument("-k", "--top-k", type=positive_int, default=5)
    p.add_argument("--threads", type=positive_int)
    p.add_argument("--device", help="override the artifact's device, e.g. OpenVINO GPU")
    p.set_defaults(handler=run)


def classify_files(model, paths: list[Path], top_k: int, console: Console) -> None:
    import time

    from ...samples import read_image

    for path in paths:
        image = read_image(path)
        start = time.perf_counter()
        predictions = model.predict(image, top_k=top_k)
        ms = (time.perf_counter() - start) * 1e3
        top = "; ".join(f"{p.label} ({p.index}) {p.score:.2f}" for p in predictions)
        console.print(f"{path.name:24s} {ms:7.1f} ms  {top}")


def expand(paths: list[Path]) -> list[Path]:
    from ...samples import image_paths

    if not paths:
        return image_paths()
    found: list[Path] = []
    for path in paths:
        found += image_paths(path) if path.is_dir() else [path]
    return found


def run(args: argparse.Namespace, console: Console) -> int:
    from ...runtime import load

    with load(args.artifact, threads=args.threads, device=args.device) as model:
        classify_files(model, expand(args.images), args.top_k, console)
    return 0
