"""A short real soak: 1,500 frames of the bundled clip through Model.predict, RSS flat after warm-up.

benchmarks/soak.py runs the same loop for 10,000 frames; here a small model keeps it to seconds.
A deliberately leaking wrapper shows the measurement does catch growth.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from reliability_models import MODELS


def _soak_module():
    spec = importlib.util.spec_from_file_location("edgevision_soak_benchmark", REPO / "benchmarks" / "soak.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def soak():
    return _soak_module()


@pytest.fixture(scope="module")
def model(compile_artifact):
    from edgevision.runtime import load

    path = compile_artifact("i8-tiny.onnxruntime-cpu.evpkg", model=f"{MODELS}:tiny", target="onnxruntime-cpu")
    with load(path) as loaded:
        yield loaded


def test_rss_stays_flat_over_1500_frames(soak, model) -> None:
    from edgevision.samples import sample_clip

    result = soak.run_soak(model, sample_clip(), frames=1500, warmup=300, sample_every=25)
    assert result.frames == 1500 and sum(result.top1.values()) == 1500  # the clip looped 6 times
    assert len(result.samples) == 60
    assert result.growth_percent < 5.0, f"RSS grew {result.growth_percent:.2f}%"
    # In absolute terms too: a leak of one 64x64 float tensor per frame would add ~59 MB here.
    assert result.final_rss - result.baseline_rss < 8 * 2**20


class _LeakyModel:
    """Keeps every preprocessed frame: the growth the soak exists to catch."""

    def __init__(self, model) -> None:
        self.model = model
        self.kept: list[np.ndarray] = []

    def predict(self, frame: np.ndarray, top_k: int = 5):
        self.kept.append(self.model.preprocess(frame))
        return self.model.predict(frame, top_k)


def test_the_soak_catches_a_leak(soak, model) -> None:
    from edgevision.samples import sample_clip

    leaky = _LeakyModel(model)
    result = soak.run_soak(leaky, sample_clip(), frames=600, warmup=100, sample_every=25)
    assert result.growth_percent > 5.0, f"a 48 kB/frame leak went unnoticed ({result.growth_percent:.2f}%)"
