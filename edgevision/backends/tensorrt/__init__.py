"""TensorRT for NVIDIA Jetson: the host writes ONNX + build settings, the device builds the engine.

A TensorRT engine is specific to the TensorRT version and GPU that build it, so compiling needs
no TensorRT: the payload is the ONNX (fp32, or the QDQ model from the INT8 step) and a JSON build
config. On the device, the first ``load`` builds the engine and caches it
(``~/.cache/edgevision/trt``), keyed by TensorRT version, GPU, model hash and build settings;
later loads deserialize the cached engine.

Layout: ``build_config`` (settings -> builder calls), ``engine_cache`` (keying, invalidation),
``io_plan`` (buffer plan) are pure and tested on any machine; ``engine`` is the device code.
"""
from __future__ import annotations

import logging
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import ArtifactError, BackendUnavailable, InputError
from ..base import Backend, CompileSettings, LoadOptions, option, option_names, read_options
from .build_config import BUILD_CONFIG_FILE, BuildConfig, plan_build
from .engine_cache import EngineCache

if TYPE_CHECKING:
    from ...artifact.manifest import Manifest
    from ...targets import Target
    from .engine import TensorRTRunner

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
ENGINE_NOTE = ("the TensorRT engine is built on the device at first load and cached in "
               "~/.cache/edgevision/trt; later loads reuse it")
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}
DEFAULT_MAX_BATCH = 8  # engine profile for --dynamic-batch artifacts


@dataclass(frozen=True)
class TensorRTOptions:
    """Builder settings (target file ``[options]``, overridden per compile by ``--option KEY=VALUE``)."""

    max_batch: int = option(DEFAULT_MAX_BATCH, "engine batch profile for --dynamic-batch artifacts")
    opt_batch: int = option(1, "the batch a --dynamic-batch engine is tuned for")
    workspace_mb: int = option(1024, "builder scratch memory limit in MB (shared with the CPU on Jetson)")
    dla_core: int = option(-1, "-1: GPU only; 0 or 1 on Orin NX/AGX: build for that DLA core (fp16/int8 only)")
    gpu_fallback: bool = option(True, "with a DLA core: layers the DLA cannot run go to the GPU")
    min_tensorrt: str = option("10.0", "the oldest TensorRT the engine may be built with on the device")
    engine_cache: str | None = option(None, "load: engine cache folder (default ~/.cache/edgevision/trt)")


def onnx_quantization_ops(onnx_path: Path, check_tensorrt: bool = False) -> set[str]:
    """The Q/DQ operator types present in the model (empty for a float model).

    With ``check_tensorrt``, also refuse what TensorRT's ONNX parser refuses: it supports symmetric
    INT8 only, so every Q/DQ zero point must be int8 and all zeros (ONNX Runtime's default uint8
    activations are not).
    """
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path), load_external_data=False)
    found = {node.op_type for node in model.graph.node} & QDQ_OPS
    if not check_tensorrt or not found:
        return found
    constants = {init.name: init for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = node.attribute[0].t
    for node in model.graph.node:
        if node.op_type not in QDQ_OPS or len(node.input) < 3 or not node.input[2]:
            continue  # no zero point: TensorRT takes it as 0
        zero_point = constants.get(node.input[2])
        if zero_point is None:
            raise InputError(f"{node.op_type} node {node.name!r} has a computed zero point; TensorRT needs constants",
                             "quantize with --calib-method symmetric")
        values = numpy_helper.to_array(zero_point)
        if values.dtype != np.int8 or values.any():
            raise InputError(f"the QDQ model has {values.dtype} zero points{' that are not 0' if values.any() else ''} "
                             f"(node {node.name!r}); TensorRT supports symmetric INT8 only (int8 zero points of 0)",
                             "compile with --precision int8 --calib-method symmetric")
    return found


def fold_int32_dequantize(onnx_path: Path) -> int:
    """Replace DequantizeLinear of constant int32 tensors (quantized biases) by float constants.

    TensorRT's parser only dequantizes INT8 (and FP8/INT4) tensors, while ONNX Runtime's quantizer
    stores biases as int32 + DequantizeLinear. Folding computes exactly what that node computes,
    (x - zero_point) * scale in float32, so the model's outputs do not change. Returns the count.
    """
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path), load_external_data=False)
    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    folded = []
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits or node.input[1] not in inits:
            continue
        x = numpy_helper.to_array(inits[node.input[0]])
        if x.dtype != np.int32:
            continue
        scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        zp_name = node.input[2] if len(node.input) > 2 else ""
        zero = numpy_helper.to_array(inits[zp_name]).astype(np.int64) if zp_name in inits else np.int64(0)
        if scale.ndim == 1 and x.ndim > 0 and scale.size > 1:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            axis = axis % x.ndim
            shape = [1] * x.ndim
            shape[axis] = -1
            scale, zero = scale.reshape(shape), np.reshape(zero, shape) if np.ndim(zero) else zero
        value = ((x.astype(np.int64) - zero).astype(np.float32) * scale).astype(np.float32)
        folded.append((node, numpy_helper.from_array(value, node.output[0])))
    if not folded:
        return 0
    for node, constant in folded:
        graph.node.remove(node)
        graph.initializer.append(constant)
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    onnx.save(model, str(onnx_path))
    return len(folded)


def build_config_for(onnx_path: Path, onnx_sha256: str, target: "Target", settings: CompileSettings) -> BuildConfig:
    """Target file options, overridden by --option KEY=VALUE, plus what the ONNX itself says."""
    ours = option_names(TensorRTOptions)
    options = read_options(TensorRTOptions, {k: v for k, v in {**target.options, **settings.options}.items()
                                             if k in ours}, "tensorrt")
    qdq = onnx_quantization_ops(onnx_path, check_tensorrt=settings.precision == "int8") == QDQ_OPS
    if settings.precision == "int8" and not qdq:
        raise InputError("TensorRT int8 needs the QDQ ONNX from the INT8 step, but this model has no Q/DQ pairs",
                         "compile with --precision int8 through `edgevision compile`, or use --precision fp16")
    if settings.precision != "int8" and qdq:
        raise InputError(f"this ONNX is already quantized (Q/DQ nodes) but precision is {settings.precision}",
                         "compile it with --precision int8")
    shape = tuple(settings.input_shape)
    dynamic = isinstance(shape[0], str)
    max_batch = options.max_batch if dynamic else int(shape[0])
    opt_batch = options.opt_batch if dynamic else max_batch
    return BuildConfig(onnx=MODEL_FILE, onnx_sha256=onnx_sha256, precision=settings.precision,
                       input_name=settings.input_name, input_shape=shape, explicit_quantization=qdq,
                       workspace_mb=options.workspace_mb, dla_core=options.dla_core,
                       gpu_fallback=options.gpu_fallback, max_batch=max_batch, opt_batch=opt_batch,
                       min_tensorrt=options.min_tensorrt)


class TensorRTBackend(Backend):
    name = "tensorrt"
    extra = "tensorrt"
    runtime_module = "tensorrt"
    precisions = ("fp32", "fp16", "int8")
    int8_recipe = "symmetric"
    options_schema = TensorRTOptions
    option_keys = option_names(TensorRTOptions)
    devices = ("cuda", "gpu")
    int8_symmetric_only = True  # explicit-QDQ engines take int8 with zero point 0 only
    payload_files = ("model", "build_config")
    payload_keys = frozenset({"model", "build_config", "engine", "min_tensorrt", "builder_calls",
                              "folded_int32_dequantize"})

    def compile_requirements(self, target: "Target") -> list[str]:
        # Writing ONNX + build settings needs no TensorRT: the engine is built on the device.
        try:
            import onnx  # noqa: F401
        except ImportError:
            return ["pip install 'edgevision[compile]'"]
        return []

    def compile(self, onnx_path: Path, target: "Target", settings: CompileSettings,
                out_dir: Path) -> dict[str, Any]:
        from ...files import sha256_file

        model_path = out_dir / MODEL_FILE
        shutil.copyfile(onnx_path, model_path)
        folded = fold_int32_dequantize(model_path) if settings.precision == "int8" else 0
        config = build_config_for(model_path, sha256_file(model_path), target, settings)
        # Plan now for the oldest and the current JetPack TensorRT: the host refuses what the device
        # would refuse (DLA + fp32, int8 without Q/DQ), and the manifest shows the calls to expect.
        versions = dict.fromkeys(v for v in (config.min_tensorrt, target.options.get("jetpack_tensorrt")) if v)
        calls = {f"tensorrt {v}": plan_build(config, str(v)).render() for v in versions}
        config.write(out_dir / BUILD_CONFIG_FILE)
        return {"model": MODEL_FILE, "build_config": BUILD_CONFIG_FILE, "engine": "built on first load on the device",
                "min_tensorrt": config.min_tensorrt, "note": ENGINE_NOTE, "builder_calls": calls,
                **({"folded_int32_dequantize": folded} if folded else {})}

    def can_run(self, target: "Target") -> tuple[bool, str]:
        why = "the TensorRT engine is built on the device at first load, not at compile time"
        if not self.is_available():
            return False, f"{why}; this host has no TensorRT"
        if target.arch != platform.machine():
            return False, f"{why}; this host is {platform.machine()}, the target {target.arch}"
        from .engine import import_cudart

        try:
            import_cudart()
        except BackendUnavailable:
            return False, f"{why}; cuda-python is not installed here"
        return True, ""

    def load(self, payload_dir: Path, manifest: "Manifest", options: LoadOptions) -> "TensorRTRunner":
        from ...files import sha256_file
        from .engine import import_cudart, import_tensorrt, load_runner

        # Fail first, in one line, on what the device is missing.
        import_tensorrt()
        import_cudart()
        config_path = payload_dir / manifest.payload.get("build_config", BUILD_CONFIG_FILE)
        try:
            config = BuildConfig.read(config_path)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ArtifactError(f"cannot read the TensorRT build config {config_path.name} ({err})",
                                "recompile the artifact") from err
        if config.onnx != manifest.payload.get("model", MODEL_FILE):  # only the member the reader checked
            raise ArtifactError(f"the TensorRT build config names {config.onnx!r}, not the payload's model",
                                "refusing it: recompile the artifact")
        onnx_sha = sha256_file(payload_dir / config.onnx)
        if onnx_sha != config.onnx_sha256:
            raise ArtifactError("the artifact's ONNX does not match its TensorRT build config",
                                "recompile the artifact")
        cache = EngineCache(options.options.get("engine_cache"))
        return load_runner(payload_dir, config, onnx_sha, options.device or manifest.target.device, cache)


BACKEND = TensorRTBackend()
