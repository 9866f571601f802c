"""Small real models and artifact surgery for the reliability tests (test_errors, test_integrity, test_soak).

The models are tiny (64x64 input, a few thousand weights) so each compile takes about a second; the
failures they provoke are the same ones a full-size model hits.
"""
from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

HERE = Path(__file__).resolve().parent
MODELS = HERE / "reliability_models.py"


def _tiny_module(classes: int = 10):
    import torch
    from torch import nn

    class TinyNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU(),
                                          nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
            self.fc = nn.Linear(16, classes)

        def forward(self, x):
            return self.fc(self.features(x).flatten(1))

    torch.manual_seed(0)
    net = TinyNet()
    # BatchNorm statistics of a trained net, so the logits are not all alike.
    with torch.no_grad():
        net.features[1].running_mean.uniform_(-0.5, 0.5)
        net.features[1].running_var.uniform_(0.5, 2.0)
    return net.eval()


def _spec(module, name: str):
    from edgevision.compiler.spec import ModelSpec
    from edgevision.preprocess import PreprocessConfig

    return ModelSpec(module=module, name=name, preprocess=PreprocessConfig(input_size=(64, 64), resize_short=73))


def tiny():
    """10 classes, 64x64 input."""
    return _spec(_tiny_module(), "tiny")


def tiny_imagenet():
    """1000 classes: an artifact of ~100 kB (ImageNet labels in the manifest)."""
    return _spec(_tiny_module(1000), "tiny-imagenet")


def diverging():
    """tiny(), but the branch depends on the input's values: tracing freezes the all-zeros input's
    branch into the ONNX graph, real images take the other one in PyTorch, so the accuracy gate fails."""
    import torch
    from torch import nn

    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.real, self.other = _tiny_module(), _tiny_module()
            with torch.no_grad():
                self.other.fc.weight.mul_(-1.0)

        def forward(self, x):
            return self.real(x) if x.abs().sum() > 0 else self.other(x)

    return _spec(Branchy().eval(), "diverging")


def five_classes():
    """Same layers as tiny() but a 5-way head: its state_dict does not fit tiny()."""
    return _spec(_tiny_module(5), "five")


def mlp():
    """A different architecture (one linear layer): tiny()'s weights do not fit it."""
    from torch import nn

    return _spec(nn.Sequential(nn.Flatten(), nn.Linear(3 * 64 * 64, 10)).eval(), "mlp")


def fft_classifier():
    """Uses torch.fft.rfft2, which the TorchScript ONNX exporter cannot express at opset 17."""
    import torch
    from torch import nn

    class FftNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 10)

        def forward(self, x):
            return self.fc(torch.fft.rfft2(x).abs().mean(dim=(2, 3)))

    return _spec(FftNet().eval(), "fft")


def onnx_classifier(path: Path, pad_mode: str = "constant", custom_op: str | None = None) -> Path:
    """A real small ONNX classifier: Pad -> Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm.

    ``pad_mode="wrap"`` (ONNX opset 19) runs in ONNX Runtime but OpenVINO's importer rejects it;
    ``custom_op`` appends an operator of domain com.example that no runtime implements.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads"),
             numpy_helper.from_array(rng.normal(size=(8, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(size=(10, 8)).astype(np.float32), "fc_w"),
             numpy_helper.from_array(rng.normal(size=10).astype(np.float32), "fc_b")]
    nodes = [helper.make_node("Pad", ["input", "pads"], ["padded"], mode=pad_mode),
             helper.make_node("Conv", ["padded", "w"], ["c"]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["g"], transB=1)]
    opsets = [helper.make_opsetid("", 19)]
    if custom_op:
        nodes.append(helper.make_node(custom_op, ["g"], ["logits"], domain="com.example"))
        opsets.append(helper.make_opsetid("com.example", 1))
    else:
        nodes.append(helper.make_node("Identity", ["g"], ["logits"]))
    graph = helper.make_graph(nodes, "classifier", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                                  [1, 3, 64, 64])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits)
    # IR 9: what ONNX Runtime 1.31 reads (onnx's default IR 14 is newer than it supports).
    onnx.save(helper.make_model(graph, opset_imports=opsets, ir_version=9), str(path))
    return path


def rewrite_artifact(src: Path, dst: Path, manifest_edit: Callable[[dict], None] | None = None,
                     member_edit: Callable[[str, bytes], bytes | None] | None = None,
                     extra: list[tuple[zipfile.ZipInfo | str, bytes]] | None = None,
                     reseal: bool | None = None, rebind_gate: bool = True) -> Path:
    """Copy an artifact zip member by member, changing what the test asks for.

    ``member_edit(name, data)`` returns the new bytes, or None to drop the member; ``extra`` adds
    (name or ZipInfo, data) members; a ZipInfo carries mode bits, e.g. a symbolic link's.
    ``reseal`` (default: when ``manifest_edit`` is given) makes a *consistent* forgery: the manifest's
    files, sizes, gate binding and own digest are recomputed from the new members, as someone who
    knows the format would; only a signature can catch that. ``reseal=False`` leaves the edit raw;
    ``rebind_gate=False`` keeps the gate record's old payload digest (a gate shown for another payload).
    """
    from edgevision.artifact import MANIFEST_NAME, payload_digest
    from edgevision.artifact.package import seal

    reseal = manifest_edit is not None if reseal is None else reseal
    with zipfile.ZipFile(src) as zin:
        members = {info.filename: zin.read(info.filename) for info in zin.infolist()}
    manifest = json.loads(members.pop(MANIFEST_NAME))
    if member_edit is not None:
        members = {n: d for n, d in ((n, member_edit(n, d)) for n, d in members.items()) if d is not None}
    if manifest_edit is not None:
        manifest_edit(manifest)
    if reseal:
        payload = {n: d for n, d in members.items() if n.startswith("payload/")}
        manifest["files"] = {n: hashlib.sha256(d).hexdigest() for n, d in sorted(payload.items())}
        manifest["sizes"] = {n: len(d) for n, d in sorted(payload.items())}
        if manifest.get("accuracy") and rebind_gate:
            manifest["accuracy"]["payload_sha256"] = payload_digest(manifest["files"])
        raw = seal(manifest)
    elif manifest_edit is not None:
        raw = json.dumps(manifest).encode()
    else:
        with zipfile.ZipFile(src) as zin:
            raw = zin.read(MANIFEST_NAME)
    with zipfile.ZipFile(dst, "w") as zout:
        zout.writestr(MANIFEST_NAME, raw)
        for name, data in members.items():
            zout.writestr(name, data)
        for name_or_info, data in extra or []:
            zout.writestr(name_or_info, data)
    return dst
