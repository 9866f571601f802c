"""The package a Pi owner installs, run on the emulated Pi, and the runtime-only load path.

The qemu tests install the wheel built from this checkout with one device extra into a venv inside
the cached arm64 sysroot (edgevision.emulation.device_env) and run the installed `edgevision` command
there under ``qemu-aarch64-static -cpu cortex-a72``, with a Raspberry Pi 4 /proc/cpuinfo. Nothing of the
checkout is on the guest's path. Emulated times are not speed.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from conftest import NAIVE_TVM, REPO

BACKEND_TARGETS = ("rpi4", "rpi4-onnxruntime", "rpi4-openvino")
STREAM_FRAMES = 4
# The compile's device check already ran all 8 photos in the guest; the CLI runs three of them.
GUEST_PHOTOS = ("chelsea", "coffee", "rocket")
GUEST_TIMEOUT_S = 900


@pytest.fixture(scope="session")
def sysroot():
    from edgevision.emulation.qemu import ensure_sysroot, qemu_available

    if not qemu_available():
        pytest.fail("qemu-aarch64-static is missing: scripts/setup.sh installs it (apt-get install qemu-user-static)")
    return ensure_sysroot(build=True)


@pytest.fixture(scope="session")
def pi_artifacts(sysroot, artifacts_dir: Path) -> dict[str, Path]:
    """The default model (EfficientNet-Lite0) for each Pi target, compiled once. The rpi4 compile runs
    its device check on the emulated Pi (the sysroot is cached, so device_check=auto runs it); the
    check is the same code for every backend, so the other two skip it here (minutes of emulated
    Lite0 each) and are run in the guest by the tests below, and `verify` checks rpi4-openvino."""
    from edgevision.compiler import CompileRequest, compile_model

    built = {}
    for target in BACKEND_TARGETS:
        out = artifacts_dir / f"lite0.{target}.evpkg"
        if not out.exists():
            compile_model(CompileRequest(output=out, target=target,
                                         options=NAIVE_TVM if target == "rpi4" else {"device_check": "off"}))
        built[target] = out
    return built


@pytest.fixture(scope="session")
def x86_top1(pi_artifacts) -> dict[str, int]:
    """Top-1 per bundled photo on this x86 host: the rpi4-onnxruntime payload is portable and runs here."""
    from edgevision.runtime import load
    from edgevision.samples import image_paths, read_image

    with load(pi_artifacts["rpi4-onnxruntime"]) as model:
        return {p.name: model.predict(read_image(p), top_k=1)[0].index for p in image_paths()}


def _guest(emulator, args: list[str], report: Path) -> dict:
    """Run the installed `edgevision ARGS` in the guest (through its entry point, reporting what the
    process imported and mapped); the first stdout line's arrival time gives the cold start."""
    cmd = emulator.command(["-m", "edgevision.emulation.inspect_run", str(report), *args])
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=emulator.env({"PYTHONUNBUFFERED": "1"}), cwd=str(report.parent))
    lines: list[tuple[float, str]] = []
    errors: list[str] = []
    reader = threading.Thread(target=lambda: errors.extend(proc.stderr))
    reader.start()
    try:
        for line in proc.stdout:
            lines.append((time.perf_counter() - started, line.rstrip("\n")))
        proc.wait(timeout=GUEST_TIMEOUT_S)
    finally:
        if proc.poll() is None:  # no qemu outlives the test
            proc.kill()
            proc.wait()
        reader.join()
    assert proc.returncode == 0, "".join(errors)[-3000:]
    return {"lines": lines, "report": json.loads(report.read_text()), "wall_s": time.perf_counter() - started}


def _assert_compile_check(check: dict, manifest) -> None:
    from edgevision.emulation.verify import device_extra

    assert check["device"] == "qemu-aarch64-static -cpu cortex-a72" and check["passed"], check
    assert check["stage"].startswith("compile (installed package, from image files)")
    assert check["tolerance"]["rtol"] > 0 and check["max_abs_diff"] <= check["max_allowed"]
    assert check["top1_agreement"] == 1.0 and check["install"]["extra"] == device_extra(manifest.target)


def test_the_installed_package_runs_each_backend_on_the_emulated_pi(pi_artifacts, x86_top1, sysroot,
                                                                     tmp_path: Path) -> None:
    """predict three bundled photos and stream 4 frames, per backend, in a venv of the wheel plus
    that backend's device extra: same top-1 as x86 on every photo, runtime only (no libtvm_compiler,
    no torch, no onnx in the process), and the rpi4 compile's device check recorded in its manifest."""
    from edgevision.artifact import read_manifest
    from edgevision.emulation.device_env import ensure_device_env
    from edgevision.emulation.qemu import Emulator
    from edgevision.emulation.verify import device_extra
    from edgevision.samples import IMAGES_DIR, sample_clip

    jobs = {}
    envs = {}
    for target, artifact in pi_artifacts.items():
        manifest = read_manifest(artifact)
        check = manifest.payload.get("device_check")
        if target != "rpi4":
            assert check is None  # skipped at compile (see pi_artifacts); run in the guest below
        else:
            _assert_compile_check(check, manifest)
        env = ensure_device_env(sysroot, device_extra(manifest.target))  # cached: the compile built it
        envs[target] = env
        emulator = Emulator(sysroot).with_python(env.python)
        work = tmp_path / target
        work.mkdir()
        photos = [str(IMAGES_DIR / f"{name}.jpg") for name in GUEST_PHOTOS]
        jobs[(target, "predict")] = (emulator, ["predict", str(artifact), *photos, "-k", "1", "--threads", "1"],
                                     work / "predict.json")
        jobs[(target, "stream")] = (emulator, ["stream", str(artifact), "--source", str(sample_clip()), "-n",
                                               str(STREAM_FRAMES), "--threads", "1"], work / "stream.json")
    # Two guests at a time: each runs one inference thread, and this host has two cores.
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {key: pool.submit(_guest, *job) for key, job in jobs.items()}
        results = {key: future.result() for key, future in futures.items()}

    figures = {}
    for target in BACKEND_TARGETS:
        predict, stream = results[(target, "predict")], results[(target, "stream")]
        for run in (predict, stream):
            report = run["report"]
            assert report["exit"] == 0
            assert report["forbidden_modules"] == [], (target, report["forbidden_modules"])
            assert report["compiler_libraries"] == [], (target, report["compiler_libraries"])
            assert report["edgevision"].startswith(str(envs[target].site))  # the installed copy, not the checkout
        runtime_libs = {"rpi4": "libtvm_runtime", "rpi4-onnxruntime": "onnxruntime", "rpi4-openvino": "libopenvino"}
        assert any(runtime_libs[target] in lib for lib in predict["report"]["shared_libraries"])
        device_top1 = {}
        for _, line in predict["lines"]:
            found = re.match(r"(\S+)\s+[\d.]+ ms\s+.*\((\d+)\) [\d.]+$", line)
            if found:
                device_top1[found.group(1)] = int(found.group(2))
        assert device_top1 == {f"{name}.jpg": x86_top1[f"{name}.jpg"] for name in GUEST_PHOTOS}, target
        frames = [line for _, line in stream["lines"] if line.startswith("frame ")]
        assert len(frames) == STREAM_FRAMES, stream["lines"][-5:]
        first = next(t for t, line in predict["lines"] if re.match(r"\S+\s+[\d.]+ ms", line))
        figures[target] = {"venv_mb": round(envs[target].size_bytes() / 1e6), "cold_start_s": round(first, 1),
                           "predict_wall_s": round(predict["wall_s"], 1), "stream_wall_s": round(stream["wall_s"], 1)}
    print("\nemulated Pi (qemu-aarch64 -cpu cortex-a72; emulated time, not speed; 2 guests at a time):")
    for target, row in figures.items():
        print(f"  {target:18s} installed {row['venv_mb']:4d} MB  cold start {row['cold_start_s']:6.1f} s  "
              f"predict {len(GUEST_PHOTOS)} photos {row['predict_wall_s']:6.1f} s  stream {STREAM_FRAMES} frames {row['stream_wall_s']:6.1f} s")


def test_verify_installs_the_package_on_the_emulated_pi_and_records_it(pi_artifacts, tmp_path: Path) -> None:
    import shutil

    from conftest import run_cli
    from edgevision.artifact import read_manifest

    artifact = tmp_path / "lite0.rpi4-openvino.evpkg"
    shutil.copyfile(pi_artifacts["rpi4-openvino"], artifact)
    result = run_cli("verify", str(artifact), "--no-build")
    assert result.returncode == 0, result.stderr
    assert "PASS" in result.stdout
    check = read_manifest(artifact).payload["device_check"]
    assert check["install"]["extra"] == "openvino" and check["install"]["wheel"].startswith("edgevision-")
    assert check["stage"].startswith("edgevision verify") and check["images"] == ["chelsea", "coffee", "camera"]
    assert check["top1_agreement"] == 1.0 and check["process"]["forbidden_modules"] == []
    # a tolerance of nothing at all fails, with one line
    strict = run_cli("verify", str(artifact), "--no-build", "--no-record", "--rtol", "0", "--atol", "0")
    if check["max_abs_diff"] > 0:
        assert strict.returncode != 0 and "differs from" in strict.stderr and "Traceback" not in strict.stderr


# --- no emulator needed -------------------------------------------------------------------------

def test_portable_payloads_run_on_any_cpu_and_tvm_libraries_do_not() -> None:
    from edgevision.backends import get_backend
    from edgevision.targets import get_target

    pi_ort, pi_tvm = get_target("rpi4-onnxruntime"), get_target("rpi4")
    assert get_backend("onnxruntime").runs_on(pi_ort, "x86_64") and get_backend("openvino").runs_on(
        get_target("rpi4-openvino"), "x86_64")
    assert get_backend("onnxruntime").runs_on(get_target("onnxruntime-cpu"), "aarch64")
    assert not get_backend("tvm").runs_on(pi_tvm, "x86_64") and get_backend("tvm").runs_on(pi_tvm, "aarch64")
    assert get_backend("tvm").can_run(pi_tvm)[0] is False


def test_the_logit_tolerance_scales_with_each_images_range() -> None:
    from edgevision.emulation.verify import DeviceRun, LogitTolerance, compare
    from edgevision.errors import InputError

    tol = LogitTolerance(rtol=0.02, atol=1e-3)
    reference = np.array([[0.0, 10.0, 2.0], [0.0, 40.0, 1.0]])
    assert np.allclose(tol.bounds(reference), [0.201, 0.801])
    ok = DeviceRun("d", (reference + [[0, 0.2, 0], [0.8, 0, 0]]).astype(np.float32),
                   {"load_s": 1, "run_s_per_input": 1, "top1": [[1, "b"], [1, "b"]]}, 1.0, 1.0, {})
    passed = compare(ok, reference, ["a", "b"], "ref", tol, "test")
    assert passed.passed and passed.worst_ratio <= 1
    too_far = DeviceRun("d", (reference + [[0, 0.3, 0], [0, 0, 0]]).astype(np.float32), ok.stats, 1, 1, {})
    assert not compare(too_far, reference, ["a", "b"], "ref", tol, "test").passed
    flipped = DeviceRun("d", np.array([[0, 10, 10.1], [0, 40, 1]], np.float32), ok.stats, 1, 1, {})
    assert compare(flipped, reference, ["a", "b"], "ref", LogitTolerance(rtol=1), "test").top1_agreement == 0.5
    dirty = DeviceRun("d", reference.astype(np.float32), {**ok.stats, "process": {"forbidden_modules": ["torch"]}},
                      1, 1, {})
    assert not compare(dirty, reference, ["a", "b"], "ref", tol, "test").passed
    with pytest.raises(InputError):
        LogitTolerance(rtol=-1)


def test_bilinear_resize_is_the_bit_exact_one() -> None:
    """INTER_LINEAR_EXACT is what makes the Pi's preprocessing equal x86's (measured under qemu)."""
    import cv2

    from edgevision.preprocess import _INTERPOLATIONS

    assert _INTERPOLATIONS["bilinear"] == cv2.INTER_LINEAR_EXACT


def test_wheel_digest_ignores_zip_timestamps(tmp_path: Path) -> None:
    import zipfile

    from edgevision.emulation.device_env import wheel_digest

    for name, date in (("a.whl", (2020, 1, 1, 0, 0, 0)), ("b.whl", (2026, 12, 1, 0, 0, 0))):
        with zipfile.ZipFile(tmp_path / name, "w") as zf:
            zf.writestr(zipfile.ZipInfo("edgevision/__init__.py", date), "x = 1\n")
    with zipfile.ZipFile(tmp_path / "c.whl", "w") as zf:
        zf.writestr("edgevision/__init__.py", "x = 2\n")
    assert wheel_digest(tmp_path / "a.whl") == wheel_digest(tmp_path / "b.whl") != wheel_digest(tmp_path / "c.whl")


def test_without_mount_namespaces_the_guest_sees_the_host_cpuinfo_and_says_so(monkeypatch, caplog) -> None:
    from edgevision.emulation import qemu

    emulator = qemu.Emulator(qemu.Sysroot(Path("/nonexistent")))
    monkeypatch.setattr(qemu, "cpuinfo_namespace_works", lambda cpuinfo=None: False)
    with caplog.at_level("WARNING"):
        cmd = emulator.command(["-c", "pass"])
    assert cmd[0] == qemu.QEMU and len([r for r in caplog.records if "cpuinfo" in r.message]) == 1
    monkeypatch.setattr(qemu, "cpuinfo_namespace_works", lambda cpuinfo=None: True)
    cmd = emulator.command(["-c", "pass"])
    assert cmd[:3] == ["unshare", "-m", "sh"] and str(qemu.PI4_CPUINFO) in cmd
    assert "PYTHONPATH" not in emulator.with_python(Path("/venv/bin/python3")).env()  # no checkout on the path


def test_the_real_namespace_shows_a_cortex_a72() -> None:
    from edgevision.emulation.qemu import PI4_CPUINFO, cpuinfo_namespace_works

    if not cpuinfo_namespace_works():
        pytest.skip("this host does not permit unshare -m (not root)")
    done = subprocess.run(["unshare", "-m", "sh", "-c", 'mount --bind "$1" /proc/cpuinfo && shift && exec "$@"',
                           "sh", str(PI4_CPUINFO), "cat", "/proc/cpuinfo"], capture_output=True, text=True)
    assert "CPU part\t: 0xd08" in done.stdout  # 0xd08: Cortex-A72
    assert "0xd08" not in Path("/proc/cpuinfo").read_text()  # and only inside the namespace


def test_loading_tvm_for_a_device_imports_no_torch_and_maps_no_compiler() -> None:
    """import_runtime(runtime_only=True) as on the Pi: no libtvm_compiler mapped, no torch although
    torch is installed here, and the user's environment left as it was for child processes."""
    code = """
import json, os, sys
from edgevision.backends.tvm import import_runtime
tvm = import_runtime(runtime_only=True)
maps = open('/proc/self/maps').read()
print(json.dumps({"torch": "torch" in sys.modules, "onnx": "onnx" in sys.modules,
                  "compiler": "libtvm_compiler" in maps, "runtime": "libtvm_runtime" in maps,
                  "env": os.environ.get("TVM_USE_RUNTIME_LIB")}))
import torch  # still importable afterwards
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**{k: v for k, v in os.environ.items() if k != "TVM_USE_RUNTIME_LIB"},
                               "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {"torch": False, "onnx": False, "compiler": False, "runtime": True, "env": None}


def test_loading_a_tvm_x86_artifact_imports_no_torch(compile_artifact) -> None:
    """The x86 runtime path: torch is installed on this host and ``import tvm`` would import it."""
    artifact = compile_artifact("mnv2-96.tvm-x86.evpkg", target="tvm-x86", input_size=(96, 96), options=NAIVE_TVM,
                                model=str(REPO / "examples" / "mobilenet_v2.py") + ":mobilenet_v2")
    code = f"""
import json, sys
import edgevision.runtime as rt
from edgevision.samples import sample_image
with rt.load({str(artifact)!r}) as model:
    model.predict(sample_image("coffee"))
maps = open('/proc/self/maps').read()
print(json.dumps({{"torch": "torch" in sys.modules, "onnx": "onnx" in sys.modules,
                  "compiler": "libtvm_compiler" in maps}}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-2000:]
    # tvm-x86 is not a runtime_only target: the workstation keeps its compiler; torch stays out regardless.
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"torch": False, "onnx": False, "compiler": True}


GUEST_POLICY_CHECK = """
import json, sys
import edgevision.runtime as rt
from edgevision.samples import sample_image
report = {}
for path in sys.argv[2:]:
    try:
        with rt.load(path) as model:
            report[path] = model.predict(sample_image("chelsea"), top_k=1)[0].index
    except Exception as err:
        report[path] = f"{type(err).__name__}: {err}"
    report[path + ":tvm_imported"] = "tvm" in sys.modules
json.dump(report, open(sys.argv[1], "w"))
"""


def test_an_artifact_signed_on_x86_loads_under_the_policy_on_the_emulated_pi(pi_artifacts, x86_top1, sysroot,
                                                                             tmp_path: Path) -> None:
    """#18 on the device: the rpi4 artifact is signed here, and the installed package on the emulated Pi
    loads it under EDGEVISION_TRUSTED_KEYS, while the same artifact signed by another key is refused
    before the TVM runtime is imported."""
    from edgevision.artifact import SigningKey, generate_key_pair, sign_artifact
    from edgevision.emulation.device_env import ensure_device_env
    from edgevision.emulation.qemu import Emulator

    publisher, publisher_pub, _ = generate_key_pair("publisher", tmp_path)
    stranger, _, _ = generate_key_pair("stranger", tmp_path)
    trusted = sign_artifact(pi_artifacts["rpi4"], SigningKey.load(publisher), tmp_path / "trusted.rpi4.evpkg")
    foreign = sign_artifact(pi_artifacts["rpi4"], SigningKey.load(stranger), tmp_path / "foreign.rpi4.evpkg")
    env = ensure_device_env(sysroot, "tvm-runtime")
    report_file = tmp_path / "policy.json"
    done = Emulator(sysroot).with_python(env.python).run_python(
        ["-c", GUEST_POLICY_CHECK, str(report_file), str(foreign), str(trusted)], timeout=GUEST_TIMEOUT_S,
        extra_env={"EDGEVISION_TRUSTED_KEYS": str(publisher_pub)}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(report_file.read_text())
    refused = report[str(foreign)]
    assert isinstance(refused, str) and refused.startswith("ArtifactError") and "trusted" in refused, refused
    assert report[str(foreign) + ":tvm_imported"] is False  # refused before any backend library
    assert report[str(trusted)] == x86_top1["chelsea.jpg"]
