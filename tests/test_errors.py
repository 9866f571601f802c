"""Every user mistake: exit code != 0, exactly one line on stderr, no traceback, nothing left behind.

Each case runs the real `edgevision` command in a subprocess with -q (no progress lines), its own
TMPDIR and an empty output folder; afterwards both must be empty again.
"""
from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytest

from conftest import BLOCK_TORCH, REPO
from reliability_models import MODELS, onnx_classifier, rewrite_artifact

TINY = f"{MODELS}:tiny"
CLI_MAIN = "import sys\nfrom edgevision.cli import main\nsys.exit(main(sys.argv[1:]))\n"


@dataclass
class Workspace:
    out: Path  # the folder a command writes its output into
    tmp: Path  # TMPDIR of the command

    def assert_clean(self) -> None:
        assert list(self.out.iterdir()) == [], f"partial output left: {list(self.out.iterdir())}"
        # ONNX Runtime's telemetry keeps a session id in $TMPDIR/.ses when it is imported: not ours.
        left = [p for p in self.tmp.iterdir() if p.name != ".ses"]
        assert left == [], f"temporary files left: {left}"


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    (tmp_path / "out").mkdir()
    (tmp_path / "tmp").mkdir()
    return Workspace(tmp_path / "out", tmp_path / "tmp")


def cli(ws: Workspace, *args: str, prelude: str = "", debug: bool = False,
        preexec: Callable[[], None] | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    flags = ["--debug"] if debug else ["-q"]
    return subprocess.run([sys.executable, "-c", prelude + CLI_MAIN, *flags, *args], capture_output=True, text=True,
                          timeout=300, preexec_fn=preexec,
                          env={**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(ws.tmp), **(env or {})})


def assert_one_line_error(result: subprocess.CompletedProcess, ws: Workspace, *needles: str) -> str:
    assert result.returncode not in (0, None), result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    line = lines[0]
    assert line.startswith("error: ") and "Traceback" not in result.stderr
    assert " — " in line, f"no fix given: {line}"  # problem — fix
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    assert result.stdout == "", f"unexpected stdout: {result.stdout[:500]}"
    ws.assert_clean()
    return line


@pytest.fixture(scope="module")
def tiny_artifact(compile_artifact) -> Path:
    return compile_artifact("i8-tiny.onnxruntime-cpu.evpkg", model=TINY, target="onnxruntime-cpu")


@pytest.fixture(scope="module")
def tiny_state_dict(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from reliability_models import tiny

    path = tmp_path_factory.mktemp("weights") / "tiny.pth"
    torch.save(tiny().module.state_dict(), path)
    return path


# --- model files -------------------------------------------------------------------------------

def test_missing_model_file(ws: Workspace) -> None:
    result = cli(ws, "compile", str(ws.out.parent / "nope.pt"), "-o", str(ws.out / "m.evpkg"))
    assert_one_line_error(result, ws, "nope.pt does not exist")


def test_corrupt_model_file(ws: Workspace) -> None:
    garbage = ws.out.parent / "random.pt"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    result = cli(ws, "compile", str(garbage), "-o", str(ws.out / "m.evpkg"))
    assert_one_line_error(result, ws, "random.pt", "corrupt or not a PyTorch file")


def test_truncated_checkpoint(ws: Workspace, tiny_state_dict: Path) -> None:
    half = ws.out.parent / "half.pth"
    data = tiny_state_dict.read_bytes()
    half.write_bytes(data[:len(data) // 2])
    result = cli(ws, "compile", str(half), "--arch", TINY, "-o", str(ws.out / "m.evpkg"))
    assert_one_line_error(result, ws, "cannot read model file", "half.pth", "corrupt")


def test_corrupt_onnx_file(ws: Workspace) -> None:
    broken = ws.out.parent / "broken.onnx"
    onnx_bytes = onnx_classifier(ws.out.parent / "ok.onnx").read_bytes()
    broken.write_bytes(onnx_bytes[: len(onnx_bytes) // 3])
    result = cli(ws, "compile", str(broken), "-o", str(ws.out / "m.evpkg"))
    assert_one_line_error(result, ws, "broken.onnx is not a valid ONNX model")


def test_weights_with_the_wrong_head_size(ws: Workspace, tiny_state_dict: Path) -> None:
    result = cli(ws, "compile", str(tiny_state_dict), "--arch", f"{MODELS}:five_classes", "-o", str(ws.out / "m.evpkg"))
    assert_one_line_error(result, ws, "do not fit", "size mismatch for fc.weight", "--arch")


def test_weights_for_another_architecture(ws: Workspace, tiny_state_dict: Path) -> None:
    result = cli(ws, "compile", str(tiny_state_dict), "--arch", f"{MODELS}:mlp", "-o", str(ws.out / "m.evpkg"))
    assert_one_line_error(result, ws, "do not fit", "2 missing and 11 unexpected keys", "1.weight", "fc.weight")


def test_state_dict_without_arch(ws: Workspace, tiny_state_dict: Path) -> None:
    result = cli(ws, "compile", str(tiny_state_dict), "-o", str(ws.out / "m.evpkg"))
    assert_one_line_error(result, ws, "is a state_dict", "--arch module:factory")


# --- operators ---------------------------------------------------------------------------------

def test_operator_the_onnx_exporter_rejects(ws: Workspace) -> None:
    result = cli(ws, "compile", f"{MODELS}:fft_classifier", "-o", str(ws.out / "m.evpkg"))
    # The exporter also dumps its whole IR graph to C++ stdout: assert_one_line_error checks it stays hidden.
    assert_one_line_error(result, ws, "ONNX export failed", "aten::fft_rfft2", "opset 17")


def test_operator_openvino_cannot_compile(ws: Workspace) -> None:
    model = onnx_classifier(ws.out.parent / "wrap.onnx", pad_mode="wrap")
    result = cli(ws, "compile", str(model), "-t", "intel-cpu", "-o", str(ws.out / "m.evpkg"))
    assert_one_line_error(result, ws, "openvino cannot compile this model for intel-cpu", "operator Pad",
                          "Unsupported padding mode: [wrap]")


def test_operator_onnxruntime_cannot_run(ws: Workspace) -> None:
    model = onnx_classifier(ws.out.parent / "custom.onnx", custom_op="SoftCap")
    result = cli(ws, "compile", str(model), "-t", "onnxruntime-cpu", "-o", str(ws.out / "m.evpkg"))
    assert_one_line_error(result, ws, "onnxruntime cannot run", "operator com.example:SoftCap is not implemented")


def test_operator_the_device_runtime_cannot_load(ws: Workspace, tiny_artifact: Path) -> None:
    """An artifact (consistently rebuilt, so its hashes hold) whose payload has an unknown operator."""
    import hashlib

    payload = onnx_classifier(ws.out.parent / "custom.onnx", custom_op="SoftCap").read_bytes()
    swapped = rewrite_artifact(
        tiny_artifact, ws.out.parent / "swapped.evpkg",
        manifest_edit=lambda m: m["files"].update({"payload/model.onnx": hashlib.sha256(payload).hexdigest()}),
        member_edit=lambda name, data: payload if name == "payload/model.onnx" else data)
    result = cli(ws, "predict", str(swapped))
    assert_one_line_error(result, ws, "onnxruntime cannot load swapped.evpkg",
                          "operator com.example:SoftCap is not implemented")


def test_the_same_onnx_without_the_bad_operator_compiles(ws: Workspace) -> None:
    """Control for the two tests above: the graph around the operator is fine for both backends."""
    model = onnx_classifier(ws.out.parent / "plain.onnx")
    for target in ("onnxruntime-cpu", "intel-cpu"):
        result = cli(ws, "compile", str(model), "-t", target, "-o", str(ws.out / f"{target}.evpkg"))
        assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in ws.out.iterdir()) == ["intel-cpu.evpkg", "onnxruntime-cpu.evpkg"]


# --- targets and runtimes ----------------------------------------------------------------------

def test_unknown_target(ws: Workspace) -> None:
    result = cli(ws, "compile", TINY, "-t", "atlantis", "-o", str(ws.out / "m.evpkg"))
    assert_one_line_error(result, ws, "unknown target 'atlantis'", "onnxruntime-cpu")


def _blocker(module: str) -> str:
    return BLOCK_TORCH.replace('"torch"', repr(module)).replace('"torch."', repr(module + "."))


def test_missing_backend_runtime_at_compile(ws: Workspace) -> None:
    result = cli(ws, "compile", TINY, "-t", "intel-cpu", "-o", str(ws.out / "m.evpkg"), prelude=_blocker("openvino"))
    line = assert_one_line_error(result, ws, "cannot compile for intel-cpu with openvino here",
                                 "pip install 'edgevision[openvino]'")
    assert line.count("pip install") == 1


def test_missing_backend_runtime_at_load(ws: Workspace, tiny_artifact: Path) -> None:
    result = cli(ws, "predict", str(tiny_artifact), prelude=_blocker("onnxruntime"))
    assert_one_line_error(result, ws, "needs ONNX Runtime", "pip install 'edgevision[onnxruntime]'")


@pytest.fixture(scope="module")
def aarch64_artifact(tmp_path_factory: pytest.TempPathFactory, compile_artifact) -> Path:
    """A real compile for a user target whose arch is aarch64: the ONNX Runtime payload is portable."""
    folder = tmp_path_factory.mktemp("targets")
    target = folder / "arm-box.toml"
    target.write_text('name = "arm-box"\nbackend = "onnxruntime"\narch = "aarch64"\ndevice = "cpu"\n'
                      'description = "an aarch64 board running ONNX Runtime"\n')
    return compile_artifact("i8-tiny.arm-box.evpkg", model=TINY, target=str(target))


def test_portable_payload_for_another_architecture_runs_here(ws: Workspace, aarch64_artifact: Path,
                                                             tiny_artifact: Path) -> None:
    """An ONNX graph is the same file on every arch: the gate ran the payload itself, and it runs here."""
    from edgevision.artifact import read_manifest

    manifest = read_manifest(aarch64_artifact)
    assert manifest.target.arch == "aarch64" and manifest.accuracy.passed
    assert manifest.accuracy.candidate == "onnxruntime cpu fp32"
    assert "not executed on this host" not in manifest.accuracy.note
    here, native = cli(ws, "predict", str(aarch64_artifact)), cli(ws, "predict", str(tiny_artifact))
    assert here.returncode == 0 and here.stderr == "", here.stderr
    strip_ms = [line.split("ms", 1)[1] for line in here.stdout.splitlines()]
    assert strip_ms == [line.split("ms", 1)[1] for line in native.stdout.splitlines()]


def test_native_library_for_another_architecture(ws: Workspace, compile_artifact) -> None:
    from edgevision.artifact import read_manifest

    from conftest import NAIVE_TVM

    artifact = compile_artifact("tiny.rpi4-naive.evpkg", model=TINY, target="rpi4",
                                options={**NAIVE_TVM, "device_check": "off"})
    assert "not executed on this host" in read_manifest(artifact).accuracy.note
    result = cli(ws, "predict", str(artifact))
    assert_one_line_error(result, ws, "was compiled for aarch64 (rpi4)", "this machine is x86_64")


def test_artifact_for_an_unknown_backend(ws: Workspace, tiny_artifact: Path) -> None:
    foreign = rewrite_artifact(tiny_artifact, ws.out.parent / "coreml.evpkg",
                               manifest_edit=lambda m: m.update(backend="coreml"))
    result = cli(ws, "predict", str(foreign))
    assert_one_line_error(result, ws, "built for backend 'coreml'", "does not provide")


def test_artifact_of_a_newer_format(ws: Workspace, tiny_artifact: Path) -> None:
    newer = rewrite_artifact(tiny_artifact, ws.out.parent / "v2.evpkg",
                             manifest_edit=lambda m: m.update(format_version=3))
    result = cli(ws, "predict", str(newer))
    assert_one_line_error(result, ws, "format version 3 is newer than this edgevision understands (2)",
                          "upgrade edgevision")


def test_missing_artifact(ws: Workspace) -> None:
    result = cli(ws, "predict", str(ws.out.parent / "none.evpkg"))
    assert_one_line_error(result, ws, "none.evpkg does not exist")


# --- inputs at run time ------------------------------------------------------------------------

def test_image_file_that_is_not_an_image(ws: Workspace, tiny_artifact: Path) -> None:
    fake = ws.out.parent / "photo.jpg"
    fake.write_text("not a jpeg")
    result = cli(ws, "predict", str(tiny_artifact), str(fake))
    assert_one_line_error(result, ws, "cannot decode image", "photo.jpg")


def test_tensor_shape_and_dtype_mismatch(tiny_artifact: Path) -> None:
    from edgevision.errors import InputError
    from edgevision.runtime import load

    with load(tiny_artifact) as model:
        good = np.zeros((1, 3, 64, 64), np.float32)
        assert model.run(good).shape == (1, 10)
        cases = [(good.transpose(0, 2, 3, 1), r"shape \(1, 64, 64, 3\) does not match the model's \('N', 3, 64, 64\)"),
                 (np.zeros((1, 3, 224, 224), np.float32), r"shape \(1, 3, 224, 224\)"),
                 (np.zeros((3, 64, 64), np.float32), r"shape \(3, 64, 64\)"),
                 (good.astype(np.float16), "dtype is float16, the model takes float32"),
                 (good.astype(np.uint8), "dtype is uint8"),
                 (good.tolist(), "expected a numpy array, got list")]
        for bad, message in cases:
            with pytest.raises(InputError, match=message) as info:
                model.run(bad)
            assert "\n" not in str(info.value) and " — " in str(info.value)
        with pytest.raises(InputError, match="HxWx3"):
            model.predict(np.zeros((64, 64), np.uint8))


# --- disk full -----------------------------------------------------------------------------------

@contextlib.contextmanager
def small_disk(folder: Path, kilobytes: int) -> Iterator[bool]:
    """Mount a tmpfs of ``kilobytes`` on ``folder``; yields False when mounting is not allowed here.

    EDGEVISION_TEST_NO_MOUNT=1 forces the fallback (a file size limit) where root could mount.
    """
    folder.mkdir(exist_ok=True)
    may_mount = os.geteuid() == 0 and not os.environ.get("EDGEVISION_TEST_NO_MOUNT")
    mounted = may_mount and subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kilobytes}k", "tmpfs",
                                            str(folder)], capture_output=True).returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=True)


def _file_size_limit(limit: int) -> Callable[[], None]:
    def apply() -> None:  # in the child: writes past ``limit`` fail with EFBIG instead of killing it
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.fixture(scope="module")
def imagenet_artifact(compile_artifact) -> Path:
    return compile_artifact("i8-tiny-imagenet.evpkg", model=f"{MODELS}:tiny_imagenet", target="onnxruntime-cpu")


def test_out_of_disk_when_writing_the_artifact(ws: Workspace, imagenet_artifact: Path) -> None:
    with zipfile.ZipFile(imagenet_artifact) as zf:
        payload = zf.getinfo("payload/model.onnx").file_size
    assert imagenet_artifact.stat().st_size > payload + 8_000  # the manifest holds 1000 labels
    with small_disk(ws.out, 32) as mounted:
        # A 32 kB tmpfs (ENOSPC) where root may mount; else a file size limit (EFBIG) between the
        # biggest temporary file (the exported ONNX, same bytes as the payload) and the artifact.
        preexec = None if mounted else _file_size_limit(payload + 2048)
        result = cli(ws, "compile", f"{MODELS}:tiny_imagenet", "-o", str(ws.out / "m.evpkg"), preexec=preexec)
        needle = "No space left on device" if mounted else "File too large"
        assert_one_line_error(result, ws, needle, "free some disk space")


def test_out_of_disk_when_unpacking_an_artifact(ws: Workspace, imagenet_artifact: Path) -> None:
    with zipfile.ZipFile(imagenet_artifact) as zf:
        payload = zf.getinfo("payload/model.onnx").file_size
    with small_disk(ws.tmp, 32) as mounted:
        assert payload > 48_000
        preexec = None if mounted else _file_size_limit(payload // 2)
        result = cli(ws, "predict", str(imagenet_artifact), preexec=preexec)
        line = assert_one_line_error(result, ws, "free some disk space")
        assert ("No space left on device" if mounted else "File too large") in line
        assert "corrupt" not in line  # a full disk is not the artifact's fault


# --- --debug and progress output -------------------------------------------------------------------

@pytest.mark.parametrize("args", [("compile", TINY, "-t", "atlantis"),
                                  ("predict", "/nonexistent/model.evpkg")])
def test_debug_shows_the_traceback(ws: Workspace, args: tuple[str, ...]) -> None:
    result = cli(ws, *args, debug=True)
    assert result.returncode != 0
    assert "Traceback (most recent call last)" in result.stderr and "EdgevisionError" not in result.stdout
    assert "edgevision.errors" in result.stderr


def test_progress_lines_then_one_error_line(ws: Workspace) -> None:
    """Without -q the steps are printed, and the error is still one line, the last one."""
    result = subprocess.run([sys.executable, "-m", "edgevision.cli", "compile", TINY, "-t", "atlantis"],
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(ws.tmp)})
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and lines[-1].startswith("error: unknown target")
    assert [ln for ln in lines if ln.startswith("error")] == lines[-1:] and "Traceback" not in result.stderr


def test_the_gate_fails_on_non_finite_outputs() -> None:
    """NaN/inf never pass: before, a NaN model passed with max_abs_diff nan (#14 item 7)."""
    import numpy as np

    from edgevision.compiler import gate
    from edgevision.errors import AccuracyGateFailed

    good = np.random.default_rng(0).normal(size=(8, 10)).astype(np.float32)
    gate.compare(good, good + 1e-6)  # finite: compared as usual
    for bad_value in (np.nan, np.inf):
        broken = good.copy()
        broken[3, 2] = bad_value
        with pytest.raises(AccuracyGateFailed, match="outputs (NaN|inf) for 1 of 8"):
            gate.compare(good, broken)
        with pytest.raises(AccuracyGateFailed, match="the original model outputs (NaN|inf)"):
            gate.compare(broken, good)
