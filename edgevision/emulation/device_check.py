"""Device side of verification: the installed edgevision, from image files to logits and top-k.

Runs on the device itself or under qemu in a venv of the installed wheel; imports only numpy,
OpenCV and the backend runtime::

    python -m edgevision.emulation.device_check [--threads N] ARTIFACT OUT_DIR chelsea coffee ...

Each name is a bundled photo (``edgevision/samples/images/NAME.jpg`` of *this* installation), read,
decoded and preprocessed by this machine's OpenCV, run through ``edgevision.runtime``; the logits go
to ``OUT_DIR/logits.npy`` and one JSON line on stdout says what ran, how long it took, which photo
files were read (sha256) and what the process holds (:func:`process_report`).
"""
from __future__ import annotations

import hashlib
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

# Imported by the runtime path on no host; the check fails when any of them is in sys.modules. Each
# backend adds its own compile-side modules and libraries (Backend.compiler_modules, compiler_libraries).
FORBIDDEN_MODULES = ("torch", "onnx")


def _compile_side(backend: str | None) -> tuple[list[str], list[str]]:
    """The modules and libraries a device must not hold: the core's, plus ``backend``'s (None: every backend's)."""
    from ..backends import backend_names, get_backend

    modules, libraries = list(FORBIDDEN_MODULES), []
    for name in [backend] if backend else backend_names():
        try:
            found = get_backend(name)
        except Exception:  # noqa: BLE001 - a plugin that does not import here holds nothing here
            continue
        modules += found.compiler_modules
        libraries += found.compiler_libraries
    return modules, libraries


def process_report(backend: str | None = None) -> dict[str, Any]:
    """What this process imported and mapped: the proof that a device runs the runtime only."""
    try:
        with open("/proc/self/maps") as fh:
            mapped = sorted({line.split()[-1] for line in fh if "/" in line})
    except OSError:
        mapped = []
    modules, libraries = _compile_side(backend)
    return {"modules": len(sys.modules),
            "forbidden_modules": [m for m in modules if m in sys.modules],
            "compiler_libraries": [p for p in mapped if any(lib in Path(p).name for lib in libraries)],
            "shared_libraries": [p for p in mapped if ".so" in Path(p).name],
            "edgevision": str(Path(__import__("edgevision").__file__).resolve().parent)}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str]) -> int:
    started = time.perf_counter()
    import numpy as np

    from ..runtime import load
    from ..samples import IMAGES_DIR, read_image

    threads = None
    if argv[:1] == ["--threads"]:
        threads, argv = int(argv[1]), argv[2:]
    artifact, out_dir, *names = argv
    files = [IMAGES_DIR / f"{name}.jpg" for name in names]
    with load(artifact, threads=threads) as model:
        loaded = time.perf_counter()
        logits, top1, first_prediction = [], [], None
        for path in files:
            row = model.run(model.preprocess(read_image(path))[None])[0]
            if first_prediction is None:
                first_prediction = time.time()  # wall clock: the host compares it with its own start time
            logits.append(row)
            best = model.topk(row[None], 1)[0][0]
            top1.append([best.index, best.label])
        ran = time.perf_counter()
        backend = model.manifest.backend
    np.save(Path(out_dir) / "logits.npy", np.stack(logits).astype(np.float32))
    print(json.dumps({"machine": platform.machine(), "python": platform.python_version(), "backend": backend,
                      "load_s": round(loaded - started, 3),
                      "run_s_per_input": round((ran - loaded) / max(1, len(files)), 3),
                      "first_prediction_unix": first_prediction, "top1": top1,
                      "images": {path.stem: _sha256(path) for path in files}, "process": process_report(backend)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
