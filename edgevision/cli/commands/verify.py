"""edgevision verify ARTIFACT: run an artifact on its own CPU (under qemu for aarch64) against the x86 reference."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..console import Console
from ..validate import non_negative_float


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="run an artifact on its device's instruction set (qemu for rpi4) "
                                      "and compare with the x86 reference",
                       description="Loads ARTIFACT through edgevision.runtime on its own architecture -- "
                                   "natively, or under qemu-aarch64-static -cpu cortex-a72 in a cached "
                                   "Debian arm64 sysroot -- and compares its outputs with the x86 ONNX "
                                   "Runtime outputs stored in the artifact (or with --reference).")
    p.add_argument("artifact", type=Path)
    p.add_argument("--reference", type=Path,
                   help="compare with this .onnx model or x86 artifact on the bundled photos instead")
    p.add_argument("--tolerance", type=non_negative_float, default=1e-4, help="max |difference| allowed (default 1e-4)")
    p.add_argument("--no-build", action="store_true",
                   help="fail instead of building the arm64 sysroot (~2 min, ~420 MB, needs network)")
    p.add_argument("--no-record", action="store_true",
                   help="do not store the result in the artifact's manifest (payload.device_check)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, console: Console) -> int:
    from ...emulation.verify import record_verification, verify_artifact
    from ...errors import AccuracyGateFailed

    with console.status(f"verifying {args.artifact.name}") as step:
        step("starting the device-side run (under qemu this takes a minute)")
        result = verify_artifact(args.artifact, tolerance=args.tolerance, reference=args.reference,
                                 build_sysroot=not args.no_build)
        if not args.no_record:
            step("recording the result in the manifest")
            record_verification(args.artifact, result)
    rows = [("device", result.device), ("reference", result.reference), ("inputs", str(result.inputs)),
            ("max |diff|", f"{result.max_abs_diff:.3g} (tolerance {result.tolerance:g})"),
            ("top-1 agreement", f"{result.top1_agreement:.0%}"),
            ("photo through the device path", result.chelsea_top1),
            ("time", f"{result.seconds:.1f} s wall ({result.load_s:.1f} s import+load, "
                     f"{result.run_s_per_input:.2f} s per input)")]
    console.table(f"verify {args.artifact}", ["field", "value"], rows)
    if not result.passed:
        raise AccuracyGateFailed(f"{args.artifact.name} on {result.device} differs from {result.reference} by "
                                 f"{result.max_abs_diff:.3g} (tolerance {result.tolerance:g})",
                                 "report it: the device build computes something else than the reference")
    console.print(f"PASS: {args.artifact.name} matches the reference on {result.device}")
    return 0
