"""Models shaped the way people's models come: for tests/test_byom.py.

ONNX graphs are built with onnx.helper (no torch, ~ms each): one image input in any name, layout,
dtype or size, one or more outputs, an optional final Softmax, metadata props, external data.
The factories below are PyTorch models returning what real code returns (tuples, dicts, ...),
and factories that fail the ways user code fails.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

HERE = Path(__file__).resolve().parent
FACTORIES = HERE / "byom_models.py"


def classifier_onnx(path: Path, *, input_name: str = "pixels", shape: Sequence[int | str] = (1, 3, 64, 64),
                    dtype: str = "float32", layout: str = "NCHW", softmax: bool = False,
                    feature_output: bool = False, metadata: dict[str, str] | None = None,
                    external: bool = False, classes: int = 10) -> Path:
    """Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm [-> Softmax], fed as the arguments say."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(8, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array((rng.normal(size=(classes, 8)) * 4).astype(np.float32), "fc_w"),
             numpy_helper.from_array(rng.normal(size=classes).astype(np.float32), "fc_b")]
    nodes, x = [], input_name
    if dtype == "uint8":
        inits.append(numpy_helper.from_array(np.array(1 / 255, np.float32), "inv255"))
        nodes += [helper.make_node("Cast", [x], ["xf"], to=TensorProto.FLOAT),
                  helper.make_node("Mul", ["xf", "inv255"], ["xs"])]
        x = "xs"
    if layout == "NHWC":
        nodes.append(helper.make_node("Transpose", [x], ["nchw"], perm=[0, 3, 1, 2]))
        x = "nchw"
    nodes += [helper.make_node("Conv", [x, "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
              helper.make_node("GlobalAveragePool", ["r"], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
              helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["g"], transB=1)]
    nodes.append(helper.make_node("Softmax", ["g"], ["scores"], axis=1) if softmax
                 else helper.make_node("Identity", ["g"], ["scores"]))
    elem = {"float32": TensorProto.FLOAT, "uint8": TensorProto.UINT8, "int64": TensorProto.INT64}[dtype]
    outputs = [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [shape[0] if shape else 1, classes])]
    if feature_output:  # a second head, as a detector has: a 4-D feature map
        outputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, 8, 64, 64]))
    graph = helper.make_graph(nodes, "classifier", [helper.make_tensor_value_info(input_name, elem, list(shape))],
                              outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    if external:
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=path.name + ".data", size_threshold=0)
    else:
        onnx.save(model, str(path))
    return path


def raw_onnx(path: Path, inputs: list[tuple[str, int, list[int]]], output_shape: list[int] | None = None) -> Path:
    """A graph with exactly these (name, onnx dtype, shape) inputs whose output is a constant or an Identity."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if inputs:
        nodes = [helper.make_node("Identity", [inputs[0][0]], ["out"])]
        out_type, out_shape = inputs[0][1], inputs[0][2]
        inits = []
    else:
        nodes = [helper.make_node("Identity", ["const"], ["out"])]
        out_type, out_shape = TensorProto.FLOAT, [1, 10]
        inits = [numpy_helper.from_array(np.zeros((1, 10), np.float32), "const")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
                              [helper.make_tensor_value_info("out", out_type, output_shape or out_shape)], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(path))
    return path


# --- PyTorch factories: what people's models return -----------------------------------------------

def _net(classes: int = 10) -> Any:
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, classes)).eval()


class _Returning:
    """Wraps _net() so forward returns ``kind``: tuple, list, dict, detector, features, softmax."""

    def __new__(cls, kind: str) -> Any:
        import torch
        from torch import nn

        class Model(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.net = _net()
                with torch.no_grad():
                    self.net[-1].weight.mul_(8)

            def forward(self, x):
                logits = self.net(x)
                if kind == "tuple":
                    return (logits,)
                if kind == "detector":
                    return torch.sigmoid(logits[:, :4]).unsqueeze(1).repeat(1, 5, 1), logits
                if kind == "dict":
                    return {"embedding": logits * 0.5, "logits": logits}
                if kind == "features":
                    return self.net[1](self.net[0](x))
                if kind == "softmax":
                    return torch.softmax(logits, dim=1)
                return logits

        return Model().eval()


def returns_tuple():
    return _Returning("tuple")


def detector():
    """(boxes [N, 5, 4], scores [N, 10]): two outputs, as a detector's head gives them."""
    return _Returning("detector")


def returns_dict():
    return _Returning("dict")


def feature_map():
    return _Returning("features")


def ends_in_softmax():
    return _Returning("softmax")


# --- factories that fail as user code fails --------------------------------------------------------

def raises():
    raise ValueError("weights not found at /models/best.pt")


def needs_arguments(num_classes, pretrained=True):
    return _net(num_classes)


def recurses():
    return recurses()


def tuple_of_models():
    return (_net(), _net())


def dict_of_models():
    return {"model": _net()}
