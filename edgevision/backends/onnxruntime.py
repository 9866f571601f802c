"""ONNX Runtime: the portable backend. The payload is the ONNX model itself."""
from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import BackendUnavailable
from .base import ALIGN_CORNERS_SCALES, Backend, CompileSettings, LoadOptions, RunCase

if TYPE_CHECKING:
    from ..artifact.manifest import Manifest
    from ..targets import Target

MODEL_FILE = "model.onnx"
PROVIDER_NAME = re.compile(r"^[A-Za-z0-9]{1,40}ExecutionProvider$")


class OnnxRuntimeRunner:
    thread_safe = True  # InferenceSession.run may be called from several threads at once

    def __init__(self, session: Any) -> None:
        self.session = session
        self.input_name = session.get_inputs()[0].name

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch})[0]


def conformance_runner() -> RunCase:
    import onnxruntime as ort

    def run(model: Any, inputs: list[np.ndarray]) -> list[np.ndarray]:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        feed = {i.name: x for i, x in zip(session.get_inputs(), inputs)}
        return [np.asarray(y) for y in session.run(None, feed)]
    return run


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    extra = "onnxruntime"
    runtime_module = "onnxruntime"
    precisions = ("fp32", "int8")
    portable_payload = True  # the payload is the ONNX graph itself
    payload_files = ("model", "probe.file")
    payload_keys = frozenset({"model", "providers"})
    has_conformance_runner = True
    conformance_known_failures = (
        (ALIGN_CORNERS_SCALES,
         ('test_resize_downsample_scales_linear_align_corners',
          'test_resize_downsample_scales_cubic_align_corners')),
    )

    def conformance_runner(self) -> RunCase:
        return conformance_runner()

    def check_payload(self, payload: dict[str, Any]) -> str | None:
        providers = payload.get("providers", [])
        if not isinstance(providers, list) or not all(isinstance(p, str) and PROVIDER_NAME.match(p) for p in providers):
            return f"providers {str(providers)[:80]} are not ONNX Runtime execution provider names"
        return None

    def compile(self, onnx_path: Path, target: "Target", settings: CompileSettings,
                out_dir: Path) -> dict[str, Any]:
        # The graph is kept portable; ORT's own optimisations run at session creation on the device.
        shutil.copyfile(onnx_path, out_dir / MODEL_FILE)
        providers = list(target.options.get("providers", ["CPUExecutionProvider"]))
        return {"model": MODEL_FILE, "providers": providers}

    def load(self, payload_dir: Path, manifest: "Manifest", options: LoadOptions) -> OnnxRuntimeRunner:
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise BackendUnavailable("this artifact needs ONNX Runtime, which is not installed",
                                     f"pip install 'edgevision[{self.extra}]'") from err
        sess_options = ort.SessionOptions()
        threads = options.threads or manifest.target.threads
        if threads:
            sess_options.intra_op_num_threads = threads
        sess_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        wanted = manifest.payload.get("providers", ["CPUExecutionProvider"])
        present = set(ort.get_available_providers())
        providers = [p for p in wanted if p in present] or ["CPUExecutionProvider"]
        session = ort.InferenceSession(str(payload_dir / manifest.payload["model"]), sess_options,
                                       providers=providers)
        return OnnxRuntimeRunner(session)


BACKEND = OnnxRuntimeBackend()
