"""One benchmark row in its own process: ``python -m edgevision.bench.worker``.

Each row gets a fresh interpreter so that its peak RSS is its own and no other runtime is imported
beside it (``import tvm`` alone pulls in torch when installed). The parent sends one JSON request a
line on stdin and reads one JSON reply a line; between requests the worker sits idle, which lets the
parent interleave timing rounds of several rows without them competing for the cores.

Library output (warnings printed by runtimes) is moved to stderr so it cannot corrupt the replies.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
import traceback
from typing import Any, Callable

import numpy as np

from .subject import Subject, tiled, time_calls

__all__ = ["Subject", "tiled", "time_calls", "serve", "main"]

SAMPLE_IMAGE = "chelsea"


def peak_rss_mb() -> float:
    # VmHWM belongs to this program's address space; ru_maxrss survives exec on Linux and would
    # report the parent's peak (a parent that imported torch to compile shows up in every row).
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1024 * 1024) if platform.system() == "Darwin" else peak / 1024


def current_rss_mb() -> float:
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()


def heavy_runtimes() -> list[str]:
    """torch and every registered backend's runtime library: what a row's process should not carry beside its own."""
    from ..backends import backend_names, get_backend

    names = ["torch"]
    for name in backend_names():
        try:
            names.append(get_backend(name).runtime_module)
        except Exception:  # noqa: BLE001 - a broken plugin has no runtime to report
            continue
    return list(dict.fromkeys(names))


def runtimes_imported() -> list[str]:
    return [name for name in heavy_runtimes() if name in sys.modules]


class ArtifactSubject(Subject):
    def __init__(self, path: str, threads: int | None, batch: int, parallel: int, call: str) -> None:
        from ..runtime import load
        from ..samples import sample_image

        self.models = [load(path, threads=threads) for _ in range(parallel)]
        first = self.models[0]
        if call == "runner":
            fixed = first.input_shape[0]
            if isinstance(fixed, int) and fixed != batch:
                raise ValueError(f"the backend runner takes this artifact's fixed batch of {fixed}, not {batch}")
            self.calls, self.call_name = [m.runner.run for m in self.models], "backend runner.run"
        else:
            self.calls, self.call_name = [m.run for m in self.models], "Model.run"
        self.batch_input = tiled(first.preprocess(sample_image(SAMPLE_IMAGE)), batch)
        m = first.manifest
        self.info = {"model": m.model_name, "target": m.target.name, "backend": m.backend,
                     "backend_version": m.backend_version, "precision": m.precision,
                     "effective_precision": _effective_precision(m.backend, first.runner)}

    def stream(self, source: str | None, frames: int) -> dict[str, Any]:
        from ..samples import sample_clip

        model = self.models[0]
        src: str | int = str(sample_clip()) if source in (None, "", "sample") else source
        if isinstance(src, str) and src.isdigit():
            src = int(src)  # a camera index, as on the command line of `edgevision stream`
        # The stream's pipeline runs its own warm-up inference before the clock starts.
        stream = model.stream(src, top_k=5, max_frames=frames)
        stats = stream.run()
        return {"source": str(src), "frames": int(stats.frames), "dropped": int(stats.dropped),
                "fps": float(stats.fps), "duration_s": float(stats.duration_s), "details": stats.to_dict()}

    def close(self) -> None:
        for model in self.models:
            model.close()


class TorchSubject(Subject):
    """The reference: the original network in PyTorch eager mode, fp32, on the same input."""

    def __init__(self, model_ref: str | None, threads: int | None, batch: int, parallel: int) -> None:
        import torch

        from ..compiler.sources import load_source
        from ..preprocess import preprocess
        from ..samples import sample_image

        if threads:
            torch.set_num_threads(threads)
        spec = load_source(model_ref)
        if spec.module is None:
            raise RuntimeError(f"{model_ref} is an ONNX file: there is no PyTorch module to time")
        module = spec.module.eval()

        def forward(batch_np: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return module(torch.from_numpy(batch_np)).numpy()

        # Parallel requests share the module: eager inference does not mutate it.
        self.calls, self.call_name = [forward] * parallel, "torch eager forward"
        self.batch_input = tiled(preprocess(sample_image(SAMPLE_IMAGE), spec.preprocess, "BGR"), batch)
        self.info = {"model": spec.name, "target": "torch-eager", "backend": "torch",
                     "backend_version": torch.__version__, "precision": "fp32", "effective_precision": "fp32",
                     "threads_effective": torch.get_num_threads()}


def _effective_precision(backend_name: str, runner: Any) -> str | None:
    """Ask the runtime what it really runs (OpenVINO ignores a bf16 hint on CPUs without bf16)."""
    from ..backends import get_backend

    try:
        return get_backend(backend_name).runtime_info(runner).get("inference_precision")
    except Exception:  # noqa: BLE001 - introspection must never fail a benchmark
        return None


def _load(request: dict[str, Any]) -> Subject:
    kind = request["kind"]
    threads, batch, parallel = request.get("threads"), int(request["batch"]), int(request["parallel"])
    if kind == "artifact":
        return ArtifactSubject(request["artifact"], threads, batch, parallel, request.get("call", "model"))
    if kind == "torch":
        return TorchSubject(request.get("model"), threads, batch, parallel)
    if kind == "rpc":
        from .rpc import RpcSubject
        return RpcSubject(request["artifact"], request["rpc"], batch)
    raise ValueError(f"unknown subject kind {kind!r}")


def serve(requests: Any, reply: Callable[[dict[str, Any]], None]) -> None:
    subject: Subject | None = None
    for line in requests:
        if not line.strip():
            continue
        request = json.loads(line)
        op = request.get("op")
        try:
            if op == "load":
                t0 = time.perf_counter()
                subject = _load(request)
                reply({"load_s": time.perf_counter() - t0, "info": subject.info, "call": subject.call_name,
                       "rss_mb": current_rss_mb(), "pid": os.getpid(), "runtimes": runtimes_imported()})
            elif op == "time":
                reply(subject.time(int(request["iterations"]), int(request.get("prime", 0))))
            elif op == "stream":
                reply(subject.stream(request.get("source"), int(request["frames"])))
            elif op == "memory":
                reply({"peak_rss_mb": peak_rss_mb(), "rss_mb": current_rss_mb(), "runtimes": runtimes_imported()})
            elif op == "exit":
                if subject is not None:
                    subject.close()
                reply({"bye": True})
                return
            else:
                reply({"error": f"unknown op {op!r}"})
        except Exception as err:  # noqa: BLE001 - every failure goes back to the parent as one line
            traceback.print_exc(file=sys.stderr)
            reply({"error": " ".join(str(err).split()) or type(err).__name__, "type": type(err).__name__})


def main() -> int:
    # Replies go to a private copy of stdout; anything printed by libraries lands on stderr instead.
    reply_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    out = os.fdopen(reply_fd, "w", buffering=1)

    def reply(message: dict[str, Any]) -> None:
        out.write(json.dumps(message) + "\n")
        out.flush()

    serve(sys.stdin, reply)
    return 0


if __name__ == "__main__":
    sys.exit(main())
