"""edgevision compile MODEL --target NAME"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

from ..console import Console
from ..validate import fraction, positive_int
from ...quantize.cli import add_arguments as add_int8_arguments
from ...quantize.cli import options_from_args as int8_options
from .info import summary_rows
from ...preprocess import DEFAULT_CROP_PCT


def parse_size(text: str) -> tuple[int, int]:
    try:
        parts = [int(p) for p in text.lower().replace("x", ",").split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"input size {text!r} must look like 224 or 240x320") from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 8:
        raise argparse.ArgumentTypeError(f"input size {text!r} must look like 224 or 240x320")
    return parts[0], parts[1]


def _numbers(text: str) -> list[float]:
    try:
        values = [float(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} must be a number or three, e.g. 0.5 or 0.5,0.5,0.5") from None
    if len(values) not in (1, 3):
        raise argparse.ArgumentTypeError(f"{text!r} must be a number or three, e.g. 0.5 or 0.5,0.5,0.5")
    return values if len(values) == 3 else values * 3


CARD_FLAGS = ("resize", "crop_pct", "interpolation", "mean", "std", "scale", "offset", "channel_order", "layout",
              "input_dtype", "scores")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compile", help="compile a PyTorch/ONNX classifier into an artifact for a target",
                       description="Export MODEL through ONNX, compile it for TARGET and check its accuracy.")
    p.add_argument("model", nargs="?", default=None,
                   help="TorchScript/.pt2/state_dict/.onnx file or module:factory (default: EfficientNet-Lite0)")
    p.add_argument("-t", "--target", default="onnxruntime-cpu", help="target name (see `edgevision targets`) or .toml")
    p.add_argument("-o", "--output", type=Path, help="artifact path (default: MODEL.TARGET.evpkg)")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16", "int8", "auto"],
                   help="default: the target's; auto: compile every precision the target supports, gate and "
                        "time each here, keep the fastest that passes")
    p.add_argument("--arch", help="module:factory building the architecture for a state_dict MODEL")
    p.add_argument("--dynamic-batch", action="store_true", help="export with a dynamic batch dimension")
    p.add_argument("--input-size", type=parse_size, help="network input HxW, e.g. 224 or 240x320")
    p.add_argument("--labels", help="class labels: a text file (one a line) or an inline list, e.g. 0,180")
    card = p.add_argument_group("model card (preprocessing and outputs; flags win over --card and metadata)")
    card.add_argument("--card", type=Path, metavar="FILE",
                      help="model card TOML (default: MODEL.card.toml beside the model, when present)")
    card.add_argument("--model-output", metavar="NAME|INDEX",
                      help="which output is the classifier's (default: the only one, or 'logits')")
    card.add_argument("--resize", choices=["crop", "direct", "letterbox"],
                      help="crop: short side then centre crop; direct: stretch; letterbox: keep aspect, pad")
    card.add_argument("--crop-pct", type=float, help=f"crop mode: input size / short side (default {DEFAULT_CROP_PCT})")
    card.add_argument("--interpolation", choices=["nearest", "bilinear", "bicubic", "area", "lanczos"])
    card.add_argument("--mean", type=_numbers, help="per-channel mean in 0-1 units, e.g. 0.485,0.456,0.406")
    card.add_argument("--std", type=_numbers, help="per-channel std in 0-1 units, e.g. 0.229,0.224,0.225")
    card.add_argument("--scale", type=_numbers, help="tensor = pixel * scale + offset (pixels 0-255)")
    card.add_argument("--offset", type=_numbers, help="see --scale")
    card.add_argument("--channel-order", choices=["RGB", "BGR"])
    card.add_argument("--layout", choices=["NCHW", "NHWC"])
    card.add_argument("--input-dtype", choices=["float32", "uint8"])
    card.add_argument("--scores", choices=["logits", "probabilities"],
                      help="what the model outputs (default: probabilities when it ends in Softmax/Sigmoid)")
    card.add_argument("--rewrite", action="append", default=[], metavar="NAME",
                      help="exact graph rewrite before the backend (global-pool), repeatable")
    p.add_argument("--val", type=Path,
                   help="validation images for the accuracy gate (default: the 293 bundled ones); class "
                        "sub-folders named by label or class index make the gate measure real accuracy")
    p.add_argument("--min-agreement", type=fraction,
                   help="top-1 agreement (0-1) the gate requires where the original is decisive "
                        "(default fp32 0.99, fp16/bf16 0.97, int8 0.95)")
    p.add_argument("--max-drop", type=float, metavar="POINTS",
                   help="labelled --val: largest top-1 accuracy drop in points (default fp32 0.1, "
                        "fp16/bf16 0.3, int8 1.0)")
    p.add_argument("--no-gate", action="store_true", help="skip the accuracy gate (not recommended)")
    p.add_argument("--accuracy-report", type=Path, help="write a per-image CSV of the gate's comparison")
    p.add_argument("--threads", type=positive_int, help="threads recorded for the device runtime")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow unpickling full Python objects from MODEL (runs code from the file)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="backend-specific option, repeatable")
    p.add_argument("--sign", metavar="KEY", help="sign the artifact as it is written: NAME from "
                   "`edgevision keys new`, or a .key file")
    add_int8_arguments(p)
    p.set_defaults(handler=run, option_parsers=[*add_backend_arguments(p), int8_options])


def add_backend_arguments(parser: argparse.ArgumentParser) -> list[Callable[[argparse.Namespace], dict[str, Any]]]:
    """Each registered backend's own flags (``Backend.add_cli_arguments``); returns the hooks that map
    them to ``--option`` keys (``Backend.options_from_cli``)."""
    import logging

    from ...backends import backend_names, get_backend

    hooks = []
    for name in backend_names():
        try:
            backend = get_backend(name)
        except Exception as err:  # noqa: BLE001 - a broken plugin must not take the CLI down
            logging.getLogger(__name__).warning("backend %s adds no flags: %s", name, err)
            continue
        backend.add_cli_arguments(parser)
        hooks.append(backend.options_from_cli)
    return hooks


def parse_options(pairs: list[str]) -> dict[str, str]:
    from ...errors import InputError

    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"--option {pair!r} is not KEY=VALUE", "write e.g. --option tune_trials=64")
        options[key] = value
    return options


def run(args: argparse.Namespace, console: Console) -> int:
    from ...compiler import CompileRequest, compile_model
    from ...compiler.card import labels_from

    options = parse_options(args.option)
    signer = None
    if args.sign:  # before compiling: a wrong passphrase must not cost a compile
        from ..signing import load_signing_key

        signer = load_signing_key(args.sign)
    for hook in args.option_parsers:  # flags added by other modules (calibration, tuning) map to options
        options.update(hook(args))
    # A labels file goes through as a file (so no output may overwrite it); anything else is an inline list.
    labels_file = Path(args.labels) if args.labels is not None and Path(args.labels).is_file() else None
    labels = None if args.labels is None or labels_file else labels_from(args.labels, "--labels")
    card_fields = {name: getattr(args, name) for name in CARD_FLAGS if getattr(args, name) is not None}
    request = CompileRequest(model=args.model, target=args.target, output=args.output, precision=args.precision,
                             arch=args.arch, dynamic_batch=args.dynamic_batch, input_size=args.input_size,
                             labels=list(labels) if labels else None, labels_file=labels_file, card=args.card, card_fields=card_fields,
                             model_output=args.model_output, rewrites=tuple(args.rewrite),
                             val_dir=args.val, gate=not args.no_gate,
                             min_agreement=args.min_agreement, max_drop=args.max_drop, accuracy_report=args.accuracy_report,
                             trust_remote_code=args.trust_remote_code, threads=args.threads, options=options,
                             signer=signer)
    with console.status("compiling") as step:
        result = compile_model(request, progress=step)
    signature = f"ed25519, key {signer.key_id}" if signer else "unsigned"
    console.table(f"{result.path}", ["field", "value"],
                  summary_rows(result.path, result.manifest, signature=signature))
    if result.manifest.accuracy and result.manifest.accuracy.note:
        console.info(f"note: {result.manifest.accuracy.note}")
    console.print(f"wrote {result.path}")
    return 0
