"""Run a benchmark: one worker process per row, timing rounds interleaved across rows.

Interleaving matters on small shared machines: a burst of load from elsewhere then slows every
row a little instead of one row a lot, so the ratios between rows stay meaningful.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import select
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import EdgevisionError, InputError
from ..remote import RemoteDevice
from .hostinfo import host_info
from .results import (BenchReport, BenchSettings, EndToEndResult, LatencyStats, MemoryResult, ModelOnlyResult,
                      RowResult)

log = logging.getLogger(__name__)
Progress = Callable[[str], None]
PACKAGE_ROOT = Path(__file__).resolve().parents[2]
LOAD_TIMEOUT_S = 600.0
MIN_STREAM_CHUNK = 25  # frames: each streaming round restarts the pipeline, whose fill costs ~1 frame
STEP_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class Candidate:
    """One row to measure: an artifact, the torch eager reference, or an artifact on a remote board."""

    kind: str  # "artifact", "torch" or "rpc"
    label: str
    artifact: Path | None = None
    model: str | None = None  # torch: model reference (None: the default model)
    rpc: RemoteDevice | None = None
    call: str = "model"  # artifact: "model" times Model.run, "runner" the backend runner alone

    @classmethod
    def for_artifact(cls, path: Path, label: str | None = None, call: str = "model") -> "Candidate":
        return cls("artifact", label or _artifact_label(Path(path)), artifact=Path(path), call=call)

    @classmethod
    def torch_eager(cls, model: str | None = None) -> "Candidate":
        return cls("torch", "torch eager fp32", model=model)

    @classmethod
    def remote(cls, path: Path, endpoint: RemoteDevice) -> "Candidate":
        return cls("rpc", f"{_artifact_label(Path(path))} (RPC)",
                   artifact=Path(path), rpc=endpoint)


def _artifact_label(path: Path) -> str:
    from ..artifact import read_manifest

    try:
        m = read_manifest(path)
    except EdgevisionError:
        return path.name
    return f"{m.target.name} {m.precision}"


class WorkerError(Exception):
    """The worker replied with an error, or died."""


class Worker:
    """A ``python -m edgevision.bench.worker`` child, spoken to one JSON line at a time."""

    def __init__(self) -> None:
        self._stderr = tempfile.TemporaryFile(mode="w+")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p)
        self.proc = subprocess.Popen([sys.executable, "-m", "edgevision.bench.worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._stderr, text=True, env=env, bufsize=1)

    def request(self, timeout_s: float = STEP_TIMEOUT_S, **message: Any) -> dict[str, Any]:
        try:
            self.proc.stdin.write(json.dumps(message) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise WorkerError(self._died()) from None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        if not ready:
            self.kill()
            raise WorkerError(f"no answer to {message.get('op')} within {timeout_s:.0f} s")
        line = self.proc.stdout.readline()
        if not line:
            raise WorkerError(self._died())
        reply = json.loads(line)
        if "error" in reply:
            raise WorkerError(reply["error"])
        return reply

    def _died(self) -> str:
        code = self.proc.wait(timeout=10)
        self._stderr.seek(0)
        tail = " | ".join(ln.strip() for ln in self._stderr.read().splitlines()[-3:] if ln.strip())
        return f"worker process exited with code {code}" + (f": {tail}" if tail else "")

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.request(timeout_s=60, op="exit")
            except WorkerError:
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self._stderr.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def split_rounds(iterations: int, rounds: int) -> list[int]:
    rounds = max(1, min(rounds, iterations))
    return [iterations // rounds + (1 if i < iterations % rounds else 0) for i in range(rounds)]


def check_settings(settings: BenchSettings) -> None:
    for name in ("iterations", "batch", "parallel_requests", "rounds"):
        if getattr(settings, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1, not {getattr(settings, name)}")
    if settings.warmup < 0 or settings.stream_frames < 1:
        raise InputError("--warmup must be >= 0 and --frames >= 1")
    if settings.threads is not None and settings.threads < 1:
        raise InputError(f"--threads must be at least 1, not {settings.threads}", "or leave it out")


def _prepare(candidate: Candidate) -> RowResult:
    """Fill what the manifest says; decide whether this host (or the board) can run the row at all."""
    from ..artifact import read_manifest
    from ..backends import get_backend

    device = f"{candidate.rpc} via TVM RPC" if candidate.rpc else "this host"
    row = RowResult(label=candidate.label, kind=candidate.kind, device=device, status="pending")
    if candidate.kind == "torch":
        row.model, row.target, row.backend, row.precision = candidate.model or "default", "torch-eager", "torch", "fp32"
        return row
    path = Path(candidate.artifact)
    row.artifact = str(path)
    try:
        m = read_manifest(path)
    except EdgevisionError as err:
        row.status, row.reason = "failed", str(err)
        return row
    row.model, row.target, row.backend = m.model_name, m.target.name, m.backend
    row.backend_version, row.precision = m.backend_version, m.precision
    row.size_mb = round(path.stat().st_size / 1e6, 3)
    if m.accuracy is not None:
        a = m.accuracy
        row.accuracy = {"passed": a.passed, "top1_agreement": a.top1_agreement, "top5_agreement": a.top5_agreement,
                        "max_abs_diff": a.max_abs_diff, "images": a.images, "reference": a.reference,
                        "candidate": a.candidate, "note": a.note}
    if candidate.kind == "rpc":
        try:
            remote_ok = get_backend(m.backend).remote_timing is not None
        except EdgevisionError:
            remote_ok = False
        if not remote_ok:
            row.status, row.reason = "skipped", f"--rpc times only backends with remote timing; this one is {m.backend}"
        return row
    host = platform.machine()
    try:
        foreign = not get_backend(m.backend).runs_on(m.target, host)
    except EdgevisionError:
        foreign = m.target.arch != host
    if foreign:
        row.status = "skipped"
        row.reason = (f"compiled for {m.target.arch} ({m.target.name}), this host is {host}: "
                      "run it on the device or with --rpc")
        return row
    try:
        ok, why = get_backend(m.backend).can_run(m.target)
    except EdgevisionError as err:
        ok, why = False, str(err)
    if not ok:
        row.status, row.reason = "skipped", why
    return row


def run_benchmark(candidates: list[Candidate], settings: BenchSettings,
                  progress: Progress | None = None) -> BenchReport:
    """Measure every candidate: load each in its own process, warm up, interleave timed rounds,
    then (separately) stream the source end to end, and collect memory figures."""
    step = progress or (lambda msg: log.info("%s", msg))
    check_settings(settings)
    host = host_info()
    rows = [_prepare(c) for c in candidates]
    workers: dict[int, Worker] = {}
    samples: dict[int, dict[str, Any]] = {}
    try:
        for i, (cand, row) in enumerate(zip(candidates, rows)):
            if row.status != "pending":
                continue
            step(f"loading {row.label} in its own process")
            worker = Worker()
            try:
                reply = worker.request(timeout_s=LOAD_TIMEOUT_S, op="load", kind=cand.kind,
                                       artifact=str(cand.artifact) if cand.artifact else None, model=cand.model,
                                       rpc=_rpc_dict(cand.rpc), threads=settings.threads, batch=settings.batch,
                                       parallel=settings.parallel_requests, call=cand.call)
            except WorkerError as err:
                row.status, row.reason = "failed", f"load failed: {err}"
                worker.close()
                continue
            workers[i] = worker
            _apply_load(row, reply)
            samples[i] = {"latencies_ms": [], "wall_s": 0.0, "images": 0, "call": reply["call"],
                          "rss_after_load_mb": reply["rss_mb"], "rounds": 0}

        local = [i for i in workers if candidates[i].kind != "rpc"]
        for i in [i for i in workers if candidates[i].kind == "rpc"]:
            # The board times itself (time_evaluator runs it once first); nothing to interleave with.
            step(f"timing {rows[i].label} on {rows[i].device}")
            reply = _guarded(rows, workers, i, lambda w: w.request(op="time", iterations=settings.iterations))
            if reply is not None:
                rows[i].model_only = _remote_model_only(reply, samples[i]["call"])
                rows[i].status = "ok"

        for i in local:
            if i in workers and settings.warmup:
                step(f"warming up {rows[i].label} ({settings.warmup} calls)")
                _guarded(rows, workers, i, lambda w: w.request(op="time", iterations=settings.warmup))

        streamers = []
        for i in list(workers):
            if settings.stream_source is None:
                rows[i].end_to_end_note = "not measured (no stream source)"
            elif candidates[i].kind != "artifact":
                rows[i].end_to_end_note = ("not measured: streams run through an artifact"
                                           if candidates[i].kind == "torch" else "not measured on remote boards")
            else:
                streamers.append(i)
        sizes = split_rounds(settings.iterations, settings.rounds)
        chunks = split_rounds(settings.stream_frames, min(len(sizes), max(1, settings.stream_frames // MIN_STREAM_CHUNK)))
        # Streaming rounds are spread over the timing rounds, so both figures see the same machine load.
        stream_at = {len(sizes) * j // len(chunks): size for j, size in enumerate(chunks)} if streamers else {}
        parts: dict[int, list[dict[str, Any]]] = {i: [] for i in streamers}
        peaks: dict[int, float] = {}
        for r, size in enumerate(sizes):
            step(f"timing round {r + 1}/{len(sizes)}: {size} calls per row, rows interleaved")
            for i in _rotated([i for i in local if i in workers], r):
                reply = _guarded(rows, workers, i, lambda w: w.request(op="time", iterations=size, prime=1))
                if reply is not None:
                    s = samples[i]
                    s["latencies_ms"] += reply["latencies_ms"]
                    s["wall_s"] += reply["wall_s"]
                    s["images"] += reply["images"]
                    s["rounds"] += 1
            if r == 0:  # before any streaming: the model-only peak must not include decoding buffers
                for i in [i for i in local if i in workers]:
                    reply = _guarded(rows, workers, i, lambda w: w.request(op="memory"))
                    if reply is not None:
                        peaks[i] = reply["peak_rss_mb"]
            if r in stream_at:
                frames = stream_at[r]
                step(f"streaming {frames} frames per row end to end, rows interleaved")
                for i in _rotated([i for i in parts if i in workers], r):
                    try:
                        parts[i].append(workers[i].request(op="stream", source=settings.stream_source, frames=frames))
                    except WorkerError as err:
                        rows[i].end_to_end_note = f"stream failed: {err}"
                        del parts[i]
        for i in [i for i in local if i in workers and samples[i]["rounds"]]:
            rows[i].model_only = _model_only(samples[i], settings)
            rows[i].status = "ok"

        e2e_peaks: dict[int, float] = {}
        for i, done in parts.items():
            if i not in workers or not done:
                continue
            rows[i].end_to_end = merge_stream_chunks(done)
            reply = _guarded(rows, workers, i, lambda w: w.request(op="memory"))
            if reply is not None:
                e2e_peaks[i] = reply["peak_rss_mb"]
        for i in peaks:
            rows[i].memory = MemoryResult(rss_after_load_mb=round(samples[i]["rss_after_load_mb"], 1),
                                          peak_rss_model_only_mb=round(peaks[i], 1),
                                          peak_rss_end_to_end_mb=round(e2e_peaks[i], 1) if i in e2e_peaks else None)
    finally:
        for worker in workers.values():
            worker.close()
    for row in rows:
        if row.status == "pending":  # a worker that failed mid-way was already marked failed
            row.status = "failed"
    return BenchReport(host=host, settings=settings, rows=rows)


def _rotated(items: list[int], shift: int) -> list[int]:
    """A different row goes first each round, so none always follows the same (heavy) neighbour."""
    if not items:
        return items
    k = shift % len(items)
    return items[k:] + items[:k]


def _rpc_dict(endpoint: RemoteDevice | None) -> dict[str, Any] | None:
    return None if endpoint is None else dataclasses.asdict(endpoint)


def _apply_load(row: RowResult, reply: dict[str, Any]) -> None:
    info = reply["info"]
    row.load_s = round(reply["load_s"], 3)
    row.pid = reply["pid"]
    row.runtimes_imported = reply["runtimes"]
    row.effective_precision = info.get("effective_precision")
    if row.kind == "torch":
        row.model, row.backend_version = info["model"], info["backend_version"]


def _guarded(rows: list[RowResult], workers: dict[int, Worker], i: int,
             action: Callable[[Worker], dict[str, Any]]) -> dict[str, Any] | None:
    """Run one request; a failing row is marked, its worker stopped, and the others go on."""
    try:
        return action(workers[i])
    except WorkerError as err:
        rows[i].status, rows[i].reason = "failed", str(err)
        workers.pop(i).close()
        return None


def merge_stream_chunks(chunks: list[dict[str, Any]]) -> EndToEndResult:
    """One end-to-end figure from interleaved streaming rounds: FPS = all frames / all streaming time.

    Stage percentiles are merged per stage: p50 and p90 the median of the rounds' values, p99 the worst
    round's, mean weighted by frames. Every round's own statistics stay in ``details['rounds']``.
    """
    frames = sum(c["frames"] for c in chunks)
    duration = sum(c["duration_s"] for c in chunks)
    stages: dict[str, dict[str, float]] = {}
    names = {name for c in chunks for name in c["details"].get("stages_ms", {})}
    for name in sorted(names):
        per = [(c["frames"], c["details"]["stages_ms"][name]) for c in chunks if name in c["details"]["stages_ms"]]
        weight = sum(n for n, _ in per) or 1
        stages[name] = {"p50": statistics.median(v["p50"] for _, v in per),
                        "p90": statistics.median(v["p90"] for _, v in per),
                        "p99": max(v["p99"] for _, v in per),
                        "mean": sum(n * v["mean"] for n, v in per) / weight}
    return EndToEndResult(source=chunks[0]["source"], frames=frames, dropped=sum(c["dropped"] for c in chunks),
                          fps=frames / duration if duration > 0 else 0.0, duration_s=duration,
                          details={"rounds": [c["details"] for c in chunks], "stages_ms": stages})


def _remote_model_only(reply: dict[str, Any], call: str) -> ModelOnlyResult:
    if reply.get("latencies_ms"):
        latency = LatencyStats.from_samples(reply["latencies_ms"], warmup=1)
    else:
        latency = LatencyStats.from_summary(reply["iterations"], 1, **reply["summary"])
    return ModelOnlyResult(call=call, batch=reply["images"] // reply["iterations"], threads=reply["remote_threads"],
                           parallel_requests=1, rounds=1, latency=latency, images=reply["images"],
                           wall_s=reply["wall_s"], throughput_fps=reply["images"] / reply["wall_s"])


def _model_only(sample: dict[str, Any], settings: BenchSettings) -> ModelOnlyResult:
    latency = LatencyStats.from_samples(sample["latencies_ms"], settings.warmup)
    wall = sample["wall_s"]
    return ModelOnlyResult(call=sample["call"], batch=settings.batch, threads=settings.threads,
                           parallel_requests=settings.parallel_requests, rounds=sample["rounds"],
                           latency=latency, images=sample["images"], wall_s=wall,
                           throughput_fps=sample["images"] / wall if wall > 0 else 0.0)
