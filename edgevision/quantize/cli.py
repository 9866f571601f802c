"""The INT8 flags of `edgevision compile`, mapped into CompileRequest.options."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .qdq import QUANTIZERS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("INT8 quantization (--precision int8)")
    group.add_argument("--calib", type=Path, metavar="DIR_OR_VIDEO",
                       help="calibration images: a folder (jpg/png, recursive) or a video "
                            "(default: the images bundled in edgevision/data/calibration/images)")
    group.add_argument("--calib-size", type=int, metavar="N", help="use at most N calibration samples (default 64)")
    group.add_argument("--calib-every", type=int, metavar="N",
                       help="video: take every N-th frame (default: spread --calib-size frames evenly)")
    group.add_argument("--calib-method", metavar="METHOD",
                       help="minmax (default), entropy, percentile, symmetric (TensorRT's default), "
                            "or a recipe .toml (see edgevision/data/calibration/recipes)")
    group.add_argument("--quantizer", choices=QUANTIZERS,
                       help="onnxruntime (default, QDQ for every backend), nncf (tuned for OpenVINO), or "
                            "nncf-accuracy-control (NNCF returns quantizers to float until top-1 agreement "
                            "with FP32 on the calibration samples holds: --option max_agreement_drop=0.02)")
    group.add_argument("--seed", type=int, help="picks the calibration subset when the source has more (default 0)")
    sensitive = group.add_mutually_exclusive_group()
    sensitive.add_argument("--skip-sensitive", dest="skip_sensitive", action="store_true", default=None,
                           help="keep the first convolution and the classifier in float (the built-in recipes do)")
    sensitive.add_argument("--quantize-all", dest="skip_sensitive", action="store_false",
                           help="quantize the first convolution and the classifier too")
    group.add_argument("--exclude-nodes", metavar="NAMES", help="comma-separated ONNX node names to keep in float")


def options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    if args.calib is not None:
        from ..errors import InputError
        from .reader import check_source

        if args.precision not in (None, "int8"):
            raise InputError(f"--calib only applies to INT8, not --precision {args.precision}",
                             "add --precision int8 or drop --calib")

        check_source(args.calib)
    values = {"calib": str(args.calib) if args.calib is not None else None, "calib_size": args.calib_size,
              "calib_every": args.calib_every, "calib_method": args.calib_method, "quantizer": args.quantizer,
              "seed": args.seed, "skip_sensitive": args.skip_sensitive, "exclude_nodes": args.exclude_nodes}
    return {key: value for key, value in values.items() if value is not None}
