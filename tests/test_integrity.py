"""Artifacts are verified before anything in them is used; model files are not unpickled blindly.

Each refused artifact is loaded in a fresh interpreter that records whether the backend runtime was
imported: a refusal must come before any payload reaches ONNX Runtime.
"""
from __future__ import annotations

import json
import re
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


def load_in_fresh_process(path: Path, tmp: Path, runtime: str = "onnxruntime") -> dict:
    """Try edgevision.runtime.load(path); report the error and whether the backend runtime got imported."""
    code = textwrap.dedent(f"""
        import json, sys
        import edgevision.runtime as rt
        result = {{"error": None, "type": None}}
        try:
            rt.load({str(path)!r}).close()
        except rt.EdgevisionError as err:
            result = {{"error": str(err), "type": type(err).__name__}}
        result["runtime_imported"] = {runtime!r} in sys.modules
        print(json.dumps(result))
        """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp)})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def assert_refused(path: Path, tmp_path: Path, *needles: str, runtime: str = "onnxruntime") -> str:
    tmp = tmp_path / "tmp"
    tmp.mkdir(exist_ok=True)
    result = load_in_fresh_process(path, tmp, runtime)
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
    """Even a consistent forgery (manifest digest recomputed) cannot make the backend open a file outside."""
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
    assert_refused(newer, tmp_path, "format version 9 is newer than this edgevision understands (2)",
                   "upgrade edgevision")


def test_info_refuses_what_load_refuses(artifact: Path, tmp_path: Path) -> None:
    """`edgevision info` applies the same checks as loading."""
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


# --- the manifest is verified too (issue 14, item 1) -----------------------------------------------

def info_refuses(path: Path, tmp_path: Path, *needles: str, args: tuple[str, ...] = ()) -> str:
    """`edgevision info` exits 2 with one line and no traceback, writing nothing to a fresh TMPDIR."""
    tmp = tmp_path / "info-tmp"
    tmp.mkdir(exist_ok=True)
    done = subprocess.run([sys.executable, "-m", "edgevision.cli", "-q", "info", *args, str(path)],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp)})
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert list(tmp.iterdir()) == []
    return lines[0]


def test_hand_edited_manifest_is_refused(artifact: Path, tmp_path: Path) -> None:
    """Reversed labels (a cat reported as 'bearskin') with the member hashes untouched."""
    edited = rewrite_artifact(artifact, tmp_path / "labels.evpkg", manifest_edit=lambda m: m["labels"].reverse(),
                              reseal=False)
    assert_refused(edited, tmp_path, "manifest.json was changed after it was written")
    info_refuses(edited, tmp_path, "manifest.json was changed after it was written")


@pytest.mark.parametrize("entry", ["../../x y.onnx", "model.onnx ", "./model.onnx", "/etc/passwd x"])
def test_payload_file_entries_must_be_members(artifact: Path, tmp_path: Path, entry: str) -> None:
    """A space in the value no longer skips the check: a file entry must name a member, exactly."""
    evil = rewrite_artifact(artifact, tmp_path / "entry.evpkg", manifest_edit=lambda m: m["payload"].update(model=entry))
    assert_refused(evil, tmp_path, f"payload entry model={entry!r} points outside", "not a member")


@pytest.mark.parametrize("edit, needle", [
    (lambda m: m.update(run_this="x"), "unknown key(s) ['run_this'] in the manifest"),
    (lambda m: m["payload"].update(extension="/tmp/libx.so"), "payload key(s) ['extension'] are not ones"),
    (lambda m: m["payload"].update(providers=["../../lib"]), "not ONNX Runtime execution provider names"),
    (lambda m: m["labels"].__setitem__(3, None), "label 3 is 'None' (NoneType), not a name"),
    (lambda m: m["labels"].__setitem__(0, 7), "label 0 is '7' (int), not a name"),
    (lambda m: m.update(labels=m["labels"][:2]), "2 labels for an output of 10 classes"),
    (lambda m: m["preprocess"].update(std=[0, 0, 0]), "contains 0"),
    (lambda m: m["target"].update(threads=-4), "target.threads -4 is not a thread count"),
])
def test_manifest_values_are_allow_listed(artifact: Path, tmp_path: Path, edit, needle: str) -> None:
    evil = rewrite_artifact(artifact, tmp_path / "value.evpkg", manifest_edit=edit)
    assert_refused(evil, tmp_path, needle)


def test_openvino_config_cannot_make_the_loader_write(compile_artifact, tmp_path: Path) -> None:
    ov = compile_artifact("i8-tiny.intel-cpu.evpkg", model=f"{MODELS}:tiny", target="intel-cpu")
    cache = tmp_path / "cache-written-here"
    evil = rewrite_artifact(ov, tmp_path / "cache.evpkg",
                            manifest_edit=lambda m: m["payload"]["config"].update(CACHE_DIR=str(cache)))
    assert_refused(evil, tmp_path, "OpenVINO property 'CACHE_DIR' is not one a manifest may set", runtime="openvino")
    assert not cache.exists()
    hint = rewrite_artifact(ov, tmp_path / "hint.evpkg",
                            manifest_edit=lambda m: m["payload"]["config"].update(PERFORMANCE_HINT="../x"))
    assert_refused(hint, tmp_path, "PERFORMANCE_HINT='../x' is not an allowed value", runtime="openvino")
    tmp = tmp_path / "tmp"
    assert load_in_fresh_process(ov, tmp, "openvino")["error"] is None  # control: its real config is allowed


def test_gate_record_is_bound_to_the_payload_it_measured(artifact: Path, tmp_path: Path) -> None:
    """Another model swapped in, member hashes recomputed: the PASS record no longer applies."""
    from reliability_models import onnx_classifier

    other = onnx_classifier(tmp_path / "other.onnx").read_bytes()
    swapped = rewrite_artifact(artifact, tmp_path / "swapped.evpkg", reseal=True, rebind_gate=False,
                               member_edit=lambda name, data: other if name == "payload/model.onnx" else data)
    assert_refused(swapped, tmp_path, "its accuracy gate record was measured on another payload")
    info_refuses(swapped, tmp_path, "measured on another payload")


def test_info_verifies_the_members(artifact: Path, tmp_path: Path) -> None:
    def flip(name: str, data: bytes) -> bytes:
        return data[:100] + bytes([data[100] ^ 1]) + data[101:] if name == "payload/model.onnx" else data

    flipped = rewrite_artifact(artifact, tmp_path / "flipped.evpkg", member_edit=flip)
    info_refuses(flipped, tmp_path, "payload/model.onnx fails its sha256 check")
    unchecked = run_cli("info", "--no-verify", str(flipped))
    assert unchecked.returncode == 0 and "NOT verified (--no-verify)" in unchecked.stdout


# --- bounded reading (issue 14, item 4: the artifact side) -----------------------------------------

def _replace_manifest(src: Path, dst: Path, raw: bytes, compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compression) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, raw if info.filename == "manifest.json" else zin.read(info))
    return dst


def test_huge_and_deep_manifests_are_refused_before_parsing(artifact: Path, tmp_path: Path) -> None:
    # Stored: deflated, the same 20 MB are refused as a zip bomb (ratio ~1000) before the size check.
    huge = _replace_manifest(artifact, tmp_path / "huge.evpkg", b'{"labels": ["' + b"x" * 20_000_000 + b'"]}',
                             zipfile.ZIP_STORED)
    deep = _replace_manifest(artifact, tmp_path / "deep.evpkg", b"[" * 200_000)
    measured = textwrap.dedent(f"""
        from edgevision.cli import main
        codes = [main(["-q", "info", p]) for p in ({str(huge)!r}, {str(deep)!r})]
        # VmHWM, not ru_maxrss: Linux carries the parent's (torch-laden pytest) peak across exec into the latter.
        peak = next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:"))
        print(codes, int(peak) // 1024)
        """)
    done = subprocess.run([sys.executable, "-c", measured], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    codes, peak_mb = done.stdout.rsplit(" ", 1)
    assert codes == "[2, 2]" and "Traceback" not in done.stderr, done.stderr
    assert int(peak_mb) < 300, f"reading the two manifests peaked at {peak_mb} MB"
    errors = done.stderr.strip().splitlines()
    assert "manifest.json is 20,000,016 bytes, more than the 4,194,304 allowed" in errors[0]
    assert "nests 200000 levels deep, more than the 32 allowed" in errors[1]
    assert len(errors) == 2


def test_zip_bomb_is_refused_before_anything_is_written(artifact: Path, tmp_path: Path) -> None:
    """64 MB of zeros deflate to 64 kB: a manifest that records them honestly does not help."""
    bomb = rewrite_artifact(artifact, tmp_path / "bomb.evpkg", reseal=True, extra=[])
    zeros = bytes(64 << 20)
    with zipfile.ZipFile(bomb) as zin:
        members = {i.filename: zin.read(i) for i in zin.infolist()}
    manifest = json.loads(members.pop("manifest.json"))
    manifest["files"]["payload/zeros.bin"] = __import__("hashlib").sha256(zeros).hexdigest()
    manifest["sizes"]["payload/zeros.bin"] = len(zeros)
    from edgevision.artifact.package import seal

    with zipfile.ZipFile(bomb, "w") as zout:
        zout.writestr("manifest.json", seal(manifest))
        for name, data in members.items():
            zout.writestr(name, data)
        zout.writestr("payload/zeros.bin", zeros, compress_type=zipfile.ZIP_DEFLATED)
    assert bomb.stat().st_size < 1 << 20
    assert_refused(bomb, tmp_path, "would unpack 65,", "into 67,108,864 (a zip bomb?)")


def test_member_sizes_must_match_the_manifest(artifact: Path, tmp_path: Path) -> None:
    def shrink(m: dict) -> None:
        m["sizes"]["payload/model.onnx"] -= 1

    lying = rewrite_artifact(artifact, tmp_path / "sizes.evpkg", reseal=True)
    lying = _replace_manifest(lying, tmp_path / "sizes2.evpkg", _resealed(lying, shrink))
    assert_refused(lying, tmp_path, "payload/model.onnx is", "bytes in the zip", "in the manifest")


def _resealed(path: Path, edit) -> bytes:
    from edgevision.artifact.package import seal

    with zipfile.ZipFile(path) as zf:
        manifest = json.loads(zf.read("manifest.json"))
    edit(manifest)
    return seal(manifest)


def test_deep_folders_and_many_members_are_one_line(artifact: Path, tmp_path: Path) -> None:
    deep = rewrite_artifact(artifact, tmp_path / "folders.evpkg", extra=[("payload/" + "d/" * 2000 + "x", b"x")])
    info_refuses(deep, tmp_path, "2002 folders", "at most 16 folders")
    assert_refused(deep, tmp_path, "2002 folders")
    many = rewrite_artifact(artifact, tmp_path / "many.evpkg", extra=[(f"payload/{i}", b"") for i in range(10_001)])
    info_refuses(many, tmp_path, "10,003 members, more than the 10,000 allowed")


@pytest.mark.filterwarnings("ignore:Duplicate name")  # zipfile warns while the test writes the duplicate
@pytest.mark.parametrize("name, needle", [
    ("payload/./model.onnx", "is not one edgevision writes"),
    ("payload//x", "is not one edgevision writes"),
    ("payload/a\x01b", "is not one edgevision writes"),
    ("payload/model.onnx", "appears twice"),
])
def test_member_table_oddities(artifact: Path, tmp_path: Path, name: str, needle: str) -> None:
    from edgevision.artifact import read_manifest
    from edgevision.errors import ArtifactError

    odd = rewrite_artifact(artifact, tmp_path / "odd.evpkg", extra=[(name, b"x")])
    with pytest.raises(ArtifactError, match=needle):
        read_manifest(odd)


@pytest.mark.parametrize("edit, needle", [
    (lambda m: m["files"].update({"payload/model.onnx": "ABC"}), "lowercase sha256 hex"),
    (lambda m: m["sizes"].update({"payload/extra": 1}), "files and sizes list different members"),
    (lambda m: m.update(files=[]), "files must map text to text"),
    (lambda m: m["input"].update(shape=[1, -3]), "is not a list of positive sizes"),
    (lambda m: m["accuracy"].update(top1_agreement=None), "accuracy.top1_agreement is not a finite number"),
    (lambda m: m.update(backend="../x"), "is not a backend name"),
    (lambda m: m.pop("labels"), "it lacks 'labels'"),
    (lambda m: m.update(target=[]), "target is list, not an object"),
])
def test_manifest_consistency(artifact: Path, tmp_path: Path, edit, needle: str) -> None:
    """Consistent forgeries whose fields do not fit together: one line each, from the reader."""
    from edgevision.artifact import read_manifest
    from edgevision.errors import ArtifactError

    from edgevision.artifact.package import seal

    path = tmp_path / "forged.evpkg"
    with zipfile.ZipFile(artifact) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    manifest = json.loads(members["manifest.json"])
    edit(manifest)
    members["manifest.json"] = seal(manifest)  # the edit sealed, as a forger who knows the format would
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    with pytest.raises(ArtifactError, match=re.escape(needle)):
        read_manifest(path)
