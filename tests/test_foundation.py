"""The spine: compile the real default model, load it where torch cannot be imported, classify real photos."""
from __future__ import annotations

import json
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import EXAMPLES, run_cli, run_without_torch

CAT_CLASSES = set(range(281, 286))
ESPRESSO = 967


@pytest.mark.parametrize("fixture", ["ort_artifact", "ov_artifact"])
def test_artifact_classifies_real_photos_without_torch(fixture: str, request: pytest.FixtureRequest) -> None:
    artifact = request.getfixturevalue(fixture)
    result = run_without_torch(textwrap.dedent(f"""
        import json
        import edgevision.runtime as rt
        from edgevision.samples import sample_image
        model = rt.load({str(artifact)!r})
        out = {{name: [p.index for p in model.predict(sample_image(name), top_k=5)]
               for name in ("chelsea", "coffee", "camera")}}
        print(json.dumps(out))
        """))
    assert result.returncode == 0, result.stderr
    top5 = json.loads(result.stdout.strip().splitlines()[-1])
    assert top5["chelsea"][0] in CAT_CLASSES
    assert top5["coffee"][0] == ESPRESSO
    assert top5["camera"][0] == 872  # tripod


@pytest.mark.parametrize("fixture", ["ort_artifact", "ov_artifact"])
def test_manifest_records_a_passing_gate_and_hashes(fixture: str, request: pytest.FixtureRequest) -> None:
    from edgevision.artifact import read_manifest
    from edgevision.files import sha256_file

    artifact = request.getfixturevalue(fixture)
    m = read_manifest(artifact)
    assert m.model_name == "efficientnet-lite0" and m.precision == "fp32"
    assert m.accuracy.reference == "torch" and m.accuracy.images >= 250  # the bundled validation set
    assert m.accuracy.criterion == "decisive-top1" and m.accuracy.decisive >= 100
    assert m.accuracy.top1_agreement == 1.0 and m.accuracy.max_abs_diff < 1e-3
    assert m.accuracy.candidate.startswith(m.backend)
    assert len(m.labels) == 1000 and m.labels[285] == "Egyptian cat"
    assert m.toolchain["torch"].startswith("2.13") and m.toolchain[m.backend] == m.backend_version
    with zipfile.ZipFile(artifact) as zf:
        names = set(zf.namelist())
        assert names == set(m.files) | {"manifest.json"}
        extracted = Path(zf.extract(sorted(m.files)[0], path=artifact.parent / "x"))
    assert sha256_file(extracted) == m.files[sorted(m.files)[0]]


def test_openvino_fp32_is_an_explicit_recorded_choice(ov_artifact: Path) -> None:
    from edgevision.artifact import read_manifest

    m = read_manifest(ov_artifact)
    assert m.payload["config"]["INFERENCE_PRECISION_HINT"] == "f32"


def test_batch_predictions_match_single(ort_artifact: Path) -> None:
    from edgevision.runtime import load
    from edgevision.samples import sample_image

    images = [sample_image(n) for n in ("chelsea", "coffee", "rocket")]
    with load(ort_artifact) as model:
        single = [model.predict(img, top_k=3) for img in images]
        batch = model.predict_batch(images, top_k=3)
        rgb = model.predict(images[1][:, :, ::-1].copy(), top_k=1, channels="RGB")
    assert [[p.index for p in r] for r in single] == [[p.index for p in r] for r in batch]
    assert rgb[0].index == ESPRESSO
    assert all(abs(a.score - b.score) < 1e-5 for a, b in zip(single[0], batch[0]))


@pytest.mark.parametrize("bad, message", [
    (np.zeros((224, 224), np.uint8), "HxWx3"),
    (np.zeros((224, 224, 3), np.float64), "uint8"),
    ("not an array", "numpy"),
])
def test_wrong_image_gets_a_clear_error(ort_artifact: Path, bad, message: str) -> None:
    from edgevision.errors import InputError
    from edgevision.runtime import load

    with load(ort_artifact) as model, pytest.raises(InputError, match=message):
        model.predict(bad)


def test_wrong_tensor_shape_and_dtype(ort_artifact: Path) -> None:
    from edgevision.errors import InputError
    from edgevision.runtime import load

    with load(ort_artifact) as model:
        with pytest.raises(InputError, match=r"shape \(1, 3, 128, 128\)"):
            model.run(np.zeros((1, 3, 128, 128), np.float32))
        with pytest.raises(InputError, match="float32"):
            model.run(np.zeros((1, 3, 224, 224), np.float64))
        # A static-batch artifact still takes a batch, one slice at a time.
        assert model.run(np.zeros((3, 3, 224, 224), np.float32)).shape == (3, 1000)


def test_info_shows_the_manifest(ov_artifact: Path) -> None:
    result = run_cli("info", str(ov_artifact))
    assert result.returncode == 0, result.stderr
    for text in ("efficientnet-lite0", "intel-cpu", "openvino", "fp32", "PASS", "top-1 agreement 100.0%", "[1, 3, 224, 224]"):
        assert text in result.stdout
    as_json = json.loads(run_cli("info", "--json", str(ov_artifact)).stdout)
    assert as_json["accuracy"]["passed"] is True and as_json["format_version"] == 2
    assert as_json["_checked"]["signature"] == "unsigned" and as_json["_checked"]["integrity"].startswith("verified")


def test_targets_lists_every_device_file() -> None:
    result = run_cli("targets")
    assert result.returncode == 0, result.stderr
    for name in ("intel-cpu", "intel-gpu", "intel-npu", "onnxruntime-cpu", "rpi4", "jetson-orin", "jetson-nano"):
        assert name in result.stdout


def test_user_target_file_adds_a_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgevision.targets import available_targets, get_target

    (tmp_path / "my-box.toml").write_text('name = "my-box"\nbackend = "onnxruntime"\nthreads = 1\n')
    monkeypatch.setenv("EDGEVISION_TARGETS_PATH", str(tmp_path))
    assert get_target("my-box").threads == 1 and "intel-cpu" in available_targets()


def test_gate_fails_a_model_whose_export_diverges(tmp_path: Path) -> None:
    out = tmp_path / "broken.evpkg"
    result = run_cli("compile", f"{EXAMPLES}/broken_export.py:broken_export", "-t", "onnxruntime-cpu", "-o", str(out))
    assert result.returncode == 3
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 or "accuracy gate failed" in err[-1]
    assert "accuracy gate failed" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.mark.parametrize("kind", ["torchscript", "state_dict", "onnx", "torch.export"])
def test_every_model_source_kind_compiles(kind: str, tmp_path: Path) -> None:
    import torch

    from edgevision.artifact import read_manifest

    import sys
    sys.path.insert(0, str(EXAMPLES))
    from mobilenet_v2 import mobilenet_v2

    module = mobilenet_v2()
    args: list[str] = []
    if kind == "torchscript":
        src = tmp_path / "m.pt"
        torch.jit.trace(module, torch.zeros(1, 3, 224, 224)).save(str(src))
    elif kind == "state_dict":
        src = tmp_path / "m.pth"
        torch.save(module.state_dict(), src)
        args = ["--arch", f"{EXAMPLES}/mobilenet_v2.py:mobilenet_v2"]
    elif kind == "torch.export":
        src = tmp_path / "m.pt2"
        torch.export.save(torch.export.export(module, (torch.zeros(1, 3, 224, 224),)), str(src))
    else:
        src = tmp_path / "m.onnx"
        torch.onnx.export(module, (torch.zeros(1, 3, 224, 224),), str(src), dynamo=False, opset_version=17)
    out = tmp_path / "m.evpkg"
    result = run_cli("compile", str(src), "-t", "onnxruntime-cpu", "-o", str(out), *args)
    assert result.returncode == 0, result.stderr
    m = read_manifest(out)
    assert m.source["kind"] == kind and m.accuracy.passed and m.accuracy.max_abs_diff < 1e-3


def test_dynamic_batch_artifact_runs_any_batch(compile_artifact) -> None:
    from edgevision.runtime import load

    path = compile_artifact("mnv2-dyn.evpkg", model=f"{EXAMPLES}/mobilenet_v2.py:mobilenet_v2",
                            target="onnxruntime-cpu", dynamic_batch=True)
    with load(path) as model:
        assert model.input_shape[0] == "batch"
        assert model.run(np.zeros((5, 3, 224, 224), np.float32)).shape == (5, 1000)
