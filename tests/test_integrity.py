"""Artifacts are verified before anything in them is used; model files are not unpickled blindly.

Each refused artifact is loaded in a fresh interpreter that records whether the backend runtime was
imported: a refusal must come before any payload reaches ONNX Runtime.
"""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from conftest import REPO, run_cli
from reliability_models import MODELS, rewrite_artifact


@pytest.fixture(scope="module")
def artifact(compile_artifact) -> Path:
    return compile_artifact("i8-tiny.onnxruntime-cpu.evpkg", model=f"{MODELS}:tiny", target="onnxruntime-cpu")


def load_in_fresh_process(path: Path, tmp: Path) -> dict:
    """Try edgevision.runtime.load(path); report the error and whether onnxruntime got imported."""
    code = textwrap.dedent(f"""
        import json, sys
        import edgevision.runtime as rt
        result = {{"error": None, "type": None}}
        try:
            rt.load({str(path)!r}).close()
        except rt.EdgevisionError as err:
            result = {{"error": str(err), "type": type(err).__name__}}
        result["runtime_imported"] = "onnxruntime" in sys.modules
        print(json.dumps(result))
        """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp)})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def assert_refused(path: Path, tmp_path: Path, *needles: str) -> str:
    tmp = tmp_path / "tmp"
    tmp.mkdir(exist_ok=True)
    result = load_in_fresh_process(path, tmp)
    assert result["type"] == "ArtifactError", result
    assert not result["runtime_imported"], "the payload reached the backend runtime before the refusal"
    for needle in needles:
        assert needle in result["error"], result["error"]
    assert " — " in result["error"] and "\n" not in result["error"]
    assert [p.name for p in tmp.iterdir() if p.name != ".ses"] == []  # the unpack folder is gone again
    return result["error"]


def test_intact_artifact_loads_and_runs(artifact: Path, tmp_path: Path) -> None:
    """Control: the same harness accepts the untouched artifact (and then imports the runtime)."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    result = load_in_fresh_process(artifact, tmp)
    assert result["error"] is None and result["runtime_imported"]


def _flip_a_weight(name: str, data: bytes) -> bytes:
    if name != "payload/model.onnx":
        return data
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(data)
    tensor = max(model.graph.initializer, key=lambda t: len(t.raw_data) or len(t.float_data))
    values = numpy_helper.to_array(tensor).copy()
    values.flat[0] += 1.0  # one weight, still a valid ONNX model
    tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))
    return model.SerializeToString()


def test_tampered_payload_with_untouched_manifest(artifact: Path, tmp_path: Path) -> None:
    tampered = rewrite_artifact(artifact, tmp_path / "tampered.evpkg", member_edit=_flip_a_weight)
    with zipfile.ZipFile(artifact) as a, zipfile.ZipFile(tampered) as b:
        assert a.read("manifest.json") == b.read("manifest.json")
        assert a.read("payload/model.onnx") != b.read("payload/model.onnx")
    assert_refused(tampered, tmp_path, "payload/model.onnx fails its sha256 check", "tampered")


def test_truncated_artifact(artifact: Path, tmp_path: Path) -> None:
    data = artifact.read_bytes()
    for keep in (len(data) // 2, len(data) - 10):
        truncated = tmp_path / f"truncated-{keep}.evpkg"
        truncated.write_bytes(data[:keep])
        assert_refused(truncated, tmp_path, "not a readable edgevision artifact", "corrupt or truncated")


def test_member_missing_from_the_archive(artifact: Path, tmp_path: Path) -> None:
    gutted = rewrite_artifact(artifact, tmp_path / "gutted.evpkg",
                              member_edit=lambda name, data: None if name.startswith("payload/") else data)
    assert_refused(gutted, tmp_path, "do not match its manifest", "missing ['payload/model.onnx']")


def test_member_the_manifest_does_not_list(artifact: Path, tmp_path: Path) -> None:
    extra = rewrite_artifact(artifact, tmp_path / "extra.evpkg", extra=[("payload/libevil.so", b"\x7fELF")])
    assert_refused(extra, tmp_path, "unexpected ['payload/libevil.so']")


@pytest.mark.parametrize("member", ["../x", "payload/../../x", "/tmp/edgevision-absolute-x", "C:/x"])
def test_unsafe_member_paths(artifact: Path, tmp_path: Path, member: str) -> None:
    evil = rewrite_artifact(artifact, tmp_path / "evil.evpkg", extra=[(member, b"owned")])
    with zipfile.ZipFile(evil) as zf:
        assert member in zf.namelist()  # the archive really holds the raw name
    assert_refused(evil, tmp_path, "unsafe member path", repr(member))
    assert not (tmp_path / "x").exists() and not Path("/tmp/edgevision-absolute-x").exists()


def test_symlink_member(artifact: Path, tmp_path: Path) -> None:
    link = zipfile.ZipInfo("payload/model.onnx.link")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    evil = rewrite_artifact(artifact, tmp_path / "link.evpkg", extra=[(link, b"/etc/passwd")])
    assert_refused(evil, tmp_path, "symbolic link", "payload/model.onnx.link")


def test_payload_entry_pointing_outside(artifact: Path, tmp_path: Path) -> None:
    """The manifest itself cannot be hashed; what it tells the backend to open must stay inside."""
    evil = rewrite_artifact(artifact, tmp_path / "escape.evpkg",
                            manifest_edit=lambda m: m["payload"].update(model="../../../etc/passwd"))
    assert_refused(evil, tmp_path, "payload entry model='../../../etc/passwd' points outside")


def test_foreign_zip_without_manifest(tmp_path: Path) -> None:
    foreign = tmp_path / "photos.evpkg"
    with zipfile.ZipFile(foreign, "w") as zf:
        zf.writestr("IMG_0001.jpg", b"\xff\xd8\xff")
    assert_refused(foreign, tmp_path, "has no manifest.json: not an edgevision artifact")


def test_foreign_manifest(artifact: Path, tmp_path: Path) -> None:
    other = rewrite_artifact(artifact, tmp_path / "other.evpkg", manifest_edit=lambda m: m.update(format="mlpackage"))
    assert_refused(other, tmp_path, "not an edgevision artifact")


def test_manifest_that_is_not_json(artifact: Path, tmp_path: Path) -> None:
    broken = tmp_path / "nojson.evpkg"
    with zipfile.ZipFile(artifact) as zin, zipfile.ZipFile(broken, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, b"{not json" if info.filename == "manifest.json" else zin.read(info))
    assert_refused(broken, tmp_path, "manifest", "is not valid JSON")


def test_newer_format_version(artifact: Path, tmp_path: Path) -> None:
    newer = rewrite_artifact(artifact, tmp_path / "v9.evpkg", manifest_edit=lambda m: m.update(format_version=9))
    assert_refused(newer, tmp_path, "format version 9 is newer than this edgevision understands (1)",
                   "upgrade edgevision")


def test_info_refuses_what_load_refuses(artifact: Path, tmp_path: Path) -> None:
    """`edgevision info` reads only the manifest but applies the same member-name checks."""
    evil = rewrite_artifact(artifact, tmp_path / "evil.evpkg", extra=[("../x", b"owned")])
    result = run_cli("-q", "info", str(evil))
    assert result.returncode == 2 and "unsafe member path" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# --- PyTorch checkpoints -------------------------------------------------------------------------

class _Payload:
    """Unpickling this creates a file: proof that code from the checkpoint ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code from the checkpoint ran"))


def test_checkpoint_that_runs_code_is_refused_without_running(tmp_path: Path) -> None:
    import torch

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"fc.weight": torch.zeros(2, 2), "extra": _Payload(marker)}, evil)
    assert not marker.exists()
    result = run_cli("-q", "compile", str(evil), "--arch", f"{MODELS}:tiny", "-o", str(tmp_path / "m.evpkg"))
    assert result.returncode == 2 and not marker.exists()
    assert "holds pickled Python objects (getattr)" in result.stderr  # the global the payload needs
    assert "--trust-remote-code" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m.evpkg").exists()


def test_pickled_module_needs_trust_remote_code(tmp_path: Path) -> None:
    import torch
    from torch import nn

    from edgevision.artifact import read_manifest

    torch.manual_seed(0)
    whole = nn.Sequential(nn.Conv2d(3, 4, 3, 2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    path = tmp_path / "whole.pt"
    torch.save(whole.eval(), path)
    out = tmp_path / "whole.evpkg"

    refused = run_cli("-q", "compile", str(path), "--input-size", "64", "-o", str(out))
    assert refused.returncode == 2 and not out.exists()
    assert "torch.nn.modules.container.Sequential" in refused.stderr and "--trust-remote-code" in refused.stderr

    trusted = run_cli("-q", "compile", str(path), "--input-size", "64", "--trust-remote-code", "-o", str(out))
    assert trusted.returncode == 0, trusted.stderr
    manifest = read_manifest(out)
    assert manifest.source["kind"] == "pickled module" and manifest.accuracy.passed


def test_state_dict_loads_with_weights_only(tmp_path: Path) -> None:
    """A plain state_dict needs no flag: torch.load(weights_only=True) accepts tensors."""
    import torch

    from edgevision.compiler.sources import load_source
    from reliability_models import tiny

    path = tmp_path / "tiny.pth"
    torch.save(tiny().module.state_dict(), path)
    spec = load_source(str(path), arch=f"{MODELS}:tiny")
    assert spec.source["kind"] == "state_dict"
    reference = tiny().module.state_dict()
    assert all(torch.equal(reference[k], v) for k, v in spec.module.state_dict().items())
