"""edgevision compile MODEL --target NAME"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..console import Console
from ..validate import fraction, non_negative_int, positive_int
from ...quantize.cli import add_arguments as add_int8_arguments
from ...quantize.cli import options_from_args as int8_options
from .info import summary_rows


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


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compile", help="compile a PyTorch/ONNX classifier into an artifact for a target",
                       description="Export MODEL through ONNX, compile it for TARGET and check its accuracy.")
    p.add_argument("model", nargs="?", default=None,
                   help="TorchScript/.pt2/state_dict/.onnx file or module:factory (default: EfficientNet-Lite0)")
    p.add_argument("-t", "--target", default="onnxruntime-cpu", help="target name (see `edgevision targets`) or .toml")
    p.add_argument("-o", "--output", type=Path, help="artifact path (default: MODEL.TARGET.evpkg)")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16", "int8"], help="default: the target's")
    p.add_argument("--arch", help="module:factory building the architecture for a state_dict MODEL")
    p.add_argument("--dynamic-batch", action="store_true", help="export with a dynamic batch dimension")
    p.add_argument("--input-size", type=parse_size, help="network input HxW, e.g. 224 or 240x320")
    p.add_argument("--labels", type=Path, help="text file with one class label per line")
    p.add_argument("--val", type=Path, help="folder of validation images for the accuracy gate")
    p.add_argument("--min-agreement", type=fraction, help="top-1 agreement the gate requires (0-1)")
    p.add_argument("--no-gate", action="store_true", help="skip the accuracy gate (not recommended)")
    p.add_argument("--accuracy-report", type=Path, help="write a per-image CSV of the gate's comparison")
    p.add_argument("--threads", type=positive_int, help="threads recorded for the device runtime")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow unpickling full Python objects from MODEL (runs code from the file)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="backend-specific option, repeatable")
    p.add_argument("--tune", type=non_negative_int, nargs="?", const=-1, metavar="TRIALS",
                   help="TVM targets: tune with MetaSchedule for TRIALS measurements in total "
                        "(without a number: 32 per task, ~12 min for MobileNetV2 on 2 cores)")
    p.add_argument("--tuning-log", type=Path, metavar="DIR",
                   help="TVM targets: tuning database folder, reused when it exists and extended by --tune")
    p.add_argument("--sign", metavar="KEY", help="sign the artifact as it is written: NAME from "
                   "`edgevision keys new`, or a .key file")
    add_int8_arguments(p)
    p.set_defaults(handler=run, option_parsers=[_tuning_options, int8_options])


def _tuning_options(args: argparse.Namespace) -> dict[str, object]:
    options: dict[str, object] = {}
    if args.tune is not None:
        options["tune_trials"] = "auto" if args.tune < 0 else args.tune
    if args.tuning_log is not None:
        options["tuning_log"] = str(args.tuning_log)
    return options


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

    options = parse_options(args.option)
    signer = None
    if args.sign:  # before compiling: a wrong passphrase must not cost a compile
        from ..signing import load_signing_key

        signer = load_signing_key(args.sign)
    for hook in args.option_parsers:  # flags added by other modules (calibration, tuning) map to options
        options.update(hook(args))
    request = CompileRequest(model=args.model, target=args.target, output=args.output, precision=args.precision,
                             arch=args.arch, dynamic_batch=args.dynamic_batch, input_size=args.input_size,
                             labels_file=args.labels, val_dir=args.val, gate=not args.no_gate,
                             min_agreement=args.min_agreement, accuracy_report=args.accuracy_report,
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
