"""edgevision info ARTIFACT"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..console import Console


def summary_rows(path: Path, manifest, integrity: str | None = None, signature: str | None = None) -> list[tuple[str, str]]:
    m = manifest
    rows = [("model", m.model_name), ("target", f"{m.target.name} — {m.target.description}"),
            ("backend", f"{m.backend} {m.backend_version} on {m.target.device} ({m.target.arch})"),
            ("precision", m.precision),
            ("input", f"{m.input.name} {list(m.input.shape)} {m.input.dtype} {m.input.layout}"),
            ("output", f"{m.output.name} {list(m.output.shape)}"),
            ("preprocess", m.preprocess.describe()),
            ("scores", "the model's own probabilities" if m.scores == "probabilities" else "logits (softmax applied)"),
            ("labels", f"{len(m.labels)} ({', '.join(m.labels[:3])}, ...)")]
    if m.accuracy:
        a = m.accuracy
        rows.append(("accuracy gate", f"{'PASS' if a.passed else 'FAIL'}: {a.candidate} vs {a.reference}: "
                     f"{a.summary()}; top-5 {a.top5_agreement:.1%}, max|diff| {a.max_abs_diff:.3g}, "
                     f"cosine {a.mean_cosine:.6f}, KL {a.mean_kl:.3g}; measured on payload {a.payload_sha256[:12]}"))
        if a.spread:
            rows.append(("validation", f"{a.validation or '?'}: " + ", ".join(f"{k} {v}" for k, v in a.spread.items())
                         + f"; {a.distinct_classes} distinct top-1 classes"))
    else:
        rows.append(("accuracy gate", "not run"))
    quant = m.payload.get("quantization")
    if quant:
        calib, recipe = quant.get("calibration", {}), quant.get("recipe", {})
        rows.append(("quantization", f"{quant.get('format')} by {quant.get('quantizer')}, {recipe.get('method')} "
                     f"{recipe.get('activation_type')} activations, {calib.get('samples')} samples "
                     f"from {calib.get('source')}"))
        if quant.get("float_layers"):
            rows.append(("float layers", "; ".join(f"{f['layer']} ({f['why']})" for f in quant["float_layers"])))
    auto = m.payload.get("precision_auto")
    if auto:
        rows.append(("precision auto", f"chose {auto['chosen']}: " + "; ".join(map(_auto_candidate, auto["candidates"]))))
    if m.payload.get("note"):  # a backend's word on what happens on the device, e.g. engine built at first load
        rows.append(("device note", str(m.payload["note"])))
    rows += [("toolchain", ", ".join(f"{k} {v}" for k, v in sorted(m.toolchain.items()))),
             ("source", f"{m.source.get('kind', '?')} {m.source.get('ref', '')}"),
             ("created", m.created),
             ("files", ", ".join(f"{n} ({h[:12]})" for n, h in sorted(m.files.items())))]
    if path.is_file():
        rows.append(("size", f"{path.stat().st_size / 1e6:.2f} MB"))
    if integrity:
        rows.append(("integrity", integrity))
    if signature:
        rows.append(("signature", signature))
    return rows


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="check an artifact and show its manifest and signature",
                       description="Checks ARTIFACT as loading does (every member's sha256, the manifest, the "
                                   "signature) without running it, then shows what it holds. Exits 2 with one "
                                   "line on what loading would refuse as damaged or tampered with.")
    p.add_argument("artifact", type=Path)
    p.add_argument("--json", action="store_true", help="print the whole manifest as JSON")
    p.add_argument("--no-verify", action="store_true",
                   help="skip hashing the members (the manifest and signature are still checked)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, console: Console) -> int:
    from ...artifact import open_artifact

    # The device's trust policy is reported, not enforced: info is how one finds out why a load is refused.
    with open_artifact(args.artifact, enforce=False) as artifact:
        if not args.no_verify:
            artifact.verify_members()
        manifest = artifact.manifest
        integrity = ("NOT verified (--no-verify): members not hashed" if args.no_verify else
                     f"verified: manifest and {len(manifest.files)} member(s) match their sha256")
        signature = artifact.signature.describe()
    if args.json:
        data = manifest.to_dict()
        data["_checked"] = {"integrity": integrity, "signature": signature}
        print(json.dumps(data, indent=2, sort_keys=True))
        return 0
    console.table(str(args.artifact), ["field", "value"], summary_rows(args.artifact, manifest, integrity, signature))
    return 0


def _auto_candidate(c: dict) -> str:
    """One `--precision auto` candidate in words."""
    if not c.get("passed"):
        return f"{c['precision']} FAIL"
    if c.get("same_as"):
        return f"{c['precision']} ran as {c['same_as']}, not timed apart, agreement {c.get('agreement', 0):.1%}"
    ran_as = f" (ran as {c['executed']})" if c.get("executed") not in (None, c["precision"]) else ""
    return f"{c['precision']} {c.get('ratio_to_fp32', '?')}x fp32, agreement {c.get('agreement', 0):.1%}{ran_as}"
