"""Prove an artifact computes what the x86 reference computes, on the device's own instruction set.

At compile time a cross target stores a *probe* in its payload: a few real photos preprocessed to
input tensors plus ONNX Runtime's x86 outputs for them. ``verify_artifact`` runs the artifact on
those inputs through ``edgevision.runtime`` -- under qemu-aarch64 when the artifact is for aarch64
and this host is not -- and compares the outputs within a tolerance (1e-4 by default).
"""
from __future__ import annotations

import json
import logging
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ArtifactError, BackendUnavailable, EdgevisionError, InputError

log = logging.getLogger(__name__)

PROBE_FILE = "probe.npz"
PROBE_IMAGES = ("chelsea", "coffee", "camera")
DEFAULT_TOLERANCE = 1e-4
RECORD_KEY = "device_check"  # where a verification lands in the manifest's payload


@dataclass(frozen=True)
class Verification:
    device: str  # e.g. "qemu-aarch64-static -cpu cortex-a72" or "native x86_64"
    reference: str
    inputs: int
    max_abs_diff: float
    top1_agreement: float
    tolerance: float
    passed: bool
    seconds: float  # wall clock, emulator and runtime start included
    load_s: float
    run_s_per_input: float
    chelsea_top1: str
    stage: str = "edgevision verify (artifact through edgevision.runtime)"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def probe_inputs(input_shape: Sequence[int]) -> np.ndarray:
    """Real photos as the network's input tensors (ImageNet normalisation, centre crop)."""
    from ..preprocess import PreprocessConfig, preprocess
    from ..samples import sample_image

    _, _, h, w = (int(d) for d in input_shape)
    config = PreprocessConfig().with_size((h, w))
    return np.stack([preprocess(sample_image(name), config) for name in PROBE_IMAGES])


def write_probe(onnx_path: Path, input_shape: Sequence[int], out_file: Path) -> dict[str, Any]:
    """Store probe inputs and ONNX Runtime's outputs on this host; returns the manifest entry."""
    import onnxruntime as ort

    inputs = probe_inputs(input_shape)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    outputs = np.concatenate([session.run(None, {name: inputs[i:i + 1]})[0] for i in range(len(inputs))])
    np.savez(out_file, inputs=inputs, outputs=outputs.astype(np.float32))
    return {"file": out_file.name, "images": list(PROBE_IMAGES),
            "reference": f"onnxruntime {ort.__version__} on {platform.machine()} (exported ONNX)"}


def _reference_outputs(reference: Path, inputs: np.ndarray) -> tuple[str, np.ndarray]:
    if reference.suffix == ".onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(reference), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        out = [session.run(None, {name: inputs[i:i + 1]})[0] for i in range(len(inputs))]
        return f"onnxruntime {ort.__version__} on {reference.name}", np.concatenate(out)
    from ..runtime import load

    with load(reference) as model:
        out = [model.run(inputs[i:i + 1]) for i in range(len(inputs))]
        return f"{model.manifest.backend} artifact {reference.name}", np.concatenate(out)


def _device_command(arch: str, qemu_cpu: str, build_sysroot: bool) -> tuple[str, Any]:
    """How to start the device-side check here: natively, or through qemu for aarch64 artifacts."""
    host = platform.machine()
    if arch == host:
        return f"native {host}", None
    if arch != "aarch64":
        raise BackendUnavailable(f"cannot emulate {arch} artifacts here (only aarch64 through qemu)",
                                 f"run `edgevision verify` on the {arch} device itself")
    from .qemu import emulator_for

    emulator = emulator_for(qemu_cpu, build=build_sysroot)
    return f"{emulator.qemu} -cpu {emulator.cpu}", emulator


def run_on_device(artifact: Path, inputs: np.ndarray, arch: str, qemu_cpu: str = "cortex-a72",
                  build_sysroot: bool = True, timeout: float = 1800) -> tuple[str, np.ndarray, dict[str, Any], float]:
    """Run ``inputs`` through an artifact (or a bare TVM .so) on its own architecture.

    Returns (device description, outputs, device-side timings, wall seconds).
    """
    device, emulator = _device_command(arch, qemu_cpu, build_sysroot)
    with tempfile.TemporaryDirectory(prefix="edgevision-verify-") as tmp:
        in_file, out_file = Path(tmp) / "inputs.npy", Path(tmp) / "outputs.npy"
        np.save(in_file, inputs)
        args = ["-m", "edgevision.emulation.device_check", str(Path(artifact).resolve()), str(in_file), str(out_file)]
        started = time.perf_counter()
        try:
            if emulator is None:
                from .qemu import REPO_ROOT

                done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout,
                                      cwd=str(REPO_ROOT))
            else:
                done = emulator.run_python(args, timeout=timeout)
        except subprocess.TimeoutExpired as err:
            raise EdgevisionError(f"the device-side run did not finish in {timeout:.0f} s",
                                  "use a smaller input size, or verify on the device") from err
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise EdgevisionError(f"the artifact failed on {device}: {last}",
                                  "rerun with --debug to see the device-side log")
        stats = json.loads(done.stdout.strip().splitlines()[-1])
        return device, np.load(out_file), stats, seconds


def verify_artifact(artifact: Path, tolerance: float = DEFAULT_TOLERANCE, reference: Path | None = None,
                    build_sysroot: bool = True, limit: int = 8) -> Verification:
    """Compare the artifact on its device (or qemu) with the x86 reference; raises nothing on a mismatch."""
    from ..artifact import read_manifest, unpack

    artifact = Path(artifact)
    manifest = read_manifest(artifact)
    if reference is not None:
        from ..compiler.gate import validation_tensors

        inputs = validation_tensors(manifest.preprocess)[:limit]
        ref_name, expected = _reference_outputs(Path(reference), inputs)
    else:
        probe = manifest.payload.get("probe")
        if not probe:
            raise InputError(f"{artifact.name} carries no verification probe",
                             "pass --reference MODEL.onnx or an x86 artifact of the same model")
        with tempfile.TemporaryDirectory(prefix="edgevision-probe-") as tmp:
            unpack(artifact, Path(tmp))  # checks every member's sha256 first
            with np.load(Path(tmp) / "payload" / probe["file"]) as data:
                inputs, expected = data["inputs"], data["outputs"]
        ref_name = probe["reference"]
    device, outputs, stats, seconds = run_on_device(artifact, inputs, manifest.target.arch,
                                                    manifest.target.options.get("qemu_cpu", "cortex-a72"),
                                                    build_sysroot)
    if outputs.shape != expected.shape:
        raise ArtifactError(f"the artifact outputs shape {outputs.shape}, the reference {expected.shape}",
                            "the reference is not the same model: pass the matching one")
    diff = float(np.abs(outputs.astype(np.float64) - expected).max())
    top1 = float((outputs.argmax(1) == expected.argmax(1)).mean())
    result = Verification(device=device, reference=ref_name, inputs=len(inputs), max_abs_diff=diff,
                          top1_agreement=top1, tolerance=tolerance, passed=diff <= tolerance and top1 == 1.0,
                          seconds=round(seconds, 2), load_s=stats["load_s"],
                          run_s_per_input=stats["run_s_per_input"],
                          chelsea_top1=":".join(str(v) for v in stats["chelsea_top1"]))
    log.info("verified %s on %s: max|diff| %.3g", artifact, device, diff)
    return result


def record_verification(artifact: Path, verification: Verification, signer: Any = None) -> None:
    """Store the result in the artifact's manifest (payload.device_check); payload files are unchanged.

    A changed manifest breaks a signature: a signed artifact is re-signed with ``signer``
    (an edgevision.artifact.SigningKey), and refused without one.
    """
    from ..artifact import NO_POLICY, open_artifact, write_artifact

    artifact = Path(artifact)
    with tempfile.TemporaryDirectory(prefix="edgevision-record-") as tmp:
        with open_artifact(artifact, NO_POLICY, enforce=False) as opened:
            if opened.signature.signed and signer is None:
                raise ArtifactError(f"{artifact.name} is signed: recording the check would break its signature",
                                    "pass a key to re-sign it, or do not record")
            opened.extract(Path(tmp))
            manifest = opened.manifest
        manifest.payload = {**manifest.payload, RECORD_KEY: verification.to_dict()}
        write_artifact(manifest, Path(tmp) / "payload", artifact, signer=signer)
