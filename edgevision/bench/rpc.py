"""Model-only timing on a remote board (``edgevision.remote``: the backend's ``time_remote``), as a worker subject.

The board times itself (TVM: ``time_evaluator``): the network round trip is not in the figures, and
there is no end-to-end stream (the frames would come from this host, not the board's camera).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .subject import Subject


class RpcSubject(Subject):
    def __init__(self, artifact: str, rpc: dict[str, Any], batch: int) -> None:
        from ..artifact import read_manifest
        from ..backends import get_backend
        from ..remote import RemoteDevice

        self.artifact = Path(artifact)
        self.device = RemoteDevice(rpc["host"], int(rpc["port"]), rpc.get("key"),
                                   int(rpc.get("session_timeout_s") or 600))
        m = read_manifest(self.artifact)
        fixed = m.input.shape[0]
        if isinstance(fixed, int) and fixed != batch:
            raise ValueError(f"the remote board runs this artifact's fixed batch of {fixed}, not {batch}")
        self.batch = batch
        self.calls, self.call_name = [], f"{get_backend(m.backend).remote_timing} (number=1)"
        self.info = {"model": m.model_name, "target": m.target.name, "backend": m.backend,
                     "backend_version": m.backend_version, "precision": m.precision,
                     "effective_precision": None, "device": str(self.device)}

    def time(self, iterations: int, prime: int) -> dict[str, Any]:
        from ..remote import bench_remote

        # number=1: each repeat is one inference, so the repeats are per-call latencies.
        timing = bench_remote(self.artifact, self.device, number=1, repeat=iterations)
        costs = getattr(timing, "costs_ms", None)
        summary = {"mean_ms": timing.mean_ms, "p50_ms": timing.median_ms, "min_ms": timing.min_ms,
                   "max_ms": timing.max_ms, "std_ms": timing.std_ms}
        return {"latencies_ms": list(costs) if costs else None, "summary": summary, "iterations": iterations,
                "wall_s": timing.mean_ms * iterations / 1e3, "images": iterations * self.batch,
                "remote_threads": timing.remote_threads, "upload_s": timing.upload_s,
                "output_max_abs_diff": timing.output_max_abs_diff, "device": timing.device}
