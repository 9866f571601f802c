"""Compile (or reuse) the artifacts a benchmark measures: one file per model, target and precision."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

from ..errors import EdgevisionError

DEFAULT_MODEL_NAME = "efficientnet-lite0"


def model_slug(model: str | None) -> str:
    if not model or model == "default":
        return DEFAULT_MODEL_NAME
    stem = Path(model.split(":")[0]).stem or model
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", stem)


def artifact_path(out_dir: Path, model: str | None, target: str, precision: str) -> Path:
    return Path(out_dir) / f"{model_slug(model)}.{target}.{precision}.evpkg"


def reusable(path: Path, target: str, precision: str) -> bool:
    """An existing file built for this target and precision (the model is trusted from the file name)."""
    from ..artifact import read_manifest

    if not path.is_file():
        return False
    try:
        manifest = read_manifest(path)
    except EdgevisionError:
        return False
    return manifest.target.name == target and manifest.precision == precision


def ensure_compiled(model: str | None, target: str, precision: str, out_dir: Path, reuse: bool = False,
                    threads: int | None = None, options: dict[str, str] | None = None,
                    progress: Callable[[str], None] | None = None) -> Path:
    from ..compiler import CompileRequest, compile_model

    path = artifact_path(out_dir, model, target, precision)
    if reuse and reusable(path, target, precision):
        return path
    compile_model(CompileRequest(model=model, target=target, precision=precision, output=path, threads=threads,
                                 options=dict(options or {})), progress=progress)
    return path
