"""INT8: calibration data, QDQ artifacts for ONNX Runtime and OpenVINO, and a gate that catches collapse.

Real model (EfficientNet-Lite0, ImageNet weights), real calibration images (edgevision/data/calibration/images),
real validation photos (edgevision/samples/images).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from edgevision.errors import AccuracyGateFailed, InputError
from edgevision.preprocess import PreprocessConfig
from edgevision.quantize import BUNDLED_DIR, CalibrationSpec, calibration_reader, load_recipe
from edgevision.samples import IMAGES_DIR, sample_clip, sample_image

CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module")
def fp32_reference():
    """The original (torch, FP32) logits for the bundled photos."""
    import torch

    from edgevision.models import efficientnet_lite0
    from edgevision.preprocess import preprocess

    spec = efficientnet_lite0()
    names = sorted(p.stem for p in IMAGES_DIR.glob("*.jpg"))
    batch = np.stack([preprocess(sample_image(n), spec.preprocess) for n in names])
    with torch.no_grad():
        logits = spec.module(torch.from_numpy(batch)).numpy()
    return dict(zip(names, logits))


def _check_top1(artifact: Path, fp32: dict[str, np.ndarray]) -> None:
    from edgevision.runtime import load

    with load(artifact) as model:
        decisive = 0
        for name, ref in fp32.items():
            top = [p.index for p in model.predict(sample_image(name), top_k=2)]
            ordered = np.sort(ref)
            if ordered[-1] - ordered[-2] > 0.25:  # the original itself is decided: INT8 must agree
                decisive += 1
                assert top[0] == int(ref.argmax()), f"{name}: int8 top-1 {top[0]}, fp32 {int(ref.argmax())}"
        assert decisive >= 4  # coffee, camera, rocket, astronaut at least
        # chelsea is a near-tie in FP32 (Egyptian cat 9.24 vs tiger cat 9.23): a cat, and FP32's choice in the top-2.
        cat = [p.index for p in model.predict(sample_image("chelsea"), top_k=2)]
        assert cat[0] in CATS and int(fp32["chelsea"].argmax()) in cat


def _assert_qdq(artifact: Path, member_suffix: str) -> dict:
    import json
    import zipfile

    with zipfile.ZipFile(artifact) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        payload = [n for n in zf.namelist() if n.endswith(member_suffix)]
        assert payload
        body = zf.read(payload[0])
    assert b"QuantizeLinear" in body or b"FakeQuantize" in body  # ONNX QDQ, or OpenVINO IR of it
    return manifest


def test_calibration_reader_is_deterministic_and_uses_the_artifacts_preprocessing() -> None:
    config = PreprocessConfig(input_size=(160, 192), resize_short=200, layout="NHWC")
    a = calibration_reader(CalibrationSpec(BUNDLED_DIR, size=8, seed=1), config, "input")
    b = calibration_reader(CalibrationSpec(BUNDLED_DIR, size=8, seed=1), config, "input")
    c = calibration_reader(CalibrationSpec(BUNDLED_DIR, size=8, seed=2), config, "input")
    assert a.names == b.names and a.names != c.names and len(a) == 8
    assert {Path(n).parent.name for n in calibration_reader(CalibrationSpec(BUNDLED_DIR, size=999), config,
                                                             "input").names} >= {"bigbuckbunny", "skimage"}
    feeds = []
    while (feed := a.get_next()) is not None:
        feeds.append(feed["input"])
    assert len(feeds) == 8 and feeds[0].shape == (1, 160, 192, 3) and feeds[0].dtype == np.float32
    a.rewind()
    assert np.array_equal(a.get_next()["input"], feeds[0])
    assert not set(Path(n).name for n in a.names) & set(p.name for p in IMAGES_DIR.glob("*"))  # not the val set


def test_recipes_load_and_tensorrt_gets_symmetric_activations(tmp_path: Path) -> None:
    from edgevision.backends import get_backend
    from edgevision.quantize import QuantizeOptions
    from edgevision.quantize.recipe import RECIPES_DIR

    recipes = {p.stem: load_recipe(p.stem) for p in RECIPES_DIR.glob("*.toml")}
    assert {"minmax", "percentile", "entropy", "symmetric"} <= set(recipes)
    assert recipes["percentile"].method == "percentile" and recipes["minmax"].activation_type == "uint8"
    assert QuantizeOptions.from_options({}).recipe(get_backend("tensorrt")).symmetric_activations
    assert not QuantizeOptions.from_options({"skip_sensitive": "false"}).recipe(get_backend("openvino")).skip_sensitive
    assert QuantizeOptions.from_options({}).recipe(get_backend("openvino")).method == "minmax"
    with pytest.raises(InputError, match="tensorrt needs symmetric.*--calib-method symmetric"):
        QuantizeOptions.from_options({"calib_method": "minmax"}).recipe(get_backend("tensorrt"))
    custom = tmp_path / "mine.toml"
    custom.write_text('method = "percentile"\npercentile = 99.9\nexclude_nodes = ["/_fc/Gemm"]\n')
    assert load_recipe(str(custom)).exclude_nodes == ("/_fc/Gemm",)
    custom.write_text('method = "percentile"\nbits = 4\n')
    with pytest.raises(InputError, match="unknown key"):
        load_recipe(str(custom))


def test_calibration_from_a_video_samples_every_nth_frame() -> None:
    reader = calibration_reader(CalibrationSpec(sample_clip(), size=100, every=16), PreprocessConfig(), "input")
    assert [n.rsplit("#frame", 1)[1] for n in reader.names] == ["0", "16", "32", "48", "64"]
    assert reader.tensors.shape == (5, 3, 224, 224) and np.isfinite(reader.tensors).all()


def test_bad_calibration_sources_give_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "photo.jpg").write_bytes(b"not a jpeg")
    for source, words in [(tmp_path / "empty", "holds no images"), (tmp_path / "missing", "does not exist"),
                          (broken, "no readable calibration images")]:
        with pytest.raises(InputError, match=words) as err:
            calibration_reader(CalibrationSpec(source), PreprocessConfig(), "input")
        assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="unknown calibration method"):
        load_recipe("kmeans")
    cli = run_cli("compile", "--precision", "int8", "--calib", str(tmp_path / "empty"), timeout=120)
    assert cli.returncode == 2 and "Traceback" not in cli.stderr
    assert cli.stderr.strip().count("\n") == 0 and "holds no images" in cli.stderr


def test_int8_onnxruntime_keeps_fp32_top1(compile_artifact, fp32_reference, tmp_path: Path) -> None:
    report = tmp_path / "gate.csv"
    artifact = compile_artifact("lite0.onnxruntime-cpu.int8.evpkg", target="onnxruntime-cpu", precision="int8",
                                accuracy_report=report)
    manifest = _assert_qdq(artifact, ".onnx")
    acc, quant = manifest["accuracy"], manifest["payload"]["quantization"]
    _assert_agrees(acc, quant)
    assert quant["calibration"]["samples"] == 48 and quant["recipe"]["method"] == "minmax"
    rows = report.read_text().strip().splitlines()
    assert len(rows) == 1 + acc["images"] and rows[0].startswith("index,input,reference_top1,candidate_top1")
    _check_top1(artifact, fp32_reference)


def _assert_agrees(acc: dict, quant: dict) -> None:
    """The default recipe on the default model: >= 95% top-1 agreement with FP32 wherever FP32 is decisive,
    on every input of the bundled validation set, and the layers kept float named with their reason."""
    assert acc["passed"] and acc["criterion"] == "decisive-top1" and acc["reference"] == "torch"
    assert acc["images"] == acc["available_inputs"] >= 250 and acc["decisive"] >= 150
    assert acc["decisive_agreement"] >= 0.95 and acc["top1_agreement"] >= 0.85 and acc["mean_cosine"] > 0.98
    layers = {f["layer"]: f["why"] for f in quant["float_layers"]}
    assert {"/_conv_stem/Conv", "/_fc/Gemm"} <= set(layers) and len(layers) <= 6
    assert any("sensitivity pass" in why for why in layers.values())
    assert quant["sensitivity"]["kl_after"] < quant["sensitivity"]["kl_before"]


def test_int8_openvino_runs_the_same_qdq_model(compile_artifact, fp32_reference) -> None:
    artifact = compile_artifact("lite0.intel-cpu.int8.evpkg", target="intel-cpu", precision="int8")
    manifest = _assert_qdq(artifact, ".xml")
    acc = manifest["accuracy"]
    assert acc["candidate"] == "openvino CPU int8"  # not "(ran as fp32)": its quantized layers run u8
    assert manifest["payload"]["executed_precision"] == "int8"
    _assert_agrees(acc, manifest["payload"]["quantization"])
    _check_top1(artifact, fp32_reference)


def test_gate_fails_on_collapsed_calibration(tmp_path: Path) -> None:
    """One black calibration image, every layer quantized: the input quantizer's range collapses
    to a single value and the model with it. The sensitivity pass cannot rescue it: on its one
    black calibration sample the collapsed model looks fine."""
    import cv2

    from edgevision.compiler import CompileRequest, compile_model

    cv2.imwrite(str(tmp_path / "black.png"), np.zeros((240, 320, 3), np.uint8))
    out = tmp_path / "collapsed.evpkg"
    with pytest.raises(AccuracyGateFailed) as err:
        compile_model(CompileRequest(target="onnxruntime-cpu", precision="int8", output=out,
                                     options={"calib": str(tmp_path / "black.png"), "skip_sensitive": False}))
    message = str(err.value)
    assert "\n" not in message and "accuracy gate failed" in message and "decisive inputs" in message
    assert "--calib" in message  # the fix names what to change
    assert not out.exists()


@pytest.mark.slow
def test_nncf_accuracy_control_is_offered_bounded_and_says_what_it_kept_float(tmp_path: Path) -> None:
    """NNCF's quantize_with_accuracy_control, the anchor the default recipe is measured against
    (docs/int8.md): it runs as a quantizer within its iteration bound, records the layers it returned
    to float, and the gate then measures it like any INT8 model on the validation set it never saw."""
    from edgevision.artifact import read_manifest
    from edgevision.compiler import CompileRequest, compile_model

    out = tmp_path / "lite0.ac.evpkg"
    # The bar is lowered: on Lite0 NNCF's search stops short of the gate's 95% (measured: 81% decisive).
    compile_model(CompileRequest(target="onnxruntime-cpu", precision="int8", output=out, min_agreement=0.5,
                                 options={"quantizer": "nncf-accuracy-control", "max_float_groups": 4}))
    manifest = read_manifest(out)
    quant = manifest.payload["quantization"]
    control = quant["accuracy_control"]
    assert quant["quantizer"] == "nncf-accuracy-control" and "sensitivity" not in quant  # NNCF's search instead
    assert control["max_iterations"] == 4 and control["samples"] == 48 and control["max_agreement_drop"] == 0.02
    assert 0.5 < control["agreement_after"] <= 1.0
    restored = [f["layer"] for f in quant["float_layers"] if f["why"] == "returned to float by NNCF accuracy control"]
    assert 1 <= len(restored) and "/_fc/Gemm" not in restored  # the ignored classifier is not NNCF's doing
    assert manifest.accuracy.images >= 250 and manifest.accuracy.decisive_agreement > 0.5
    bad = run_cli("compile", "--target", "onnxruntime-cpu", "--precision", "int8", "--quantizer",
                  "nncf-accuracy-control", "--option", "max_agreement_drop=2", "-o", str(tmp_path / "x.evpkg"))
    assert bad.returncode == 2 and "max_agreement_drop" in bad.stderr and "Traceback" not in bad.stderr
