"""INT8 post-training quantization: calibration data in, explicit QDQ ONNX out.

The compiler calls :func:`quantize_for_compile`; the accuracy gate then compares the quantized
model, run by the target's backend, with the FP32 original.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ..backends.base import option, option_names, read_options
from ..errors import InputError
from ..preprocess import PreprocessConfig
from .accuracy_control import DEFAULT_MAX_DROP, MAX_ITERATIONS
from .qdq import (QUANTIZERS, check_nncf_recipe, excluded_nodes, prepare, quantize_nncf, quantize_onnxruntime,
                  sensitive_nodes)
from .reader import BUNDLED_DIR, CalibrationSpec, TensorReader, calibration_images, calibration_reader, check_source
from .recipe import METHODS, QuantRecipe, load_recipe

if TYPE_CHECKING:
    import numpy as np

    from ..backends.base import Backend

__all__ = ["BUNDLED_DIR", "CalibrationSpec", "METHODS", "QUANTIZERS", "QuantRecipe", "QuantizeOptions",
           "TensorReader", "calibration_images", "calibration_reader", "check_source", "load_recipe", "quantize_for_compile",
           "sensitive_nodes"]
log = logging.getLogger(__name__)

# Printed with the gate's failure: what to try when INT8 disagrees with the original.
GATE_FIX = ("calibrate on more images like the ones the model will see (--calib DIR, --calib-size), "
            "try --calib-method percentile, keep more layers float with --exclude-nodes, "
            "or lower the bar with --min-agreement")


def _fraction(key: str, value: Any) -> float:
    try:
        fraction = float(value)
    except (TypeError, ValueError):
        fraction = -1.0
    if not 0.0 <= fraction < 1.0:
        raise InputError(f"{key} must be a fraction from 0 to 1, not {value!r}", f"pass e.g. --option {key}=0.02")
    return fraction


def _quantizer(key: str, value: Any) -> str:
    quantizer = str(value)
    if quantizer not in QUANTIZERS:
        raise InputError(f"unknown quantizer {quantizer!r}", f"use one of {', '.join(QUANTIZERS)}")
    return quantizer


@dataclass(frozen=True)
class Int8Options:
    """The ``--option`` keys of ``--precision int8`` (the INT8 flags of `edgevision compile` set them), typed:
    parsed by the one options parser of :mod:`edgevision.backends.base`."""

    calib: Path | None = option(None, "calibration images: a folder or a video (default: the bundled images)")
    calib_size: int = option(64, "calibration samples")
    calib_every: int | None = option(None, "a video: take every Nth frame")
    seed: int = option(0, "which calibration samples are drawn")
    calib_method: str | None = option(None, "a calibration recipe name or .toml path (default: the backend's)")
    quantizer: str = option("onnxruntime", "onnxruntime (QDQ for every backend), nncf, or nncf-accuracy-control "
                                           "(NNCF returns quantizers to float until agreement holds)", _quantizer)
    max_agreement_drop: float = option(DEFAULT_MAX_DROP, "nncf-accuracy-control: how far top-1 agreement with FP32 on "
                                                         "the calibration samples may fall (0.02: to 98%)",
                                       _fraction)
    max_float_groups: int = option(MAX_ITERATIONS, "nncf-accuracy-control: at most this many search iterations (each "
                                                   "returns one group of quantizers to float)")
    skip_sensitive: bool | None = option(None, "keep the layers the sensitivity pass ranks worst float (default: "
                                               "as the recipe says)")
    exclude_nodes: tuple[str, ...] = option((), "node names kept float, comma-separated")
    sensitivity: bool | None = option(None, "run the sensitivity pass (default: as the recipe says)")
    sensitivity_budget_s: float = option(180.0, "seconds the sensitivity pass may score layers for")


# The CompileRequest.options keys QuantizeOptions reads (compile refuses keys nobody reads).
OPTION_KEYS = option_names(Int8Options)


@dataclass(frozen=True)
class QuantizeOptions:
    """The INT8 flags of `edgevision compile`, read from CompileRequest.options."""

    calib: Path | None = None  # None: the calibration images shipped with edgevision
    calib_size: int = 64
    calib_every: int | None = None
    seed: int = 0
    method: str | None = None  # a recipe name or .toml path; None: the backend's default
    quantizer: str = "onnxruntime"
    max_agreement_drop: float = DEFAULT_MAX_DROP
    max_float_groups: int = MAX_ITERATIONS
    skip_sensitive: bool | None = None  # None: as the recipe says
    exclude_nodes: tuple[str, ...] = ()
    sensitivity: bool | None = None  # None: as the recipe says
    sensitivity_budget_s: float = 180.0  # scoring stops here; the layers scored so far are ranked

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> "QuantizeOptions":
        """The INT8 keys of ``options`` (others are the backend's or the core's), typed; InputError for a bad value."""
        typed = read_options(Int8Options, {k: v for k, v in options.items() if k in OPTION_KEYS}, "--precision int8")
        return cls(calib=typed.calib, calib_size=typed.calib_size, calib_every=typed.calib_every, seed=typed.seed,
                   method=typed.calib_method or None, quantizer=typed.quantizer,
                   max_agreement_drop=typed.max_agreement_drop, max_float_groups=typed.max_float_groups,
                   skip_sensitive=typed.skip_sensitive,
                   exclude_nodes=typed.exclude_nodes, sensitivity=typed.sensitivity,
                   sensitivity_budget_s=typed.sensitivity_budget_s)

    def recipe(self, backend: "Backend | None" = None) -> QuantRecipe:
        """The recipe to quantize with: the user's, else the backend's default; checked against what
        the backend's runtime accepts."""
        from dataclasses import replace

        recipe = load_recipe(self.method or (backend.int8_recipe if backend else "minmax"))
        if backend is not None and backend.int8_symmetric_only and not (
                recipe.symmetric_activations and recipe.activation_type == "int8"):
            raise InputError(f"{backend.name} needs symmetric int8 activations; recipe {recipe.name} has "
                             f"{'symmetric' if recipe.symmetric_activations else 'asymmetric'} "
                             f"{recipe.activation_type}",
                             f"use --calib-method {backend.int8_recipe} (the {backend.name} default)")
        skip = recipe.skip_sensitive if self.skip_sensitive is None else self.skip_sensitive
        sensitivity = recipe.sensitivity if self.sensitivity is None else self.sensitivity
        return replace(recipe, skip_sensitive=skip, sensitivity=sensitivity,
                       exclude_nodes=tuple(dict.fromkeys(recipe.exclude_nodes + self.exclude_nodes)))


def _float_outputs(float_onnx: Path, reader: TensorReader) -> "np.ndarray":
    """The FP32 model's outputs on the calibration samples: what the sensitivity pass compares with."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    session = ort.InferenceSession(str(float_onnx), options, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, feed)[0] for feed in reader])


def quantize_for_compile(float_onnx: Path, config: PreprocessConfig, input_name: str, options: Mapping[str, Any],
                         work: Path, step: Callable[[str], None],
                         backend: "Backend | None" = None) -> tuple[Path, dict[str, Any]]:
    """Calibrate and quantize ``float_onnx`` for ``backend``; return the QDQ model and what the manifest records."""
    opts = QuantizeOptions.from_options(options)
    recipe = opts.recipe(backend)  # a bad recipe fails before the slow part
    check_nncf_recipe(opts.quantizer, recipe)
    source = opts.calib if opts.calib is not None else BUNDLED_DIR
    if opts.calib is None and not BUNDLED_DIR.is_dir():
        raise InputError("INT8 needs calibration images and none are bundled with this installation",
                         "pass --calib DIR (a folder of typical input images) or --calib VIDEO")
    step(f"reading calibration data from {source}")
    spec = CalibrationSpec(source=source, size=opts.calib_size, seed=opts.seed, every=opts.calib_every)
    reader = calibration_reader(spec, config, input_name)
    step(f"quantizing to INT8 with {opts.quantizer} ({recipe.method}, {len(reader)} calibration samples)")
    out_path = work / "model.int8.onnx"
    prepared = prepare(float_onnx, work / "model.prepared.onnx")
    started = time.monotonic()
    controlled = None
    if opts.quantizer == "nncf-accuracy-control":
        from .accuracy_control import quantize_with_accuracy_control

        controlled = quantize_with_accuracy_control(prepared, out_path, reader, recipe, opts.max_agreement_drop,
                                                    opts.max_float_groups)
    else:
        quantize = quantize_nncf if opts.quantizer == "nncf" else quantize_onnxruntime
        quantize(prepared, out_path, reader, recipe)
    info: dict[str, Any] = {"format": "QDQ ONNX", "quantizer": opts.quantizer, "recipe": recipe.to_dict(),
                            "calibration": {"source": str(source), "samples": len(reader), "seed": opts.seed,
                                            "size": opts.calib_size, "every": opts.calib_every},
                            "seconds": {"quantize": round(time.monotonic() - started, 1)}}
    float_layers = [{"layer": n, "why": "first convolution / classifier (skip_sensitive)"}
                    for n in excluded_nodes(prepared, recipe) if n not in recipe.exclude_nodes]
    float_layers += [{"layer": n, "why": "named in exclude_nodes"} for n in recipe.exclude_nodes]
    if controlled is not None:  # NNCF's own search replaces the sensitivity pass
        float_layers += controlled.pop("restored")
        info["accuracy_control"] = controlled
    elif recipe.sensitivity:
        from .sensitivity import restore_sensitive

        restored = work / "model.int8.sensitive.onnx"
        result = restore_sensitive(out_path, prepared, reader.tensors, input_name, _float_outputs(prepared, reader),
                                   restored, max_float=recipe.max_float_layers, min_gain=recipe.sensitivity_min_gain,
                                   budget_s=opts.sensitivity_budget_s,
                                   already_float=[f["layer"] for f in float_layers], step=step)
        out_path = restored
        float_layers += result.restored
        info["sensitivity"] = result.to_dict()
        info["seconds"]["sensitivity"] = round(result.seconds, 1)
    info["float_layers"] = float_layers
    log.info("quantized with %s: %s", opts.quantizer, info)
    return out_path, info
