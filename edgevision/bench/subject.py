"""What a benchmark worker times: a :class:`Subject` (one callable per parallel request) and the timing
loop shared by every kind of subject (artifact, torch, remote board)."""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

import numpy as np


def tiled(sample: np.ndarray, batch: int) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(sample[None], batch, axis=0), dtype=np.float32)


class Subject:
    """Something to time: ``calls`` holds one callable per parallel request, each with its own state."""

    calls: list[Callable[[np.ndarray], Any]]
    batch_input: np.ndarray
    call_name: str
    info: dict[str, Any]

    def time(self, iterations: int, prime: int) -> dict[str, Any]:
        return time_calls(self, iterations, prime)

    def stream(self, source: str | None, frames: int) -> dict[str, Any]:
        raise NotImplementedError(f"end-to-end streaming is not measured for {self.call_name}")

    def close(self) -> None:
        pass


def time_calls(subject: Subject, iterations: int, prime: int = 0) -> dict[str, Any]:
    """Run ``iterations`` timed calls spread over the parallel requests; per-call latencies and wall time."""
    x = subject.batch_input
    for call in subject.calls:
        for _ in range(prime):
            call(x)
    parallel = len(subject.calls)
    shares = [iterations // parallel + (1 if i < iterations % parallel else 0) for i in range(parallel)]
    latencies: list[list[float]] = [[] for _ in range(parallel)]
    errors: list[BaseException] = []

    def loop(i: int) -> None:
        call, out, clock = subject.calls[i], latencies[i], time.perf_counter
        try:
            for _ in range(shares[i]):
                t0 = clock()
                call(x)
                out.append((clock() - t0) * 1e3)
        except BaseException as err:  # noqa: BLE001 - re-raised in the main thread
            errors.append(err)

    start = time.perf_counter()
    if parallel == 1:
        loop(0)
    else:
        threads = [threading.Thread(target=loop, args=(i,)) for i in range(parallel)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    wall = time.perf_counter() - start
    if errors:
        raise errors[0]
    samples = [v for part in latencies for v in part]
    return {"latencies_ms": samples, "wall_s": wall, "images": len(samples) * len(x)}
