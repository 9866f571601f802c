"""Benchmark results as plain dataclasses, written as JSON.

Model-only latency and end-to-end stream FPS live in separate fields on purpose: mixing them is
where "FPS is lower than documented" comes from.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..enums import StrEnum
from ..files import write_atomic

SCHEMA = "edgevision-bench/1"


class SubjectKind(StrEnum):
    """What a row measures (``RowResult.kind`` in the JSON)."""

    ARTIFACT = "artifact"  # an artifact on this host
    TORCH = "torch"  # the PyTorch eager reference
    RPC = "rpc"  # an artifact on a remote board


class RowStatus(StrEnum):
    OK = "ok"
    FAILED = "failed"  # measuring broke
    SKIPPED = "skipped"  # cannot run here
    UNSUPPORTED = "unsupported"  # did not compile for its target
    PENDING = "pending"  # not measured yet (never in a finished report)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), on pre-sorted values."""
    if not sorted_values:
        raise ValueError("no samples")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


@dataclass(frozen=True)
class LatencyStats:
    """Per-call latency in milliseconds over the timed iterations (warm-up excluded)."""

    iterations: int
    warmup: int
    mean_ms: float
    p50_ms: float
    p90_ms: float | None  # None only where the timer reports a summary, not every call
    p99_ms: float | None
    min_ms: float
    max_ms: float
    std_ms: float

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float], warmup: int) -> "LatencyStats":
        values = sorted(float(v) for v in samples_ms)
        mean = sum(values) / len(values)
        var = sum((v - mean) ** 2 for v in values) / len(values)
        return cls(iterations=len(values), warmup=warmup, mean_ms=mean,
                   p50_ms=percentile(values, 50), p90_ms=percentile(values, 90),
                   p99_ms=percentile(values, 99), min_ms=values[0], max_ms=values[-1], std_ms=math.sqrt(var))

    @classmethod
    def from_summary(cls, iterations: int, warmup: int, mean_ms: float, p50_ms: float, min_ms: float,
                     max_ms: float, std_ms: float) -> "LatencyStats":
        """For timers that only report aggregates (TVM's time_evaluator): no p90/p99 invented."""
        return cls(iterations=iterations, warmup=warmup, mean_ms=mean_ms, p50_ms=p50_ms, p90_ms=None,
                   p99_ms=None, min_ms=min_ms, max_ms=max_ms, std_ms=std_ms)


@dataclass(frozen=True)
class ModelOnlyResult:
    """The network alone on an already preprocessed tensor: no decode, no resize, no top-k."""

    call: str  # what was timed, e.g. "Model.run", "torch eager forward", "TVM time_evaluator"
    batch: int
    threads: int | None  # None: the runtime's own default (stated as such, never guessed)
    parallel_requests: int
    rounds: int  # timed iterations were split into this many rounds, interleaved with other rows
    latency: LatencyStats
    images: int
    wall_s: float
    throughput_fps: float  # images / wall time of the timed rounds, all parallel requests together


@dataclass(frozen=True)
class EndToEndResult:
    """Frames through ``Model.stream``: decode, preprocess, model and post-processing together."""

    source: str
    frames: int
    dropped: int
    fps: float
    duration_s: float
    details: dict[str, Any] = field(default_factory=dict)  # StreamStats.to_dict(): per-stage percentiles


@dataclass(frozen=True)
class MemoryResult:
    """Resident memory of the process that ran this row alone (interpreter + runtime + model)."""

    rss_after_load_mb: float
    peak_rss_model_only_mb: float
    peak_rss_end_to_end_mb: float | None = None


@dataclass
class RowResult:
    label: str  # e.g. "intel-cpu bf16", "torch eager", "rpi4 fp32 @ rpc"
    kind: SubjectKind
    device: str  # where it ran: "this host" or the RPC board
    status: RowStatus
    reason: str = ""
    artifact: str | None = None
    model: str = ""
    target: str = ""
    backend: str = ""
    backend_version: str = ""
    precision: str = ""
    effective_precision: str | None = None  # what the runtime reports it runs, when it says
    size_mb: float | None = None
    accuracy: dict[str, Any] | None = None  # the manifest's accuracy gate figures
    load_s: float | None = None
    runtimes_imported: list[str] = field(default_factory=list)
    pid: int | None = None
    model_only: ModelOnlyResult | None = None
    end_to_end: EndToEndResult | None = None
    end_to_end_note: str = ""
    memory: MemoryResult | None = None

    def __post_init__(self) -> None:
        self.kind, self.status = SubjectKind(self.kind), RowStatus(self.status)  # also from JSON strings

    @property
    def ok(self) -> bool:
        return self.status == RowStatus.OK


@dataclass(frozen=True)
class HostInfo:
    cpu_model: str
    machine: str
    system: str
    kernel: str
    logical_cpus: int
    cpus_available: int  # this process's affinity mask: what the benchmark could use
    cpu_features: list[str]  # SIMD features that decide which precisions are fast here
    load_average: list[float]  # 1, 5, 15 min when the run started: other work on a shared machine shows here
    python: str
    libraries: dict[str, str]
    date_utc: str
    edgevision: str


@dataclass(frozen=True)
class BenchSettings:
    warmup: int
    iterations: int
    rounds: int
    batch: int
    threads: int | None
    parallel_requests: int
    stream_source: str | None  # None: end-to-end not measured
    stream_frames: int


@dataclass
class BenchReport:
    host: HostInfo
    settings: BenchSettings
    rows: list[RowResult]
    schema: str = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def write_json(self, path: Path) -> Path:
        return write_atomic(Path(path), self.to_json().encode())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BenchReport":
        rows = []
        for raw in data["rows"]:
            row = dict(raw)
            if row.get("model_only"):
                mo = dict(row["model_only"])
                mo["latency"] = LatencyStats(**mo["latency"])
                row["model_only"] = ModelOnlyResult(**mo)
            if row.get("end_to_end"):
                row["end_to_end"] = EndToEndResult(**row["end_to_end"])
            if row.get("memory"):
                row["memory"] = MemoryResult(**row["memory"])
            rows.append(RowResult(**row))
        return cls(host=HostInfo(**data["host"]), settings=BenchSettings(**data["settings"]), rows=rows,
                   schema=data.get("schema", SCHEMA))

    @classmethod
    def read_json(cls, path: Path) -> "BenchReport":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def baseline(self) -> RowResult | None:
        """Torch eager when measured, else the first row measured on this host: what "x" divides by."""
        measured = [r for r in self.rows if r.ok and r.model_only]
        torch_rows = [r for r in measured if r.kind == SubjectKind.TORCH]
        local = [r for r in measured if r.kind != SubjectKind.RPC]
        return (torch_rows or local or measured or [None])[0]


def same_precision(requested: str, effective: str) -> bool:
    """Whether the runtime runs what the artifact asked for, in either naming (fp32 / OpenVINO's f32)."""
    # An int8 model keeps f32 between its int8 kernels: f32 is what OpenVINO reports for it.
    aliases = {"fp32": "f32", "fp16": "f16", "int8": "f32"}
    return aliases.get(requested, requested) == aliases.get(effective, effective)
