"""The package as a user gets it: the wheel built from this checkout, installed into a fresh virtualenv
outside the repo, run from a folder outside the repo with nothing of the checkout on the path.

Installing the workstation extras takes ~1-3 min with pip's cache warm (torch 2.13.0 comes from the
local CPU build, pinned through constraints.txt); the rpi4 compile installs the same wheel on the
emulated Pi for its device check.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

BUNDLED_TARGETS = sorted(p.stem for p in (REPO / "edgevision" / "data" / "targets").glob("*.toml"))


def _user_env(home: Path, wheel: Path) -> dict[str, str]:
    """The machine's environment less anything pointing at the checkout or the test venv."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "COV_", "COVERAGE", "VIRTUAL_ENV", "PYTEST"))}
    env.update({"HOME": str(home), "EDGEVISION_WHEEL": str(wheel), "OMP_WAIT_POLICY": "PASSIVE",
                "XDG_CACHE_HOME": os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache")),
                "EDGEVISION_CACHE": os.environ.get("EDGEVISION_CACHE", str(Path.home() / ".cache" / "edgevision"))})
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from edgevision.emulation.qemu import ensure_sysroot

    ensure_sysroot(build=True)  # the rpi4 compile's emulated check runs only where the sysroot exists
    root = tmp_path_factory.mktemp("user")
    assert REPO not in root.parents
    dist = root / "dist"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(dist), str(REPO)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next(dist.glob("edgevision-*.whl"))
    venv = root / "venv"
    env = _user_env(root, wheel)  # no PYTHONPATH: pip would take a checkout on it for "already installed"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300, env=env, cwd=root)
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                          "-c", str(REPO / "constraints.txt"), f"{wheel}[workstation]"],
                         capture_output=True, text=True, timeout=1500, env=env, cwd=root)
    assert pip.returncode == 0, pip.stderr[-3000:]
    work = root / "work"
    work.mkdir()
    return {"bin": venv / "bin", "work": work, "env": env, "wheel": wheel}


def _edgevision(installed: dict, *args: str, timeout: float = 1500) -> subprocess.CompletedProcess:
    done = subprocess.run([str(installed["bin"] / "edgevision"), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=installed["work"], env=installed["env"])
    assert done.returncode == 0, f"edgevision {' '.join(args)}:\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr
    return done


def test_the_installed_package_is_not_the_checkout(installed: dict) -> None:
    done = subprocess.run([str(installed["bin"] / "python"), "-c", "import edgevision, sys; print(edgevision.__file__)"],
                          capture_output=True, text=True, cwd=installed["work"], env=installed["env"], timeout=120)
    where = Path(done.stdout.strip())
    assert done.returncode == 0 and "site-packages" in where.parts and REPO not in where.parents


def test_targets_lists_every_bundled_target(installed: dict) -> None:
    out = _edgevision(installed, "targets").stdout
    missing = [name for name in BUNDLED_TARGETS if name not in out]
    assert len(BUNDLED_TARGETS) >= 9 and not missing, missing


@pytest.mark.parametrize("args", [
    ("--target", "onnxruntime-cpu"),
    ("--target", "intel-cpu"),
    ("--target", "intel-cpu", "--precision", "int8"),  # the bundled calibration images
], ids=["onnxruntime-cpu", "intel-cpu", "intel-cpu-int8"])
def test_the_installed_package_compiles_the_default_model(installed: dict, args: tuple[str, ...]) -> None:
    name = "-".join(args[1::2])
    out = installed["work"] / f"{name}.evpkg"
    _edgevision(installed, "compile", *args, "-o", str(out))
    predicted = _edgevision(installed, "predict", str(out), "-k", "1").stdout
    assert "chelsea" in predicted and "cat" in predicted  # a real class from the real pretrained model


def test_the_installed_package_compiles_for_the_pi_with_its_emulated_check(installed: dict) -> None:
    """The rpi4 compile installs this same wheel on the emulated Pi and runs it there. The default
    schedule search is off here (minutes on 2 cores; test_tvm.py tests it)."""
    out = installed["work"] / "lite0.rpi4.evpkg"
    _edgevision(installed, "compile", "--target", "rpi4", "--option", "default_schedule=off",
                "--option", "device_check=on", "-o", str(out), timeout=2400)
    info = _edgevision(installed, "info", str(out), "--json").stdout
    import json

    check = json.loads(info)["payload"]["device_check"]
    assert check["passed"] and check["top1_agreement"] == 1.0 and "qemu" in check["device"]
    assert check["install"]["extra"] == "tvm-runtime"


def test_demo_and_stream_run_on_the_bundled_data(installed: dict) -> None:
    demo = _edgevision(installed, "demo", "--frames", "20", "--out", str(installed["work"] / "demo"))
    assert "accuracy gate PASS" in demo.stdout and "frame" in demo.stdout
    artifact = next((installed["work"] / "demo").glob("*.evpkg"))
    stream = _edgevision(installed, "stream", str(artifact), "-n", "10")  # the bundled clip, headless
    assert "stream:" in stream.stdout + stream.stderr
