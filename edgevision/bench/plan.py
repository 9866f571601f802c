"""What a benchmark measures: the artifacts given, the targets to compile for (or every one this host
runs), and the torch baseline; targets that cannot run here become result rows, not errors."""
from __future__ import annotations

import contextlib
import json
import logging
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ContextManager, Iterator, Sequence

from ..errors import EdgevisionError, InputError
from ..remote import RemoteDevice
from .artifacts import ensure_compiled, model_slug
from .results import RowResult, RowStatus, SubjectKind
from .session import Candidate, Progress, times_over_rpc

log = logging.getLogger(__name__)
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
# ``status("compiling ...")`` shows a step and yields a callback for its progress (the CLI's console.status).
Status = Callable[[str], ContextManager[Progress]]


@dataclass
class BenchPlan:
    candidates: list[Candidate] = field(default_factory=list)  # rows to measure, in order
    unrunnable: list[RowResult] = field(default_factory=list)  # skipped or unsupported targets: rows as they are


def parse_targets(text: str) -> list[tuple[str, str | None]]:
    """``--targets a,b:bf16`` as [(target, precision or None)]."""
    wanted: list[tuple[str, str | None]] = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        name, _, precision = item.partition(":")
        if precision and precision not in PRECISIONS:
            raise InputError(f"precision {precision!r} in --targets {item!r} is unknown",
                             "use TARGET or TARGET:fp32|fp16|bf16|int8")
        wanted.append((name, precision or None))
    if not wanted:
        raise InputError(f"--targets {text!r} names no target", "write e.g. --targets onnxruntime-cpu,intel-cpu:bf16")
    return wanted


def parse_precisions(text: str | None) -> tuple[str, ...]:
    """``--precisions fp32,int8``: every precision to measure each target at (a ``:PRECISION`` in
    --targets still wins for that target). Empty: each target's default precision."""
    chosen = tuple(dict.fromkeys(p.strip() for p in (text or "").split(",") if p.strip()))
    unknown = [p for p in chosen if p not in PRECISIONS]
    if unknown:
        raise InputError(f"precision {unknown[0]!r} in --precisions is unknown",
                         f"use a comma-separated list of {', '.join(PRECISIONS)}")
    return chosen


def runnable_targets() -> list[str]:
    """Every target this host can compile for and run, aliases (same backend, device, options) once."""
    from ..backends import get_backend
    from ..targets import available_targets

    names, seen = [], set()
    for name, target in sorted(available_targets().items()):
        if target.arch != platform.machine():
            continue  # another device's target (even with a portable payload): name it to bench it here
        try:
            backend = get_backend(target.backend)
            ok = backend.is_available() and not backend.compile_requirements(target) and backend.can_run(target)[0]
        except EdgevisionError:
            ok = False
        key = (target.backend, target.device, target.arch, json.dumps(target.options, sort_keys=True))
        if ok and key not in seen:
            seen.add(key)
            names.append(name)
    return names


def artifact_candidates(paths: Sequence[Path], endpoint: RemoteDevice | None = None) -> list[Candidate]:
    """One row per artifact; with an RPC board, artifacts for another architecture are timed on it."""
    from ..artifact import read_manifest

    found = []
    for path in paths:
        remote = False
        if endpoint is not None:
            try:
                m = read_manifest(path)
                remote = times_over_rpc(m.backend) and m.target.arch != platform.machine()
            except EdgevisionError:
                pass  # the row reports the broken artifact
        found.append(Candidate.remote(path, endpoint) if remote else Candidate.for_artifact(path))
    return found


@contextlib.contextmanager
def _logged_status(first: str) -> Iterator[Progress]:
    log.info("%s", first)
    yield lambda msg: log.info("%s", msg)


def target_candidates(targets: str, model: str | None, out_dir: Path, *, reuse: bool = False,
                      threads: int | None = None, options: dict[str, str] | None = None,
                      endpoint: RemoteDevice | None = None, precisions: Sequence[str] = (),
                      status: Status = _logged_status) -> BenchPlan:
    """Compile (or reuse) the requested targets, each at ``precisions`` (default: its own); a target
    that cannot run here, or cannot take a precision, becomes a row saying so."""
    from ..backends import get_backend
    from ..targets import get_target

    wanted: list[tuple[str, str | None]] = []
    for name, precision in parse_targets(targets):
        names = runnable_targets() if name == "auto" else [name]
        wanted += [(n, p) for n in names for p in ([precision] if precision or not precisions else precisions)]
    plan = BenchPlan()
    done: set[tuple[str, str]] = set()
    for name, precision in wanted:
        target = get_target(name)
        precision = precision or target.default_precision
        if (target.name, precision) in done:
            continue
        done.add((target.name, precision))
        label = f"{target.name} {precision}"
        remote = endpoint is not None and times_over_rpc(target.backend)
        ok, why = (True, "") if remote else get_backend(target.backend).can_run(target)
        if not ok:
            if times_over_rpc(target.backend):
                why += "; time it on the board with --rpc HOST:PORT --key KEY"
            plan.unrunnable.append(RowResult(label=label, kind=SubjectKind.ARTIFACT, device="this host",
                                             status=RowStatus.SKIPPED, reason=f"not runnable here: {why}",
                                             target=target.name, backend=target.backend, precision=precision))
            continue
        try:
            with status(f"compiling {model_slug(model)} for {target.name} ({precision})") as step:
                out = ensure_compiled(model, target.name, precision, out_dir, reuse=reuse, threads=threads,
                                      options=options, progress=step)
        except EdgevisionError as err:
            # The target cannot take this model (an operator, the accuracy gate): a result, not a crash.
            plan.unrunnable.append(RowResult(label=label, kind=SubjectKind.ARTIFACT, device="this host",
                                             status=RowStatus.UNSUPPORTED, reason=f"compile failed: {err}",
                                             target=target.name, backend=target.backend, precision=precision))
            continue
        plan.candidates.append(Candidate.remote(out, endpoint) if remote else Candidate.for_artifact(out, label))
    return plan


def plan_benchmark(artifacts: Sequence[Path], *, targets: str | None = None, model: str | None = None,
                   out_dir: Path = Path("out/bench"), reuse: bool = False, threads: int | None = None,
                   options: dict[str, str] | None = None, endpoint: RemoteDevice | None = None,
                   torch: bool = False, precisions: Sequence[str] = (),
                   status: Status = _logged_status) -> BenchPlan:
    """The rows of ``edgevision bench``: the artifacts, then the targets (``auto`` when no artifact is
    given), with the torch eager baseline first when asked for."""
    plan = BenchPlan(candidates=artifact_candidates(artifacts, endpoint))
    if targets or not artifacts:
        compiled = target_candidates(targets or "auto", model, out_dir, reuse=reuse, threads=threads,
                                     options=options, endpoint=endpoint, precisions=precisions, status=status)
        plan.candidates += compiled.candidates
        plan.unrunnable = compiled.unrunnable
    if torch:
        plan.candidates.insert(0, Candidate.torch_eager(model))
    if not plan.candidates and not plan.unrunnable:
        raise InputError("nothing to measure", "pass artifact files or --targets")
    return plan
