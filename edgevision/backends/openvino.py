"""OpenVINO for Intel CPU, GPU and NPU.

Precision is always explicit: on CPUs with AMX/AVX-512 BF16 OpenVINO otherwise runs bf16
silently, so the artifact records the inference precision hint and the loader applies it.
"""
from __future__ import annotations

from pathlib import Path
import re
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ..errors import ArtifactError, BackendUnavailable, EdgevisionError
from .base import ALIGN_CORNERS_SCALES, Backend, CompileSettings, LoadOptions, Runner, RunCase

if TYPE_CHECKING:
    from ..artifact.manifest import Manifest
    from ..targets import Target

XML_FILE = "model.xml"
PRECISION_HINTS = {"fp32": "f32", "fp16": "f16", "bf16": "bf16", "int8": "f32"}
# The only OpenVINO properties a manifest may set, each with the values it may take. Anything else
# (CACHE_DIR, which makes the loader write where the file says; plugin or extension paths; ...) is refused.
_COUNT = re.compile(r"^[1-9][0-9]{0,3}$")
SAFE_CONFIG: dict[str, Callable[[Any], bool]] = {
    "INFERENCE_PRECISION_HINT": lambda v: v in ("f32", "f16", "bf16"),
    "PERFORMANCE_HINT": lambda v: v in ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT"),
    "INFERENCE_NUM_THREADS": lambda v: isinstance(v, str) and bool(_COUNT.match(v)),
    "NUM_STREAMS": lambda v: v == "AUTO" or (isinstance(v, str) and bool(_COUNT.match(v))),
    "EXECUTION_MODE_HINT": lambda v: v in ("PERFORMANCE", "ACCURACY"),
}
DEVICE_NAME = re.compile(r"^(CPU|GPU|NPU)(\.[0-9]{1,2})?$")


def unsafe_config(config: Any) -> str | None:
    """Why an OpenVINO config from a manifest must not be applied; None when every entry is allowed."""
    if not isinstance(config, dict):
        return "the OpenVINO config is not an object"
    for key, value in config.items():
        check = SAFE_CONFIG.get(key)
        if check is None:
            return (f"OpenVINO property {key!r} is not one a manifest may set "
                    f"(allowed: {', '.join(sorted(SAFE_CONFIG))})")
        if not check(value):
            return f"OpenVINO property {key}={str(value)[:40]!r} is not an allowed value"
    return None


_COMPUTE_LAYERS = ("Convolution", "GroupConvolution", "FullyConnected", "MatMul", "Deconvolution")


def compute_precisions(compiled: Any) -> dict[str, int]:
    """How many compute layers of the compiled model run in each precision (from its runtime model)."""
    counts: dict[str, int] = {}
    try:
        for op in compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            if "layerType" in info and info["layerType"].astype(str) in _COMPUTE_LAYERS:
                precision = info["runtimePrecision"].astype(str) if "runtimePrecision" in info else "?"
                counts[precision] = counts.get(precision, 0) + 1
    except Exception:  # devices without a runtime model (NPU) report nothing
        return {}
    return counts


def _executed_precision(compiled: Any) -> str | None:
    """The precision the device really runs: a hint it cannot honour (bf16 without AVX-512 BF16/AMX,
    f16 without AVX512-FP16) silently falls back to f32, and the accuracy gate must say so. A QDQ
    model runs its quantized layers in int8 whatever the hint (f32 for the layers kept float)."""
    counts = compute_precisions(compiled)
    if counts and sum(n for p, n in counts.items() if p in ("i8", "u8")) * 2 >= sum(counts.values()):
        return "int8"
    try:
        name = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    except Exception:  # devices without the property (NPU) report nothing
        return None
    return {"f32": "fp32", "f16": "fp16", "bf16": "bf16"}.get(name, name)


class OpenVinoRunner:
    """A pool of infer requests: one InferRequest shared by threads returns other threads' outputs
    (or "Infer Request is busy"), so each call takes an idle request, or makes one, and gives it back."""

    thread_safe = True

    def __init__(self, compiled: Any) -> None:
        self.compiled = compiled
        self._idle = [compiled.create_infer_request()]  # list.pop/append are atomic under the GIL
        self.executed_precision = _executed_precision(compiled)

    def run(self, batch: np.ndarray) -> np.ndarray:
        try:
            request = self._idle.pop()
        except IndexError:  # every request is busy in another thread
            request = self.compiled.create_infer_request()
        try:
            request.infer({0: batch})
            return request.get_output_tensor(0).data.copy()
        finally:
            self._idle.append(request)

    def runtime_info(self) -> dict[str, str]:
        """What the device really runs: a bf16 hint on a CPU without bf16 support runs f32."""
        layers = compute_precisions(self.compiled)
        return {"inference_precision": self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name(),
                "executed_precision": str(self.executed_precision),
                "compute_layers": ", ".join(f"{n} {p}" for p, n in sorted(layers.items()))}


def conformance_runner() -> RunCase:
    import openvino as ov

    core = ov.Core()

    def run(model: Any, inputs: list[np.ndarray]) -> list[np.ndarray]:
        compiled = core.compile_model(core.read_model(model.SerializeToString(), b""), "CPU",
                                      {"INFERENCE_PRECISION_HINT": "f32"})  # fp32, as edgevision's fp32 artifacts
        results = compiled(list(inputs))
        return [np.asarray(results[out]) for out in compiled.outputs]
    return run


class OpenVinoBackend(Backend):
    name = "openvino"
    extra = "openvino"
    runtime_module = "openvino"
    precisions = ("fp32", "fp16", "bf16", "int8")
    portable_payload = True  # OpenVINO IR: the CPU plugin of x86 and ARM both read it
    payload_files = ("model", "probe.file")
    payload_keys = frozenset({"model", "device", "config"})
    has_conformance_runner = True
    conformance_known_failures = (
        (ALIGN_CORNERS_SCALES,
         ('test_resize_downsample_scales_linear_align_corners',
          'test_resize_downsample_scales_cubic_align_corners')),
        ('ceil_mode keeps a last window that starts outside the input (ONNX and PyTorch drop it): output 2x2 '
         'instead of 1x1',
         ('test_maxpool_2d_ceil_output_size_reduce_by_one',)),
        ("Pad mode 'wrap' (opset 19) is not supported by the ONNX importer", ('test_wrap_pad',)),
        ('Resize coordinate modes tf_crop_and_resize and half_pixel_symmetric are not supported',
         ('test_resize_tf_crop_and_resize',
          'test_resize_tf_crop_and_resize_axes_2_3',
          'test_resize_tf_crop_and_resize_axes_3_2',
          'test_resize_tf_crop_and_resize_extrapolation_value',
          'test_resize_downsample_scales_linear_half_pixel_symmetric',
          'test_resize_upsample_scales_linear_half_pixel_symmetric')),
        ('Resize antialias=1 (opset 18) is ignored: plain interpolation instead of a low-pass',
         ('test_resize_downsample_scales_linear_antialias',
          'test_resize_downsample_sizes_linear_antialias',
          'test_resize_downsample_scales_cubic_antialias',
          'test_resize_downsample_sizes_cubic_antialias')),
        ('Resize cubic exclude_outside=1 is ignored (weights outside the input are not dropped)',
         ('test_resize_downsample_scales_cubic_A_n0p5_exclude_outside',
          'test_resize_upsample_scales_cubic_A_n0p5_exclude_outside')),
        ('Resize keep_aspect_ratio_policy (opset 18) is ignored: wrong output shape',
         ('test_resize_downsample_sizes_nearest_not_larger',
          'test_resize_downsample_sizes_nearest_not_smaller',
          'test_resize_upsample_sizes_nearest_not_larger',
          'test_resize_upsample_sizes_nearest_not_smaller')),
    )

    def conformance_runner(self) -> RunCase:
        return conformance_runner()

    def runtime_info(self, runner: Runner) -> dict[str, Any]:
        return runner.runtime_info() if isinstance(runner, OpenVinoRunner) else {}

    def executed_precision(self, runner: Runner) -> str | None:
        return runner.executed_precision if isinstance(runner, OpenVinoRunner) else None

    def check_payload(self, payload: dict[str, Any]) -> str | None:
        if not isinstance(payload.get("device"), str) or not DEVICE_NAME.match(payload["device"]):
            return f"OpenVINO device {str(payload.get('device'))[:40]!r} is not CPU, GPU or NPU"
        return unsafe_config(payload.get("config", {}))

    def check_device(self, device: str) -> None:
        pass  # load() checks it against the devices OpenVINO finds on this machine

    def version(self) -> str | None:
        # get_version() is the full build string (e.g. 2025.3.0-19807-...): it names the exact runtime.
        module = self.runtime()
        return None if module is None else module.get_version()

    def compile(self, onnx_path: Path, target: "Target", settings: CompileSettings,
                out_dir: Path) -> dict[str, Any]:
        import openvino as ov

        model = ov.Core().read_model(str(onnx_path))
        if target.static_shapes and settings.dynamic_batch:
            raise EdgevisionError(f"target {target.name} ({target.device}) needs static shapes",
                                  "compile without --dynamic-batch")
        # fp16 weights only when fp16 is what the device will run; otherwise keep them exact.
        ov.save_model(model, str(out_dir / XML_FILE), compress_to_fp16=settings.precision == "fp16")
        config = {"INFERENCE_PRECISION_HINT": PRECISION_HINTS[settings.precision],
                  "PERFORMANCE_HINT": target.options.get("performance_hint", "LATENCY")}
        threads = settings.threads or target.threads
        if threads and target.device == "CPU":
            config["INFERENCE_NUM_THREADS"] = str(threads)
        return {"model": XML_FILE, "device": target.device, "config": config}

    def can_run(self, target: "Target") -> tuple[bool, str]:
        ok, why = super().can_run(target)
        if not ok:
            return ok, why
        import openvino as ov

        devices = ov.Core().available_devices
        if target.device.split(".")[0] not in devices:
            return False, f"OpenVINO device {target.device} not present (have {', '.join(devices)})"
        return True, ""

    def load(self, payload_dir: Path, manifest: "Manifest", options: LoadOptions) -> OpenVinoRunner:
        try:
            import openvino as ov
        except ImportError as err:
            raise BackendUnavailable("this artifact needs OpenVINO, which is not installed",
                                     f"pip install 'edgevision[{self.extra}]'") from err
        core = ov.Core()
        device = options.device or manifest.payload["device"]
        config = dict(manifest.payload.get("config", {}))
        problem = unsafe_config(config)  # the reader refused it already; never apply what is not allowed
        if problem:
            raise ArtifactError(f"artifact manifest: {problem}", "refusing it: only use artifacts from a trusted source")
        if options.threads and device == "CPU":
            config["INFERENCE_NUM_THREADS"] = str(options.threads)
        if device.split(".")[0] not in core.available_devices:
            raise BackendUnavailable(f"OpenVINO device {device} is not present here "
                                     f"(available: {', '.join(core.available_devices)})",
                                     "install the device driver or load with device='CPU'")
        model = core.read_model(str(payload_dir / manifest.payload["model"]))
        return OpenVinoRunner(core.compile_model(model, device, config))


BACKEND = OpenVinoBackend()
