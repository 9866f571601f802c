"""Which precision `--precision auto` keeps, given what passed the gate and how fast each ran."""
from __future__ import annotations

from dataclasses import dataclass

# Medians of 30 interleaved rounds on a shared host still move a few percent run to run: closer than
# this, two candidates are equally fast, and the one that agrees more with the original is kept.
TIE_MARGIN = 0.05


@dataclass(frozen=True)
class Candidate:
    precision: str
    executed: str  # what the host ran: fp16 on a CPU without native fp16 runs as bf16 or f32
    agreement: float  # decisive top-1 agreement with the original, 0..1


def duplicates(candidates: list[Candidate]) -> dict[str, str]:
    """Candidates that ran as another candidate that ran natively: the same kernels, timed once."""
    native = {c.precision for c in candidates if c.executed == c.precision}
    return {c.precision: c.executed for c in candidates if c.executed != c.precision and c.executed in native}


def choose(candidates: list[Candidate], latency_s: dict[str, float]) -> tuple[str, str]:
    """The precision kept, and why in words. ``latency_s`` holds the timed candidates."""
    timed = [c for c in candidates if c.precision in latency_s]
    fastest = min(timed, key=lambda c: latency_s[c.precision])
    tied = [c for c in timed if latency_s[c.precision] <= latency_s[fastest.precision] * (1 + TIE_MARGIN)]
    kept = max(tied, key=lambda c: (c.agreement, -latency_s[c.precision]))
    names = ", ".join(c.precision for c in candidates)
    if kept is fastest:
        return kept.precision, f"fastest of the precisions that passed the gate ({names})"
    return kept.precision, (f"within {TIE_MARGIN:.0%} of the fastest ({fastest.precision}) and agrees more with the "
                            f"original, of the precisions that passed the gate ({names})")
