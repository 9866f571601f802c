"""Shared fixtures. Compiled artifacts are built once per test session: compiling is the slow part."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
# TVM compiles whose subject is not the schedule skip the default schedule search (minutes per model on
# 2 cores): they test import, packaging, devices or tuning. The search itself is tested in test_tvm.py.
NAIVE_TVM = {"default_schedule": "off"}


@pytest.fixture(scope="session")
def artifacts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("artifacts")


def _compile(out: Path, **kwargs) -> Path:
    from edgevision.compiler import CompileRequest, compile_model

    if not out.exists():
        compile_model(CompileRequest(output=out, **kwargs))
    return out


@pytest.fixture(scope="session")
def ort_artifact(artifacts_dir: Path) -> Path:
    """The default model (EfficientNet-Lite0, real ImageNet weights) for ONNX Runtime."""
    return _compile(artifacts_dir / "lite0.onnxruntime-cpu.evpkg", target="onnxruntime-cpu")


@pytest.fixture(scope="session")
def ov_artifact(artifacts_dir: Path) -> Path:
    """The default model for OpenVINO on the CPU, fp32."""
    return _compile(artifacts_dir / "lite0.intel-cpu.evpkg", target="intel-cpu")


@pytest.fixture(scope="session")
def compile_artifact(artifacts_dir: Path):
    """Compile anything once per session: ``compile_artifact("name.evpkg", target=..., model=...)``."""
    return lambda name, **kwargs: _compile(artifacts_dir / name, **kwargs)


BLOCK_TORCH = """
import sys
class _BlockTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this process (device-side test)")
        return None
sys.meta_path.insert(0, _BlockTorch())
"""


def run_without_torch(code: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter in which ``import torch`` fails, as on a device."""
    script = BLOCK_TORCH + code + "\nassert 'torch' not in sys.modules, 'torch was imported'\n"
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def run_cli(*args: str, timeout: float = 600, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The real `edgevision` command in a subprocess, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "edgevision.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env={**os.environ, "PYTHONPATH": str(REPO)})

def tiny_onnx(path: Path) -> Path:
    """A real (if small) classifier graph: conv -> relu -> global pool -> dense, fixed random weights."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
               for name, shape in (("w", (8, 3, 3, 3)), ("b", (8,)), ("fc", (8, 10)), ("fcb", (10,)))]
    nodes = [helper.make_node("Conv", ["input", "w", "b"], ["c"], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]), helper.make_node("Gemm", ["f", "fc", "fcb"], ["logits"])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(path))
    return path
