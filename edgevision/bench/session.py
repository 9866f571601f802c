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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

from ..errors import EdgevisionError, InputError
from ..remote import RemoteDevice
from .hostinfo import host_info
from .results import (BenchReport, BenchSettings, EndToEndResult, LatencyStats, MemoryResult, ModelOnlyResult,
                      RowResult, RowStatus, SubjectKind)

log = logging.getLogger(__name__)
Progress = Callable[[str], None]
T = TypeVar("T")
PACKAGE_ROOT = Path(__file__).resolve().parents[2]
LOAD_TIMEOUT_S = 600.0
MIN_STREAM_CHUNK = 25  # frames: each streaming round restarts the pipeline, whose fill costs ~1 frame
STEP_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class Candidate:
    """One row to measure: an artifact, the torch eager reference, or an artifact on a remote board."""

    kind: SubjectKind
    label: str
    artifact: Path | None = None
    model: str | None = None  # torch: model reference (None: the default model)
    rpc: RemoteDevice | None = None
    call: str = "model"  # artifact: "model" times Model.run, "runner" the backend runner alone

    @classmethod
    def for_artifact(cls, path: Path, label: str | None = None, call: str = "model") -> "Candidate":
        return cls(SubjectKind.ARTIFACT, label or _artifact_label(Path(path)), artifact=Path(path), call=call)

    @classmethod
    def torch_eager(cls, model: str | None = None) -> "Candidate":
        return cls(SubjectKind.TORCH, "torch eager fp32", model=model)

    @classmethod
    def remote(cls, path: Path, endpoint: RemoteDevice) -> "Candidate":
        return cls(SubjectKind.RPC, f"{_artifact_label(Path(path))} (RPC)",
                   artifact=Path(path), rpc=endpoint)


def times_over_rpc(backend: str) -> bool:
    """Whether ``--rpc`` can time this backend's artifacts on a remote board (its ``remote_timing``)."""
    from ..backends import get_backend

    try:
        return get_backend(backend).remote_timing is not None
    except EdgevisionError:
        return False


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
    row = RowResult(label=candidate.label, kind=candidate.kind, device=device, status=RowStatus.PENDING)
    if candidate.kind == SubjectKind.TORCH:
        row.model, row.target, row.backend, row.precision = candidate.model or "default", "torch-eager", "torch", "fp32"
        return row
    path = Path(candidate.artifact)
    row.artifact = str(path)
    try:
        m = read_manifest(path)
    except EdgevisionError as err:
        row.status, row.reason = RowStatus.FAILED, str(err)
        return row
    row.model, row.target, row.backend = m.model_name, m.target.name, m.backend
    row.backend_version, row.precision = m.backend_version, m.precision
    row.size_mb = round(path.stat().st_size / 1e6, 3)
    if m.accuracy is not None:
        a = m.accuracy
        row.accuracy = {"passed": a.passed, "top1_agreement": a.top1_agreement, "top5_agreement": a.top5_agreement,
                        "max_abs_diff": a.max_abs_diff, "images": a.images, "reference": a.reference,
                        "candidate": a.candidate, "note": a.note}
    if candidate.kind == SubjectKind.RPC:
        if not times_over_rpc(m.backend):
            row.status, row.reason = RowStatus.SKIPPED, f"--rpc times only backends with remote timing; this one is {m.backend}"
        return row
    host = platform.machine()
    try:
        foreign = not get_backend(m.backend).runs_on(m.target, host)
    except EdgevisionError:
        foreign = m.target.arch != host
    if foreign:
        row.status = RowStatus.SKIPPED
        row.reason = (f"compiled for {m.target.arch} ({m.target.name}), this host is {host}: "
                      "run it on the device or with --rpc")
        return row
    try:
        ok, why = get_backend(m.backend).can_run(m.target)
    except EdgevisionError as err:
        ok, why = False, str(err)
    if not ok:
        row.status, row.reason = RowStatus.SKIPPED, why
    return row


@dataclass
class BenchmarkRow:
    """One row while it is measured: what it measures, its result so far, its worker and its samples."""

    candidate: Candidate
    result: RowResult
    worker: Worker | None = None  # None: not loaded, or stopped after a failure
    call: str = ""  # what the worker times, as it reported at load
    rss_after_load_mb: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    images: int = 0
    rounds: int = 0
    stream_chunks: list[dict[str, Any]] | None = None  # None: not streamed (or its streaming failed)
    peak_model_only_mb: float | None = None
    peak_end_to_end_mb: float | None = None

    @property
    def live(self) -> bool:
        return self.worker is not None

    def load(self, settings: BenchSettings, step: Progress) -> None:
        """Start this row's worker and load its subject there; a failed load marks the row failed."""
        cand, row = self.candidate, self.result
        step(f"loading {row.label} in its own process")
        worker = Worker()
        try:
            reply = worker.request(timeout_s=LOAD_TIMEOUT_S, op="load", kind=cand.kind,
                                   artifact=str(cand.artifact) if cand.artifact else None, model=cand.model,
                                   rpc=_rpc_dict(cand.rpc), threads=settings.threads, batch=settings.batch,
                                   parallel=settings.parallel_requests, call=cand.call)
        except WorkerError as err:
            row.status, row.reason = RowStatus.FAILED, f"load failed: {err}"
            worker.close()
            return
        self.worker = worker
        _apply_load(row, reply)
        self.call, self.rss_after_load_mb = reply["call"], reply["rss_mb"]

    def request(self, **message: Any) -> dict[str, Any] | None:
        """One request; a failing row is marked failed and its worker stopped, and the others go on."""
        try:
            return self.worker.request(**message)
        except WorkerError as err:
            self.result.status, self.result.reason = RowStatus.FAILED, str(err)
            self.stop()
            return None

    def add_timing(self, reply: dict[str, Any]) -> None:
        self.latencies_ms += reply["latencies_ms"]
        self.wall_s += reply["wall_s"]
        self.images += reply["images"]
        self.rounds += 1

    def stream(self, source: str, frames: int) -> None:
        """One streaming round; a failure drops this row's end-to-end figure, not the row."""
        try:
            self.stream_chunks.append(self.worker.request(op="stream", source=source, frames=frames))
        except WorkerError as err:
            self.result.end_to_end_note = f"stream failed: {err}"
            self.stream_chunks = None

    def memory(self) -> MemoryResult:
        e2e = self.peak_end_to_end_mb
        return MemoryResult(rss_after_load_mb=round(self.rss_after_load_mb, 1),
                            peak_rss_model_only_mb=round(self.peak_model_only_mb or 0.0, 1),
                            peak_rss_end_to_end_mb=None if e2e is None else round(e2e, 1))

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.close()
            self.worker = None


def run_benchmark(candidates: list[Candidate], settings: BenchSettings,
                  progress: Progress | None = None) -> BenchReport:
    """Measure every candidate: load each in its own process, warm up, interleave timed rounds,
    then (separately) stream the source end to end, and collect memory figures."""
    step = progress or (lambda msg: log.info("%s", msg))
    check_settings(settings)
    host = host_info()
    rows = [BenchmarkRow(c, _prepare(c)) for c in candidates]
    try:
        for row in rows:
            if row.result.status == RowStatus.PENDING:
                row.load(settings, step)
        local = [r for r in rows if r.live and r.candidate.kind != SubjectKind.RPC]
        for row in [r for r in rows if r.live and r.candidate.kind == SubjectKind.RPC]:
            _time_remote(row, settings, step)
        for row in local:
            if row.live and settings.warmup:
                step(f"warming up {row.result.label} ({settings.warmup} calls)")
                row.request(op="time", iterations=settings.warmup)
        _timed_rounds(local, _streamers(rows, settings), settings, step)
        _collect(rows, local, settings)
    finally:
        for row in rows:
            row.stop()
    for row in rows:
        if row.result.status == RowStatus.PENDING:  # a worker that failed mid-way was already marked failed
            row.result.status = RowStatus.FAILED
    return BenchReport(host=host, settings=settings, rows=[r.result for r in rows])


def _collect(rows: list[BenchmarkRow], local: list[BenchmarkRow], settings: BenchSettings) -> None:
    """The samples become results: model-only figures, end-to-end figures (then their peak), memory."""
    for row in local:
        if row.live and row.rounds:
            row.result.model_only = _model_only(row, settings)
            row.result.status = RowStatus.OK
    for row in rows:
        if row.live and row.stream_chunks:
            row.result.end_to_end = merge_stream_chunks(row.stream_chunks)
            reply = row.request(op="memory")
            if reply is not None:
                row.peak_end_to_end_mb = reply["peak_rss_mb"]
    for row in rows:
        if row.peak_model_only_mb is not None:
            row.result.memory = row.memory()


def _time_remote(row: BenchmarkRow, settings: BenchSettings, step: Progress) -> None:
    # The board times itself (time_evaluator runs it once first); nothing to interleave with.
    step(f"timing {row.result.label} on {row.result.device}")
    reply = row.request(op="time", iterations=settings.iterations)
    if reply is not None:
        row.result.model_only = _remote_model_only(reply, row.call)
        row.result.status = RowStatus.OK


def _streamers(rows: list[BenchmarkRow], settings: BenchSettings) -> list[BenchmarkRow]:
    """The rows measured end to end (artifacts on this host); the others get a note saying why not."""
    streamers = []
    for row in [r for r in rows if r.live]:
        if settings.stream_source is None:
            row.result.end_to_end_note = "not measured (no stream source)"
        elif row.candidate.kind == SubjectKind.TORCH:
            row.result.end_to_end_note = "not measured: streams run through an artifact"
        elif row.candidate.kind != SubjectKind.ARTIFACT:
            row.result.end_to_end_note = "not measured on remote boards"
        else:
            row.stream_chunks = []
            streamers.append(row)
    return streamers


def _timed_rounds(local: list[BenchmarkRow], streamers: list[BenchmarkRow], settings: BenchSettings,
                  step: Progress) -> None:
    """The timed calls in rounds, rows interleaved; streaming rounds spread among them."""
    sizes = split_rounds(settings.iterations, settings.rounds)
    chunks = split_rounds(settings.stream_frames, min(len(sizes), max(1, settings.stream_frames // MIN_STREAM_CHUNK)))
    # Streaming rounds are spread over the timing rounds, so both figures see the same machine load.
    stream_at = {len(sizes) * j // len(chunks): size for j, size in enumerate(chunks)} if streamers else {}
    for r, size in enumerate(sizes):
        step(f"timing round {r + 1}/{len(sizes)}: {size} calls per row, rows interleaved")
        for row in _rotated([row for row in local if row.live], r):
            reply = row.request(op="time", iterations=size, prime=1)
            if reply is not None:
                row.add_timing(reply)
        if r == 0:  # before any streaming: the model-only peak must not include decoding buffers
            for row in [row for row in local if row.live]:
                reply = row.request(op="memory")
                if reply is not None:
                    row.peak_model_only_mb = reply["peak_rss_mb"]
        if r in stream_at:
            frames = stream_at[r]
            step(f"streaming {frames} frames per row end to end, rows interleaved")
            for row in _rotated([row for row in streamers if row.stream_chunks is not None and row.live], r):
                row.stream(settings.stream_source, frames)


def _rotated(items: list[T], shift: int) -> list[T]:
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
    if row.kind == SubjectKind.TORCH:
        row.model, row.backend_version = info["model"], info["backend_version"]


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


def _model_only(row: BenchmarkRow, settings: BenchSettings) -> ModelOnlyResult:
    latency = LatencyStats.from_samples(row.latencies_ms, settings.warmup)
    wall = row.wall_s
    return ModelOnlyResult(call=row.call, batch=settings.batch, threads=settings.threads,
                           parallel_requests=settings.parallel_requests, rounds=row.rounds,
                           latency=latency, images=row.images, wall_s=wall,
                           throughput_fps=row.images / wall if wall > 0 else 0.0)
