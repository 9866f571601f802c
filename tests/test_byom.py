"""Bring your own model: the models people have, with their own preprocessing, outputs and inputs.

Positive cases compile real (tiny) models in-process and check the outcome on real images; each
failure the issue lists (#16, #14 items 7-9) runs the real command and must give one line, exit != 0,
no traceback and nothing left behind (test_errors' harness).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto

from byom_models import FACTORIES, classifier_onnx, raw_onnx
from conftest import run_cli
from test_errors import Workspace, assert_one_line_error, cli, ws  # noqa: F401  (ws is a fixture)


def compile_(tmp_path: Path, model: str | Path, target: str = "onnxruntime-cpu", **kwargs):
    from edgevision.compiler import CompileRequest, compile_model

    out = tmp_path / f"{Path(str(model)).stem.replace(':', '_')}.{target}.{len(list(tmp_path.iterdir()))}.evpkg"
    return compile_model(CompileRequest(model=str(model), target=target, output=out, **kwargs))


def predictions(artifact: Path, image: np.ndarray, k: int = 3):
    from edgevision.runtime import load

    with load(artifact) as model:
        return model.predict(image, top_k=k), model.run(model.preprocess(image)[None])


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    from edgevision.samples import sample_image

    return sample_image("chelsea")


# --- inputs beyond NCHW float32 named "input" -----------------------------------------------------

@pytest.mark.parametrize("target", ["onnxruntime-cpu", "intel-cpu"])
def test_nhwc_and_uint8_onnx_models_give_the_same_answers_as_their_nchw_float_twin(
        tmp_path: Path, photo: np.ndarray, target: str) -> None:
    """Same weights three ways: NCHW float (x/255 in the card), NHWC float, NHWC uint8 (scaling inside)."""
    card = {"scale": [1 / 255] * 3, "offset": [0.0] * 3}
    nchw = classifier_onnx(tmp_path / "nchw.onnx")
    nhwc = classifier_onnx(tmp_path / "nhwc.onnx", shape=(1, 64, 64, 3), layout="NHWC")
    u8 = classifier_onnx(tmp_path / "u8.onnx", shape=(1, 64, 64, 3), layout="NHWC", dtype="uint8")
    results = {}
    for path in (nchw, nhwc, u8):
        result = compile_(tmp_path, path, target, card_fields=card)
        assert result.manifest.accuracy.passed
        results[path.stem] = result
    assert results["nhwc"].manifest.input.layout == "NHWC" and results["nhwc"].manifest.input.shape == (1, 64, 64, 3)
    assert results["u8"].manifest.input.dtype == "uint8" and results["u8"].manifest.input.name == "pixels"
    ref, ref_logits = predictions(results["nchw"].path, photo)
    for name in ("nhwc", "u8"):
        got, logits = predictions(results[name].path, photo)
        assert [p.index for p in got] == [p.index for p in ref]
        np.testing.assert_allclose(logits, ref_logits, rtol=1e-4, atol=1e-4)


def test_dynamic_size_onnx_is_fixed_at_compile_and_int8_feeds_its_real_input_name(tmp_path: Path) -> None:
    import onnx

    path = classifier_onnx(tmp_path / "dyn.onnx", input_name="x", shape=("batch", 3, "h", "w"))
    result = compile_(tmp_path, path, input_size=(48, 96))
    assert result.manifest.input.shape == (1, 3, 48, 96) and result.manifest.preprocess.input_size == (48, 96)
    import zipfile

    with zipfile.ZipFile(result.path) as zf:
        payload = onnx.load_from_string(zf.read("payload/model.onnx"))
    dims = [d.dim_value for d in payload.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 48, 96]
    int8 = compile_(tmp_path, path, precision="int8", input_size=(48, 96))
    assert int8.manifest.accuracy.passed and int8.manifest.payload["quantization"]["format"] == "QDQ ONNX"


def test_onnx_with_external_data_compiles_and_the_artifact_carries_the_weights(tmp_path: Path, photo) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    path = classifier_onnx(folder / "model.onnx", external=True)
    assert (folder / "model.onnx.data").is_file()
    # From its own folder, with a relative path, as the user ran it.
    result = run_cli("-q", "compile", "model.onnx", "-o", str(tmp_path / "ext.evpkg"), cwd=folder)
    assert result.returncode == 0, result.stderr
    expected = None
    from edgevision.runtime import load
    with load(tmp_path / "ext.evpkg") as model:
        expected = model.run(model.preprocess(photo)[None])
    shutil.rmtree(folder)  # the artifact must not need the source's .data file
    with load(tmp_path / "ext.evpkg") as model:
        np.testing.assert_array_equal(model.run(model.preprocess(photo)[None]), expected)
    assert path.name == "model.onnx"


# --- outputs ------------------------------------------------------------------------------------

def test_multi_output_onnx_is_cut_to_the_chosen_output(tmp_path: Path) -> None:
    import zipfile

    import onnx

    path = classifier_onnx(tmp_path / "two.onnx", feature_output=True)
    by_name = compile_(tmp_path, path, model_output="scores")
    by_index = compile_(tmp_path, path, model_output=0)
    for result in (by_name, by_index):
        assert result.manifest.output.name == "scores" and result.manifest.accuracy.passed
        with zipfile.ZipFile(result.path) as zf:
            graph = onnx.load_from_string(zf.read("payload/model.onnx")).graph
        assert [o.name for o in graph.output] == ["scores"]


def test_a_model_ending_in_softmax_is_not_softmaxed_again(tmp_path: Path, photo: np.ndarray) -> None:
    import onnxruntime as ort

    from edgevision.preprocess import PreprocessConfig, preprocess

    soft = classifier_onnx(tmp_path / "soft.onnx", softmax=True)
    result = compile_(tmp_path, soft)
    assert result.manifest.scores == "probabilities"
    got, _ = predictions(result.path, photo, k=10)
    session = ort.InferenceSession(str(soft), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"pixels": preprocess(photo, PreprocessConfig().with_size((64, 64)))[None]})[0][0]
    assert [p.scores for p in got] == ["model"] * 10
    np.testing.assert_allclose([p.score for p in got], np.sort(expected)[::-1], rtol=1e-5, atol=1e-6)
    logits = compile_(tmp_path, classifier_onnx(tmp_path / "logits.onnx"))
    assert logits.manifest.scores == "logits"
    assert predictions(logits.path, photo)[0][0].scores == "softmax"
    # The card can say so for a model whose graph hides it.
    stated = compile_(tmp_path, classifier_onnx(tmp_path / "logits2.onnx"), card_fields={"scores": "probabilities"})
    assert stated.manifest.scores == "probabilities"


@pytest.mark.parametrize("factory, choice, output", [("returns_tuple", None, "logits"), ("returns_dict", None, "logits"),
                                                     ("detector", 1, "logits"), ("returns_dict", "embedding", "embedding")])
def test_pytorch_outputs_as_models_return_them(tmp_path: Path, factory: str, choice, output: str) -> None:
    result = compile_(tmp_path, f"{FACTORIES}:{factory}", model_output=choice, input_size=(64, 64))
    assert result.manifest.accuracy.passed and result.manifest.output.name == output
    assert result.manifest.output.shape == (1, 10)


def test_torch_softmax_head_is_detected(tmp_path: Path) -> None:
    result = compile_(tmp_path, f"{FACTORIES}:ends_in_softmax", input_size=(64, 64))
    assert result.manifest.scores == "probabilities"


# --- model cards --------------------------------------------------------------------------------

def test_card_beside_the_model_metadata_and_hf_preprocessor_config(tmp_path: Path) -> None:
    from edgevision.preprocess import PreprocessConfig

    folder = tmp_path / "hf"
    folder.mkdir()
    path = classifier_onnx(folder / "model.onnx", shape=(1, 3, "h", "w"), classes=3, metadata={
        "edgevision.card": 'input_size = "56x72"\nresize = "letterbox"\n', "names": "{0: 'cat', 1: 'dog', 2: 'bird'}"})
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "do_normalize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25], "resample": 3,
        "size": {"height": 80, "width": 80}}))
    result = compile_(tmp_path, path)
    pre = result.manifest.preprocess
    # metadata wins over the file beside the model (size, resize), the file gives what metadata lacks.
    assert (pre.input_size, pre.resize, pre.interpolation) == ((56, 72), "letterbox", "bicubic")
    assert pre.mean == (0.5, 0.5, 0.5) and pre.std == (0.25, 0.25, 0.25)
    assert result.manifest.labels == ["cat", "dog", "bird"]
    # A card file beside the model wins over both; flags win over the card.
    (folder / "model.card.toml").write_text('input_size = [40, 40]\nlabels = ["a", "b", "c"]\ninterpolation = "area"\n')
    carded = compile_(tmp_path, path, card_fields={"interpolation": "nearest"})
    assert carded.manifest.preprocess.input_size == (40, 40) and carded.manifest.labels == ["a", "b", "c"]
    assert carded.manifest.preprocess.interpolation == "nearest"
    assert PreprocessConfig.from_dict(carded.manifest.preprocess.to_dict()) == carded.manifest.preprocess


def test_inline_labels_on_the_command_line(tmp_path: Path) -> None:
    path = classifier_onnx(tmp_path / "two.onnx", classes=2)
    result = run_cli("-q", "compile", str(path), "--labels", "0,180", "-o", str(tmp_path / "two.evpkg"))
    assert result.returncode == 0, result.stderr
    from edgevision.artifact import read_manifest
    assert read_manifest(tmp_path / "two.evpkg").labels == ["0", "180"]


def test_card_fields_parse_to_preprocessing() -> None:
    from edgevision.compiler.card import card_from_dict, card_from_hf_preprocessor, card_from_metadata, card_from_timm
    from edgevision.preprocess import PreprocessConfig

    card = card_from_dict({"input_size": "48x192", "scale": 2 / 255, "offset": -1, "labels": "0,180"}, "t")
    config = card.apply(PreprocessConfig())
    assert config.input_size == (48, 192) and config.mean == pytest.approx((0.5,) * 3)
    assert config.std == pytest.approx((0.5,) * 3) and card.labels == ("0", "180")
    assert config.short_side == round(48 / 0.875)
    convnext = card_from_hf_preprocessor({"size": {"shortest_edge": 224}, "crop_pct": 0.9, "image_mean": [0.4] * 3,
                                          "image_std": [0.2] * 3, "resample": 2}, "t").apply(PreprocessConfig())
    assert (convnext.resize, convnext.input_size, convnext.short_side) == ("crop", (224, 224), 249)
    timm = card_from_timm({"input_size": [3, 240, 240], "interpolation": "bicubic", "crop_pct": 0.882,
                           "mean": [0.5] * 3, "std": [0.5] * 3}, "t").apply(PreprocessConfig())
    assert timm.input_size == (240, 240) and timm.short_side == 272 and timm.interpolation == "bicubic"
    assert card_from_metadata({"labels": '["x", "y"]'}, "t").labels == ("x", "y")
    assert card_from_metadata({"edgevision.input_size": "[32, 32]"}, "t").input_size == (32, 32)


def test_preprocessing_modes_and_old_manifests(photo: np.ndarray) -> None:
    import cv2

    from edgevision.preprocess import PreprocessConfig, preprocess

    # "crop" on a photo: the short side resized, then the centre cut (torchvision's order, exactly).
    config = PreprocessConfig(input_size=(64, 64), resize_short=73)
    h, w = photo.shape[:2]
    scale = 73 / min(h, w)
    big = cv2.resize(photo, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_LINEAR_EXACT)
    top, left = (big.shape[0] - 64) // 2, (big.shape[1] - 64) // 2
    old = preprocess(big[top:top + 64, left:left + 64], PreprocessConfig(input_size=(64, 64), resize="direct"))
    np.testing.assert_array_equal(preprocess(photo, config), old)
    # A panorama past the bound is cut in source coordinates first: the same view, within aliasing.
    wide = np.ascontiguousarray(np.concatenate([photo] * 3, axis=1)[:150])
    assert np.abs(preprocess(wide, config).mean() - preprocess(wide[:, 451:902], config).mean()) < 0.05
    # A 2 x 100000 strip never becomes a 256 x 12.8 M intermediate: the crop comes first.
    strip = np.zeros((2, 100_000, 3), np.uint8)
    assert preprocess(strip, PreprocessConfig()).shape == (3, 224, 224)
    # letterbox keeps the aspect ratio and pads: a wide photo gets bands at top and bottom.
    boxed = preprocess(photo, PreprocessConfig(input_size=(64, 64), resize="letterbox", input_dtype="uint8"))
    assert boxed.dtype == np.uint8 and (boxed[:, 0, :] == 0).all() and boxed[:, 32, :].any()
    # Manifests written before resize modes load with their old meaning.
    legacy = {k: v for k, v in PreprocessConfig(resize_short=None).to_dict().items()
              if k not in ("resize", "crop_pct", "pad_value", "input_dtype")}
    assert PreprocessConfig.from_dict(legacy).resize == "direct"
    assert PreprocessConfig.from_dict({**legacy, "resize_short": 256}).resize == "crop"


# --- failures: one line each --------------------------------------------------------------------

def _compile_cli(ws: Workspace, model: str | Path, *args: str):
    return cli(ws, "compile", str(model), "-o", str(ws.out / "m.evpkg"), *args)


ONNX_FAILURES = {
    "two inputs": ([("image", TensorProto.FLOAT, [1, 3, 64, 64]), ("mask", TensorProto.FLOAT, [1, 1, 64, 64])],
                   ("takes 2 inputs", "image", "mask")),
    "int64 input": ([("ids", TensorProto.INT64, [1, 3, 64, 64])], ("is int64", "float32 or uint8")),
    "no input": ([], ("has no input",)),
    "2-D input": ([("x", TensorProto.FLOAT, [1, 3])], ("not an image batch",)),
    "1-channel input": ([("x", TensorProto.FLOAT, [1, 1, 28, 28])], ("1 channel(s)", "3-channel")),
}


@pytest.mark.parametrize("case", list(ONNX_FAILURES))
def test_onnx_inputs_edgevision_cannot_feed(ws: Workspace, case: str) -> None:
    inputs, needles = ONNX_FAILURES[case]
    path = raw_onnx(ws.out.parent / "bad.onnx", inputs)
    assert_one_line_error(_compile_cli(ws, path), ws, *needles)


def test_dynamic_size_without_a_size_asks_for_one(ws: Workspace) -> None:
    path = classifier_onnx(ws.out.parent / "dyn.onnx", input_name="x", shape=(-1, 3, "h", "w"))
    assert_one_line_error(_compile_cli(ws, path), ws, "dynamic height and width", "--input-size")


def test_fixed_size_onnx_refuses_another_size(ws: Workspace) -> None:
    path = classifier_onnx(ws.out.parent / "fixed.onnx")
    assert_one_line_error(_compile_cli(ws, path, "--input-size", "48x192"), ws, "fixed at 64x64", "48x192")


def test_two_output_onnx_asks_which(ws: Workspace) -> None:
    path = classifier_onnx(ws.out.parent / "two.onnx", feature_output=True)
    assert_one_line_error(_compile_cli(ws, path), ws, "2 outputs", "scores", "--model-output")
    assert_one_line_error(_compile_cli(ws, path, "--model-output", "r"), ws, "not N x classes", "--model-output")
    assert_one_line_error(_compile_cli(ws, path, "--model-output", "7"), ws, "no output 7")


@pytest.mark.parametrize("factory, needles", [
    ("detector", ("returns 2 outputs", "--model-output")),
    ("feature_map", ("not N x classes",)),
    ("raises", ("raised ValueError", "weights not found")),
    ("needs_arguments", ("needs arguments", "num_classes")),
    ("recurses", ("recursed",)),
    ("tuple_of_models", ("returned tuple",)),
    ("dict_of_models", ("returned dict",)),
])
def test_factories_that_fail(ws: Workspace, factory: str, needles: tuple[str, ...]) -> None:
    assert_one_line_error(_compile_cli(ws, f"{FACTORIES}:{factory}", "--input-size", "64"), ws, *needles)


@pytest.mark.parametrize("source, needles", [
    ("import torch\nimport not_a_module_anywhere\n", ("cannot import", "not_a_module_anywhere")),
    ("def build(:\n    pass\n", ("syntax error", "line 1")),
    ("raise RuntimeError('GPU required')\n", ("importing", "GPU required")),
])
def test_factory_modules_that_do_not_import(ws: Workspace, source: str, needles: tuple[str, ...]) -> None:
    module = ws.out.parent / "user_model.py"
    module.write_text(source + "\ndef build():\n    return None\n")
    assert_one_line_error(_compile_cli(ws, f"{module}:build"), ws, *needles)


def test_empty_pt_file(ws: Workspace) -> None:
    empty = ws.out.parent / "empty.pt"
    empty.write_bytes(b"")
    assert_one_line_error(_compile_cli(ws, empty), ws, "empty.pt is empty")


@pytest.mark.parametrize("card, needles", [
    ("input_size = [48, 192]\nmean = 'grey'\n", ("mean", "three")),
    ("inputsize = 48\n", ("unknown field 'inputsize'",)),
    ("input_size = [48,\n", ("not valid TOML",)),
    ("labels = 'nope.txt'\n", ("labels file", "does not exist")),
])
def test_bad_model_cards(ws: Workspace, card: str, needles: tuple[str, ...]) -> None:
    path = classifier_onnx(ws.out.parent / "m.onnx")
    (ws.out.parent / "my.card.toml").write_text(card)
    assert_one_line_error(_compile_cli(ws, path, "--card", str(ws.out.parent / "my.card.toml")), ws, *needles)


def test_wrong_number_of_inline_labels(ws: Workspace) -> None:
    path = classifier_onnx(ws.out.parent / "m.onnx")
    assert_one_line_error(_compile_cli(ws, path, "--labels", "0,180"), ws, "2 labels", "10 outputs")
