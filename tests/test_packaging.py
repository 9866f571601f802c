"""Packaging: the wheel holds what runs, the sample clip is bundled, the wheelhouse asks pip for the device's
wheels, and `stream` checks its source before it loads a model."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import pytest

from edgevision.errors import InputError, TargetError
from edgevision.samples import sample_clip
from edgevision.targets import get_target
from edgevision.wheelhouse import DevicePlatform, build_wheelhouse, device_platform

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgevision.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=120)


def test_bundled_clip_is_inside_the_package_and_decodes() -> None:
    clip = sample_clip()
    assert clip.is_relative_to(ROOT / "edgevision")
    cap = cv2.VideoCapture(str(clip))
    frames = 0
    while cap.read()[0]:
        frames += 1
    assert frames == 80 and clip.stat().st_size < 1_500_000


def test_stream_checks_its_source_before_loading_the_model(tmp_path: Path) -> None:
    # The artifact does not exist either: the source error comes first, so no model was loaded.
    done = _cli("stream", str(tmp_path / "missing.evpkg"), "--source", str(tmp_path / "nope.mp4"), cwd=tmp_path)
    assert done.returncode == 2 and "nope.mp4 not found" in done.stderr and "Traceback" not in done.stderr
    done = _cli("stream", str(tmp_path / "missing.evpkg"), "--source", "9", cwd=tmp_path)
    assert done.returncode == 2 and "camera 9 not found" in done.stderr


def test_device_platform_lists_every_manylinux_tag_the_pi_accepts() -> None:
    device = device_platform(get_target("rpi4"))
    assert (device.arch, device.python, device.glibc, device.abi) == ("aarch64", "3.11", "2.36", "cp311")
    tags = device.platform_tags()
    # openvino's aarch64 wheels are manylinux_2_35 only, TVM's and numpy's manylinux_2_28 / 2_17
    assert tags[0] == "manylinux_2_36_aarch64" and "manylinux_2_35_aarch64" in tags and "manylinux_2_28_aarch64" in tags
    assert tags[-2:] == ["manylinux_2_17_aarch64", "manylinux2014_aarch64"]
    with pytest.raises(InputError, match="3.N"):
        DevicePlatform("aarch64", "311", "2.36")


def _fake_wheel(folder: Path) -> Path:
    wheel = folder / "edgevision-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("edgevision-0.1.0.dist-info/METADATA",
                         "Name: edgevision\nProvides-Extra: tvm-runtime\nProvides-Extra: onnxruntime\n")
    return wheel


def test_wheelhouse_downloads_the_target_extra_for_the_device_and_leaves_nothing_on_failure(tmp_path: Path) -> None:
    wheel = _fake_wheel(tmp_path)
    calls: list[list[str]] = []

    def pip(cmd):
        calls.append(list(cmd))
        dest = Path(cmd[cmd.index("--dest") + 1])
        (dest / "numpy-2.4.6-cp311-cp311-manylinux_2_28_aarch64.whl").write_bytes(b"x")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    house = build_wheelhouse(get_target("rpi4"), tmp_path / "wheels", wheel=wheel, run=pip)
    cmd = calls[0]
    assert cmd[-1].endswith("edgevision-0.1.0-py3-none-any.whl[tvm-runtime]")
    assert cmd[cmd.index("--python-version") + 1] == "3.11" and "manylinux_2_35_aarch64" in cmd
    assert sorted(p.name for p in (tmp_path / "wheels").iterdir()) == [
        "edgevision-0.1.0-py3-none-any.whl", "numpy-2.4.6-cp311-cp311-manylinux_2_28_aarch64.whl"]
    assert "--no-index --find-links wheels/ 'edgevision[tvm-runtime]'" in house.install_command()

    def failing(cmd):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found for numpy")

    with pytest.raises(Exception, match="No matching distribution"):
        build_wheelhouse(get_target("rpi4"), tmp_path / "other", wheel=wheel, run=failing)
    assert list((tmp_path / "other").iterdir()) == []
    with pytest.raises(TargetError, match="no extra 'openvino'"):
        build_wheelhouse(get_target("rpi4"), tmp_path / "x", wheel=wheel, extra="openvino", run=pip)
