"""edgevision verify ARTIFACT: check its signature (--trust), and/or run it on its own CPU (under qemu for
aarch64) against the x86 reference."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..console import Console
from ..validate import non_negative_float


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="check an artifact's signature (--trust), or run it on its device's "
                                      "instruction set (qemu for rpi4) and compare with the x86 reference",
                       description="With --trust: checks that ARTIFACT is signed by one of the given public keys "
                                   "and that every member matches what was signed; nothing is run or extracted "
                                   "(add --run to run it as well). Without --trust: runs ARTIFACT on its own "
                                   "architecture through the installed package -- natively, or under "
                                   "qemu-aarch64-static -cpu cortex-a72 in a venv of the edgevision wheel plus the "
                                   "target's device extra inside a cached Debian arm64 sysroot -- from the bundled "
                                   "photos (decoded and preprocessed there), and compares its logits with the x86 "
                                   "ONNX Runtime logits stored in the artifact (or with --reference), within a "
                                   "tolerance scaled by each photo's logit range; top-1 must be equal.")
    p.add_argument("artifact", type=Path)
    p.add_argument("--trust", nargs="+", type=Path, metavar="PUBKEY",
                   help="public key files (or folders of *.pub) one of which must have signed ARTIFACT")
    p.add_argument("--run", action="store_true", help="with --trust: run the device-side comparison too")
    p.add_argument("--reference", type=Path,
                   help="compare with this .onnx model or x86 artifact on the bundled photos instead")
    p.add_argument("--rtol", type=non_negative_float, default=0.02,
                   help="allowed |difference| as a fraction of each photo's logit range (default 0.02)")
    p.add_argument("--atol", type=non_negative_float, default=1e-3, help="allowed |difference| added to that (default 1e-3)")
    p.add_argument("--wheel", type=Path, help="the edgevision wheel to install on the emulated device "
                                              "(default: $EDGEVISION_WHEEL, the wheelhouse, or built from this checkout)")
    p.add_argument("--no-build", action="store_true",
                   help="fail instead of building the arm64 sysroot (~2 min, ~420 MB, needs network)")
    p.add_argument("--no-record", action="store_true",
                   help="do not store the result in the artifact's manifest (payload.device_check)")
    p.add_argument("--key", help="re-sign a signed artifact after recording the result (recording changes the "
                                 "manifest, which breaks its signature; without --key a signed artifact is not "
                                 "recorded)")
    p.set_defaults(handler=run)


def check_signature(args: argparse.Namespace, console: Console) -> None:
    from ...artifact import TrustPolicy, open_artifact

    policy = TrustPolicy.of(args.trust, require_signature=True, source="--trust")
    with open_artifact(args.artifact, policy) as artifact:
        artifact.verify_members()
        m, sig = artifact.manifest, artifact.signature
    signer = next(k for k in policy.keys if k.key_id == sig.key_id)
    console.table(f"verify {args.artifact}", ["field", "value"],
                  [("signature", sig.describe()), ("trusted key", signer.source),
                   ("covers", f"manifest.json and {len(m.files)} member(s), target {m.target.name} "
                              f"({m.target.arch}), {m.backend}, model {m.model_name}")])
    console.print(f"PASS: {args.artifact.name} is signed by trusted key {sig.key_id} and unchanged since")


def run(args: argparse.Namespace, console: Console) -> int:
    from ...artifact import NO_POLICY, open_artifact
    from ...emulation.verify import LogitTolerance, record_verification, verify_artifact
    from ...errors import AccuracyGateFailed

    if args.trust:
        check_signature(args, console)
        if not args.run:
            return 0
    with open_artifact(args.artifact, NO_POLICY, enforce=False) as artifact:
        signed = artifact.signature.signed
    signer = None
    if signed and args.key and not args.no_record:
        from ..signing import load_signing_key

        signer = load_signing_key(args.key)  # before the minutes-long run
    tolerance = LogitTolerance(rtol=args.rtol, atol=args.atol)
    with console.status(f"verifying {args.artifact.name}") as step:
        step("installing the package on the device and running it (under qemu this takes minutes)")
        result = verify_artifact(args.artifact, tolerance=tolerance, reference=args.reference,
                                 build_sysroot=not args.no_build, wheel=args.wheel)
        if not args.no_record and (not signed or signer is not None):
            step("recording the result in the manifest" + (f" and re-signing with {signer.key_id}" if signer else ""))
            record_verification(args.artifact, result, signer=signer)
        elif not args.no_record:
            console.info(f"note: not recorded in {args.artifact.name}: it is signed, and recording would break "
                         "the signature (pass --key KEY to record and re-sign)")
    installed = (f"edgevision[{result.install['extra']}] from {result.install['wheel']}, "
                 f"venv {result.install['venv_mb']:.0f} MB" if result.install else "this Python's edgevision")
    process = result.process
    rows = [("device", result.device), ("installed", installed), ("reference", result.reference),
            ("photos", f"{result.inputs} ({', '.join(result.images)}), decoded and preprocessed on the device"),
            ("max |diff|", f"{result.max_abs_diff:.3g} (allowed {result.max_allowed:.3g}: atol {tolerance.atol:g} "
                           f"+ rtol {tolerance.rtol:g} x logit range)"),
            ("top-1 agreement", f"{result.top1_agreement:.0%} ({'; '.join(result.top1)})"),
            ("runtime only", "yes" if not (process.get("forbidden_modules") or process.get("compiler_libraries"))
             else f"NO: {process.get('forbidden_modules', []) + process.get('compiler_libraries', [])}"),
            ("time", f"{result.seconds:.1f} s wall ({result.load_s:.1f} s import+load, "
                     f"{result.run_s_per_input:.2f} s per photo{'; emulated: not speed' if 'qemu' in result.device else ''})")]
    console.table(f"verify {args.artifact}", ["field", "value"], rows)
    if not result.passed:
        raise AccuracyGateFailed(f"{args.artifact.name} on {result.device} differs from {result.reference} by "
                                 f"{result.max_abs_diff:.3g} (allowed {result.max_allowed:.3g}), top-1 agreement "
                                 f"{result.top1_agreement:.0%}",
                                 "report it: the device build computes something else than the reference")
    console.print(f"PASS: {args.artifact.name} matches the reference on {result.device}")
    return 0
