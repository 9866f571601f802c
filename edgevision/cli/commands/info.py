"""edgevision info ARTIFACT"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..console import Console


def summary_rows(path: Path, manifest) -> list[tuple[str, str]]:
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
        rows.append(("accuracy gate", f"{'PASS' if a.passed else 'FAIL'}: {a.candidate} vs {a.reference} on "
                     f"{a.images} images: top-1 {a.top1_agreement:.1%}, top-5 {a.top5_agreement:.1%}, "
                     f"max|diff| {a.max_abs_diff:.3g}, cosine {a.mean_cosine:.6f}, KL {a.mean_kl:.3g} "
                     f"(need {a.criterion} {a.threshold:.0%})"))
    else:
        rows.append(("accuracy gate", "not run"))
    quant = m.payload.get("quantization")
    if quant:
        calib, recipe = quant.get("calibration", {}), quant.get("recipe", {})
        rows.append(("quantization", f"{quant.get('format')} by {quant.get('quantizer')}, {recipe.get('method')} "
                     f"{recipe.get('activation_type')} activations, {calib.get('samples')} samples "
                     f"from {calib.get('source')}"))
    if m.payload.get("note"):  # a backend's word on what happens on the device, e.g. engine built at first load
        rows.append(("device note", str(m.payload["note"])))
    rows += [("toolchain", ", ".join(f"{k} {v}" for k, v in sorted(m.toolchain.items()))),
             ("source", f"{m.source.get('kind', '?')} {m.source.get('ref', '')}"),
             ("created", m.created),
             ("files", ", ".join(f"{n} ({h[:12]})" for n, h in sorted(m.files.items())))]
    if path.is_file():
        rows.append(("size", f"{path.stat().st_size / 1e6:.2f} MB"))
    return rows


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="show an artifact's manifest")
    p.add_argument("artifact", type=Path)
    p.add_argument("--json", action="store_true", help="print the whole manifest as JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, console: Console) -> int:
    from ...artifact import read_manifest

    manifest = read_manifest(args.artifact)
    if args.json:
        data = manifest.to_dict()
        print(json.dumps(data, indent=2, sort_keys=True))
        return 0
    console.table(str(args.artifact), ["field", "value"], summary_rows(args.artifact, manifest))
    return 0
