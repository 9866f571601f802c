"""edgevision sign ARTIFACT --key KEY"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..console import Console


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sign", help="sign (or re-sign) an artifact with an Ed25519 key",
                       description="Checks every member of ARTIFACT, then writes it again with a signature by "
                                   "KEY (replacing any earlier one), atomically: in place, or to --output.")
    p.add_argument("artifact", type=Path)
    p.add_argument("--key", required=True, help="NAME from `edgevision keys new`, or a .key file")
    p.add_argument("-o", "--output", type=Path, help="write the signed artifact here instead of in place")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, console: Console) -> int:
    from ...artifact import sign_artifact
    from ..signing import load_signing_key

    key = load_signing_key(args.key)
    out = sign_artifact(args.artifact, key, args.output)
    console.print(f"signed {out} with key {key.key_id}")
    return 0
