"""Prove an artifact computes what the x86 reference computes, on the device's own instruction set,
through the package a device owner installs, from image files.

At compile time a cross target stores a *probe* in its payload: which bundled photos (name and
sha256) and ONNX Runtime's x86 logits for them, decoded and preprocessed on x86. The device side
(:mod:`.device_check`) reads the same photo files and does its own decoding and preprocessing with its
own OpenCV -- natively, or under qemu-aarch64 in a venv of the installed edgevision wheel plus the
target's device extra (:mod:`.device_env`) -- and returns logits. OpenCV's aarch64 resize differs from
x86's by one level on ~21% of tensor elements with INTER_LINEAR (edgevision uses the bit-exact
INTER_LINEAR_EXACT, see preprocess.py), so the comparison is a tolerance scaled by each image's
logit range that covers such an OpenCV, plus equal top-1 on every photo.
"""
from __future__ import annotations

import hashlib
import json
import logging
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..errors import ArtifactError, BackendUnavailable, EdgevisionError, InputError

if TYPE_CHECKING:
    from ..artifact.manifest import Manifest
    from ..preprocess import PreprocessConfig
    from ..targets import Target

log = logging.getLogger(__name__)

PROBE_FILE = "probe.npz"
PROBE_IMAGES = ("chelsea", "coffee", "camera")
RECORD_KEY = "device_check"  # where a verification lands in the manifest's payload
DEVICE_TIMEOUT_S = 1800
# Under qemu-user every guest thread is a host thread: the target's 4 threads on a 2-core host spin
# against each other (EfficientNet-Lite0 in ONNX Runtime: 17 s per photo, against ~3.5 s with one).
# Emulation checks what is computed, not speed, so it runs one thread.
EMULATED_THREADS = 1


@dataclass(frozen=True)
class LogitTolerance:
    """|device - reference| <= atol + rtol * (max - min of the reference logits of that image).

    Scaled by the logit range because logits have no fixed scale (ResNet-50's span ~40, a small
    net's ~10). edgevision's bilinear resize is OpenCV's bit-exact one, so its own preprocessing gives
    the same tensor on aarch64 and x86 (measured difference then: ~1e-5, the runtimes' kernels); the
    default rtol of 2% still covers a device whose OpenCV resizes differently (plain INTER_LINEAR on
    aarch64: up to 0.19 on EfficientNet-Lite0 photos whose logits span 10-15, i.e. 1.8%), and stays
    far below what a wrong kernel or another preprocessing gives (whole logits)."""

    rtol: float = 0.02
    atol: float = 1e-3

    def __post_init__(self) -> None:
        if not (self.rtol >= 0 and self.atol >= 0):
            raise InputError(f"tolerance rtol={self.rtol}, atol={self.atol} is negative", "pass values >= 0")

    def bounds(self, reference: np.ndarray) -> np.ndarray:
        """The allowed |difference| per image (rows of ``reference``)."""
        span = reference.max(axis=1) - reference.min(axis=1)
        return self.atol + self.rtol * span

    def to_dict(self) -> dict[str, Any]:
        return {"rtol": self.rtol, "atol": self.atol, "scale": "per-image logit range (max - min)"}


@dataclass(frozen=True)
class Verification:
    device: str  # e.g. "qemu-aarch64-static -cpu cortex-a72" or "native x86_64"
    reference: str
    images: list[str]
    max_abs_diff: float
    max_allowed: float  # the tolerance bound on the worst image
    worst_ratio: float  # max over images of diff / bound: <= 1 passes
    top1_agreement: float
    tolerance: dict[str, Any]
    passed: bool
    seconds: float  # wall clock, emulator and runtime start included
    load_s: float
    run_s_per_input: float
    cold_start_s: float | None  # process start to first prediction (emulated time under qemu: not speed)
    top1: list[str]  # the device's top-1 "index:label" per image
    install: dict[str, Any] = field(default_factory=dict)  # what ran: wheel, extra, venv size
    process: dict[str, Any] = field(default_factory=dict)  # modules / compiler libraries seen in it
    stage: str = "edgevision verify (installed package, from image files)"

    @property
    def inputs(self) -> int:
        return len(self.images)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["inputs"] = self.inputs
        data["process"] = {k: v for k, v in self.process.items() if k != "shared_libraries"}
        return data


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def reference_logits(onnx_path: Path, preprocess_config: "PreprocessConfig",
                     names: Sequence[str] = PROBE_IMAGES) -> tuple[str, np.ndarray]:
    """ONNX Runtime on this host on the bundled photos, decoded and preprocessed here."""
    import onnxruntime as ort

    from ..preprocess import preprocess
    from ..samples import sample_image

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    out = [session.run(None, {name: preprocess(sample_image(n), preprocess_config)[None]})[0] for n in names]
    return f"onnxruntime {ort.__version__} on {platform.machine()} (exported ONNX)", np.concatenate(out)


def write_probe(onnx_path: Path, preprocess_config: "PreprocessConfig", out_file: Path,
                names: Sequence[str] = PROBE_IMAGES) -> dict[str, Any]:
    """Store the x86 reference logits for the probe photos; returns the manifest entry."""
    from ..samples import IMAGES_DIR

    reference, outputs = reference_logits(onnx_path, preprocess_config, names)
    np.savez(out_file, outputs=outputs.astype(np.float32))
    return {"file": out_file.name, "images": list(names), "reference": reference,
            "image_sha256": {n: _sha256(IMAGES_DIR / f"{n}.jpg") for n in names}}


def device_extra(target: "Target") -> str:
    """The pip extra a device of this target installs (target [requires] extra, else the backend's)."""
    from ..backends import get_backend

    return str(target.requires.get("extra") or get_backend(target.backend).extra)


@dataclass(frozen=True)
class DeviceRun:
    device: str
    logits: np.ndarray
    stats: dict[str, Any]
    seconds: float
    cold_start_s: float | None
    install: dict[str, Any]


def _device_runner(target: "Target", build_sysroot: bool, wheel: Path | None) -> tuple[str, Any, dict[str, Any]]:
    """How to start the device side here: natively, or under qemu in the venv of the installed wheel."""
    host = platform.machine()
    if target.arch == host:
        return f"native {host}", None, {"python": sys.executable}
    if target.arch != "aarch64":
        raise BackendUnavailable(f"cannot emulate {target.arch} artifacts here (only aarch64 through qemu)",
                                 f"run `edgevision verify` on the {target.arch} device itself")
    from .device_env import ensure_device_env
    from .qemu import emulator_for

    emulator = emulator_for(str(target.options.get("qemu_cpu", "cortex-a72")), build=build_sysroot)
    env = ensure_device_env(emulator.sysroot, device_extra(target), wheel)
    install = {"extra": env.extra, "wheel": env.wheel, "venv": str(env.root),
               "venv_mb": round(env.size_bytes() / 1e6, 1)}
    return f"{emulator.qemu} -cpu {emulator.cpu}", emulator.with_python(env.python), install


def run_on_device(artifact: Path, target: "Target", names: Sequence[str] = PROBE_IMAGES,
                  build_sysroot: bool = True, wheel: Path | None = None,
                  timeout: float = DEVICE_TIMEOUT_S) -> DeviceRun:
    """Run the bundled photos ``names`` through the artifact on its own architecture."""
    device, emulator, install = _device_runner(target, build_sysroot, wheel)
    with tempfile.TemporaryDirectory(prefix="edgevision-verify-") as tmp:
        threads = [] if emulator is None else ["--threads", str(EMULATED_THREADS)]
        args = ["-m", "edgevision.emulation.device_check", *threads, str(Path(artifact).resolve()), tmp, *names]
        started_unix, started = time.time(), time.perf_counter()
        try:
            if emulator is None:
                done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout,
                                      cwd=tmp)
            else:
                done = emulator.run_python(args, timeout=timeout, cwd=Path(tmp))
        except subprocess.TimeoutExpired as err:
            raise EdgevisionError(f"the device-side run did not finish in {timeout:.0f} s",
                                  "use a smaller input size, or verify on the device") from err
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}, no output"])[-1]
            log.debug("device-side stderr:\n%s", done.stderr[-4000:])
            raise EdgevisionError(f"the artifact failed on {device}: {last}",
                                  "rerun with --debug to see the device-side log")
        stats = json.loads(done.stdout.strip().splitlines()[-1])
        first = stats.get("first_prediction_unix")
        cold = round(first - started_unix, 2) if first else None
        return DeviceRun(device, np.load(Path(tmp) / "logits.npy"), stats, round(seconds, 2), cold, install)


def compare(run: DeviceRun, expected: np.ndarray, names: Sequence[str], reference: str,
            tolerance: LogitTolerance, stage: str) -> Verification:
    if run.logits.shape != expected.shape:
        raise ArtifactError(f"the artifact outputs shape {run.logits.shape}, the reference {expected.shape}",
                            "the reference is not the same model: pass the matching one")
    diff = np.abs(run.logits.astype(np.float64) - expected).max(axis=1)
    bounds = tolerance.bounds(expected.astype(np.float64))
    ratio = diff / np.maximum(bounds, 1e-12)
    top1 = float((run.logits.argmax(1) == expected.argmax(1)).mean())
    process = run.stats.get("process", {})
    clean = not process.get("forbidden_modules") and not process.get("compiler_libraries")
    worst = int(ratio.argmax())
    return Verification(device=run.device, reference=reference, images=list(names),
                        max_abs_diff=float(diff.max()), max_allowed=float(bounds[worst]),
                        worst_ratio=round(float(ratio.max()), 4), top1_agreement=top1,
                        tolerance=tolerance.to_dict(), passed=bool(ratio.max() <= 1.0 and top1 == 1.0 and clean),
                        seconds=run.seconds, load_s=run.stats["load_s"], run_s_per_input=run.stats["run_s_per_input"],
                        cold_start_s=run.cold_start_s, top1=[f"{i}:{label}" for i, label in run.stats["top1"]],
                        install=run.install, process=process, stage=stage)


def _check_photos(run: DeviceRun, expected_sha: dict[str, str]) -> None:
    """The device must have read the very files the reference was made from."""
    seen = run.stats.get("images", {})
    differ = [n for n, sha in expected_sha.items() if seen.get(n) not in (None, sha)]
    if differ:
        raise ArtifactError(f"the device's bundled photo(s) {', '.join(differ)} differ from those the reference "
                            "was made from", "verify with the same edgevision version, or pass --reference")


def verify_artifact(artifact: Path, tolerance: LogitTolerance | None = None, reference: Path | None = None,
                    build_sysroot: bool = True, wheel: Path | None = None) -> Verification:
    """Compare the artifact on its device (or qemu) with the x86 reference; raises nothing on a mismatch."""
    from ..artifact import read_manifest, unpack

    tolerance = tolerance or LogitTolerance()
    artifact = Path(artifact)
    manifest = read_manifest(artifact)
    if reference is not None:
        from ..samples import image_paths

        names = [p.stem for p in image_paths()]
        ref_name, expected = _reference_outputs(Path(reference), manifest, names)
        expected_sha: dict[str, str] = {}
    else:
        probe = manifest.payload.get("probe")
        if not probe or "image_sha256" not in probe:
            raise InputError(f"{artifact.name} carries no verification probe of image files",
                             "pass --reference MODEL.onnx or an x86 artifact of the same model")
        with tempfile.TemporaryDirectory(prefix="edgevision-probe-") as tmp:
            unpack(artifact, Path(tmp))  # checks every member's sha256 first
            with np.load(Path(tmp) / "payload" / probe["file"]) as data:
                expected = data["outputs"]
        names, ref_name, expected_sha = list(probe["images"]), probe["reference"], probe["image_sha256"]
    run = run_on_device(artifact, manifest.target, names, build_sysroot, wheel)
    _check_photos(run, expected_sha)
    result = compare(run, expected, names, ref_name, tolerance,
                     "edgevision verify (installed package, from image files)")
    log.info("verified %s on %s: max|diff| %.3g", artifact, run.device, result.max_abs_diff)
    return result


def _reference_outputs(reference: Path, manifest: "Manifest", names: Sequence[str]) -> tuple[str, np.ndarray]:
    if reference.suffix == ".onnx":
        return reference_logits(reference, manifest.preprocess, names)
    from ..runtime import load
    from ..samples import sample_image

    with load(reference) as model:
        out = [model.run(model.preprocess(sample_image(n))[None]) for n in names]
        return f"{model.manifest.backend} artifact {reference.name} on {platform.machine()}", np.concatenate(out)


def probe_for_compile(onnx_path: Path, manifest: "Manifest", payload_dir: Path) -> dict[str, Any]:
    """A cross target's payload carries the x86 reference (``probe``) for verifying it on the device."""
    import importlib.util

    if importlib.util.find_spec("onnxruntime") is None:
        log.warning("onnxruntime missing: the %s artifact carries no verification probe", manifest.target.name)
        return {}
    return {"probe": write_probe(onnx_path, manifest.preprocess, payload_dir / PROBE_FILE)}


def emulation_mode(target: "Target", options: dict[str, Any]) -> str | None:
    """Whether a compile runs its artifact under emulation: None when the target names no qemu CPU
    (or is this host's), else the option device_check=auto|on|off (auto: when the sysroot is cached)."""
    mode = str(options.get("device_check", "auto")).lower()
    if mode not in ("auto", "on", "off"):
        raise InputError(f"device_check={mode!r} is not auto, on or off", "write e.g. --option device_check=on")
    if not target.options.get("qemu_cpu") or target.arch == platform.machine() or mode == "off":
        return None
    if mode == "auto":
        from .qemu import find_sysroot, qemu_available

        if not (qemu_available() and find_sysroot() is not None):
            log.info("no qemu sysroot cached: skipping the emulated check (edgevision/emulation/rpi4_sysroot.sh)")
            return None
    return mode


def check_at_compile(artifact: Path, manifest: "Manifest", payload_dir: Path, mode: str,
                     wheel: Path | None = None) -> Verification:
    """The compile-time device check: ``artifact`` (a first write of the final file) on the emulated
    device, through the installed package, from the probe's photos, against the probe's logits."""
    probe = manifest.payload["probe"]
    with np.load(payload_dir / probe["file"]) as data:
        expected = data["outputs"]
    run = run_on_device(artifact, manifest.target, probe["images"], build_sysroot=mode == "on", wheel=wheel)
    _check_photos(run, probe["image_sha256"])
    return compare(run, expected, probe["images"], probe["reference"], LogitTolerance(),
                   "compile (installed package, from image files)")


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
