"""Post-training static quantization into explicit QDQ ONNX: one INT8 model for every backend.

ONNX Runtime and OpenVINO execute QuantizeLinear/DequantizeLinear pairs with INT8 kernels, and
TensorRT 10+ takes explicit QDQ (its implicit calibrators are gone). TVM's Relax importer
accepts QDQ too, but runs it as float.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Iterator

from ..errors import BackendUnavailable, EdgevisionError
from ..quiet import silenced
from .reader import TensorReader
from .recipe import QuantRecipe

log = logging.getLogger(__name__)
QUANTIZERS = ("onnxruntime", "nncf", "nncf-accuracy-control")


def sensitive_nodes(onnx_path: Path) -> list[str]:
    """The first convolution and the last Gemm/MatMul/Conv: where INT8 error hurts most."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    compute = [n.name for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul")]
    return sorted({compute[0], compute[-1]}) if compute else []


def excluded_nodes(onnx_path: Path, recipe: QuantRecipe) -> list[str]:
    nodes = list(recipe.exclude_nodes)
    if recipe.skip_sensitive:
        nodes += [n for n in sensitive_nodes(onnx_path) if n not in nodes]
    return nodes


def prepare(float_onnx: Path, out_path: Path) -> Path:
    """ONNX Runtime's pre-quantization pass: shape inference and constant folding. On the exported
    EfficientNet-Lite0 it folds 17 dynamic Pad subgraphs (~220 nodes) into the convolutions, so
    those convolutions get quantized together with their padding."""
    try:
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as err:
        raise BackendUnavailable("INT8 quantization needs ONNX Runtime", "pip install 'edgevision[compile]'") from err
    try:
        quant_pre_process(str(float_onnx), str(out_path))
    except Exception as err:  # an optimisation only: quantize the graph as exported when it does not apply
        log.warning("pre-quantization pass skipped (%s: %s)", type(err).__name__, err)
        return float_onnx
    return out_path


def quantize_onnxruntime(float_onnx: Path, out_path: Path, reader: TensorReader, recipe: QuantRecipe) -> Path:
    try:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    except ImportError as err:
        raise BackendUnavailable("INT8 quantization needs ONNX Runtime", "pip install 'edgevision[compile]'") from err
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    activation = QuantType.QInt8 if recipe.activation_type == "int8" else QuantType.QUInt8
    extra = {"ActivationSymmetric": recipe.symmetric_activations, "WeightSymmetric": True,
             "CalibMovingAverage": recipe.moving_average}
    if recipe.method == "percentile":
        extra["CalibPercentile"] = recipe.percentile
    reader.rewind()
    # The quantizer prints histogram progress to stdout; library code stays quiet.
    with silenced(log, "ONNX Runtime quantizer"):
        quantize_static(str(float_onnx), str(out_path), reader, quant_format=QuantFormat.QDQ,
                        per_channel=recipe.per_channel, activation_type=activation, weight_type=QuantType.QInt8,
                        calibrate_method=methods[recipe.method], nodes_to_exclude=excluded_nodes(float_onnx, recipe),
                        extra_options=extra)
    return out_path


def nncf_preset(recipe: QuantRecipe) -> Any:
    import nncf

    return nncf.QuantizationPreset.PERFORMANCE if recipe.symmetric_activations else nncf.QuantizationPreset.MIXED


@contextlib.contextmanager
def quiet_nncf(log: logging.Logger, what: str) -> Iterator[None]:
    """NNCF logs INFO lines and draws progress bars on stdout; library output stays quiet."""
    nncf_log = logging.getLogger("nncf")
    level = nncf_log.level
    nncf_log.setLevel(logging.WARNING)
    try:
        with silenced(log, what):
            yield
    finally:
        nncf_log.setLevel(level)


def quantize_nncf(float_onnx: Path, out_path: Path, reader: TensorReader, recipe: QuantRecipe) -> Path:
    """NNCF's post-training quantization (with fast bias correction), written as QDQ ONNX."""
    try:
        import nncf
        import onnx
    except ImportError as err:
        raise BackendUnavailable("--quantizer nncf needs NNCF", "pip install 'edgevision[int8]'") from err
    ignored = excluded_nodes(float_onnx, recipe)
    model = onnx.load(str(float_onnx))
    with quiet_nncf(log, "NNCF"):
        quantized = nncf.quantize(model, nncf.Dataset(list(reader)), preset=nncf_preset(recipe), subset_size=len(reader),
                                  ignored_scope=nncf.IgnoredScope(names=ignored) if ignored else None)
    onnx.save(quantized, str(out_path))
    return out_path


def check_nncf_recipe(quantizer: str, recipe: QuantRecipe) -> None:
    if quantizer.startswith("nncf") and recipe.method != "minmax":
        raise EdgevisionError(f"--quantizer {quantizer} has its own range estimation, not {recipe.method!r}",
                              "drop --calib-method or use --quantizer onnxruntime")
