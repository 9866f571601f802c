"""edgevision targets"""
from __future__ import annotations

import argparse

from ..console import Console


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("targets", help="list the devices edgevision can compile for")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, console: Console) -> int:
    from ...backends import get_backend
    from ...errors import TargetError
    from ...targets import available_targets

    rows = []
    for name, target in sorted(available_targets().items()):
        try:
            backend = get_backend(target.backend)
        except TargetError:
            rows.append((name, target.backend, target.device, target.arch, ",".join(target.precisions),
                         "backend plugin missing", target.description))
            continue
        can_run, why = backend.can_run(target)
        here = "runs here" if can_run else f"compile only ({why})" if not backend.compile_requirements(target) \
            else "backend not installed"
        rows.append((name, target.backend, target.device, target.arch, ",".join(target.precisions),
                     here, target.description))
    console.table("targets", ["name", "backend", "device", "arch", "precisions", "on this host", "description"], rows)
    return 0
