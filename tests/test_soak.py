"""A short real soak: 1,500 frames of the bundled clip through Model.predict, RSS flat after warm-up.

benchmarks/soak.py runs the same loop for 10,000 frames; here a small model keeps it to seconds.
A deliberately leaking wrapper shows the measurement does catch growth.

Each soak runs in a fresh interpreter (torch blocked, as on a device): inside the test process,
gigabytes of memory freed by earlier tests are reused by the allocator, so a leak there need not
raise RSS at all, and a flat reading would prove nothing.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import REPO, run_without_torch
from reliability_models import MODELS

SOAK_PROBE = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("edgevision_soak_benchmark", {soak!r})
soak = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = soak  # its dataclasses look their module up by name
spec.loader.exec_module(soak)
from edgevision.runtime import load
from edgevision.samples import sample_clip

class LeakyModel:
    # Keeps every preprocessed frame (48 kB each): the growth the soak exists to catch.
    def __init__(self, model):
        self.model, self.kept = model, []
    def predict(self, frame, top_k=5):
        self.kept.append(self.model.preprocess(frame))
        return self.model.predict(frame, top_k)

with load({artifact!r}) as model:
    subject = LeakyModel(model) if {leak!r} else model
    r = soak.run_soak(subject, sample_clip(), frames={frames}, warmup={warmup}, sample_every=25)
print(json.dumps(dict(frames=r.frames, samples=len(r.samples), top1_total=sum(r.top1.values()),
                      growth_percent=r.growth_percent, grown_bytes=r.final_rss - r.baseline_rss)))
"""


@pytest.fixture(scope="module")
def tiny_artifact(compile_artifact) -> Path:
    return compile_artifact("i8-tiny.onnxruntime-cpu.evpkg", model=f"{MODELS}:tiny", target="onnxruntime-cpu")


def _soak(artifact: Path, frames: int, warmup: int, leak: bool) -> dict:
    code = SOAK_PROBE.format(soak=str(REPO / "benchmarks" / "soak.py"), artifact=str(artifact),
                             leak=leak, frames=frames, warmup=warmup)
    done = run_without_torch(code)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_rss_stays_flat_over_1500_frames(tiny_artifact) -> None:
    result = _soak(tiny_artifact, frames=1500, warmup=300, leak=False)
    assert result["frames"] == 1500 and result["top1_total"] == 1500  # the clip looped 6 times
    assert result["samples"] == 60
    assert result["growth_percent"] < 5.0, f"RSS grew {result['growth_percent']:.2f}%"
    # In absolute terms too: a leak of one 64x64 float tensor per frame would add ~59 MB here.
    assert result["grown_bytes"] < 8 * 2**20


def test_the_soak_catches_a_leak(tiny_artifact) -> None:
    result = _soak(tiny_artifact, frames=600, warmup=100, leak=True)
    # ~450 frames between the baseline and final windows x 48 kB = ~21 MB on a process of ~150 MB.
    grown = result["grown_bytes"]
    assert grown > 12 * 2**20, f"a 48 kB/frame leak went unnoticed (+{grown / 2**20:.1f} MB)"
    assert result["growth_percent"] > 5.0
