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
