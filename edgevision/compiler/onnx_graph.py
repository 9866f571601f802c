"""An ONNX classifier as edgevision compiles it: one image input at a fixed size, one N x classes output.

Users' ONNX files come with external data, dynamic height/width, NHWC or uint8 inputs, several
outputs and inputs not named ``input``. Everything downstream (INT8 calibration, the backends,
the gate) works from the one self-contained graph written here, and reads the input and output
names from :class:`GraphIO` rather than assuming them.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import EdgevisionError, InputError

log = logging.getLogger(__name__)
_DTYPES = {1: "float32", 2: "uint8"}  # onnx.TensorProto.FLOAT, UINT8
# Ops a final Softmax can sit behind and still be what the model returns.
_PASSTHROUGH = {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Cast"}
MAX_PROTO_BYTES = 2**31 - 1


@dataclass(frozen=True)
class GraphIO:
    input_name: str
    input_dtype: str  # "float32" or "uint8"
    layout: str  # "NCHW" or "NHWC"
    input_size: tuple[int, int] | None  # None: dynamic height/width
    output_names: tuple[str, ...]
    output_shapes: tuple[tuple[int | str, ...], ...]
    metadata: dict[str, str]


def _onnx() -> Any:
    try:
        import onnx
    except ImportError as err:
        raise EdgevisionError("reading ONNX models needs the onnx package", "pip install 'edgevision[compile]'") from err
    return onnx


def load_onnx(path: Path) -> Any:
    """The model with its external data (``model.onnx.data`` beside it) loaded, checked."""
    onnx = _onnx()
    try:
        model = onnx.load(str(path), load_external_data=True)
    except FileNotFoundError as err:
        raise InputError(f"{path} keeps its weights in an external file that is missing ({err.filename or err})",
                         "put the .data file the model names next to it") from err
    except Exception as err:  # DecodeError, ValidationError, ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"{path} is not a valid ONNX model: {first}", "re-export it with torch.onnx.export") from err
    try:
        onnx.checker.check_model(model) if model.ByteSize() < MAX_PROTO_BYTES else onnx.checker.check_model(str(path))
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"{path} is not a valid ONNX model: {first}", "re-export it with torch.onnx.export") from err
    return model


def _dims(value_info: Any) -> tuple[int | str, ...]:
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or "?")
                 for d in value_info.type.tensor_type.shape.dim)


def _inputs(model: Any) -> list[Any]:
    initialized = {init.name for init in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initialized]


def inspect(model: Any, where: str, layout: str | None = None) -> GraphIO:
    """Read the model's one image input and its outputs; one line for anything edgevision cannot feed."""
    onnx = _onnx()
    inputs = _inputs(model)
    if not inputs:
        raise InputError(f"{where} has no input", "export the model with one image input, e.g. [1, 3, 224, 224]")
    if len(inputs) > 1:
        names = ", ".join(f"{i.name} {list(_dims(i))}" for i in inputs[:4])
        raise InputError(f"{where} takes {len(inputs)} inputs ({names}); edgevision compiles single-image classifiers",
                         "export the model with one image input (fold the others in as constants)")
    first = inputs[0]
    if not first.type.HasField("tensor_type"):
        raise InputError(f"{where}: input {first.name!r} is not a tensor", "export the model with one image tensor input")
    elem = first.type.tensor_type.elem_type
    if elem not in _DTYPES:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(elem).name if elem else "undefined"
        raise InputError(f"{where}: input {first.name!r} is {dtype}; edgevision feeds images as float32 or uint8",
                         "export the model with a float32 (or uint8) image input")
    dims = _dims(first)
    if len(dims) != 4:
        raise InputError(f"{where}: input {first.name!r} has shape {list(dims)}, not an image batch "
                         "(N, 3, H, W or N, H, W, 3)", "export the model with a 4-D image input")
    if layout is None:
        layout = "NCHW" if dims[1] == 3 else "NHWC" if dims[3] == 3 else None
    channels = dims[1] if layout == "NCHW" else dims[3] if layout == "NHWC" else dims[1]
    if layout is None or channels != 3:
        raise InputError(f"{where}: input {first.name!r} {list(dims)} has {channels} channel(s) where edgevision "
                         "feeds 3-channel colour images", "export the model with a 3-channel (RGB/BGR) input")
    hw = dims[2:4] if layout == "NCHW" else dims[1:3]
    size = (int(hw[0]), int(hw[1])) if all(isinstance(d, int) for d in hw) else None
    if isinstance(dims[0], int) and dims[0] != 1:
        raise InputError(f"{where}: input {first.name!r} has a fixed batch of {dims[0]}",
                         "export the model with batch 1 or a dynamic batch dimension")
    outputs = list(model.graph.output)
    if not outputs:
        raise InputError(f"{where} has no output", "export the model with its classifier output")
    return GraphIO(first.name, _DTYPES[elem], layout, size, tuple(o.name for o in outputs),
                   tuple(_dims(o) for o in outputs), {p.key: p.value for p in model.metadata_props})


def choose_output(io: GraphIO, choice: str | int | None, where: str) -> str:
    """The name of the classifier output: the only one, or the one ``--model-output`` names."""
    listing = ", ".join(f"{i}: {name} {list(shape)}" for i, (name, shape) in
                        enumerate(zip(io.output_names[:6], io.output_shapes)))
    if choice is None:
        if len(io.output_names) == 1:
            return io.output_names[0]
        if "logits" in io.output_names:
            return "logits"
        raise InputError(f"{where} has {len(io.output_names)} outputs ({listing}); edgevision compiles one "
                         "N x classes output", "name the classifier's with --model-output NAME|INDEX "
                         "(or output = ... in the model card)")
    if isinstance(choice, int) or (isinstance(choice, str) and choice.isdigit() and choice not in io.output_names):
        index = int(choice)
        if not 0 <= index < len(io.output_names):
            raise InputError(f"{where} has no output {index} (it has {listing})", "pass an index from the list")
        return io.output_names[index]
    if choice not in io.output_names:
        raise InputError(f"{where} has no output {choice!r} (it has {listing})", "pass a name or an index from the list")
    return choice


def _prune(model: Any) -> None:
    """Drop the nodes and initializers no remaining output needs (the other heads of a cut graph)."""
    graph = model.graph
    needed = {o.name for o in graph.output}
    kept = []
    for node in reversed(graph.node):
        if any(name in needed for name in node.output):
            kept.append(node)
            needed.update(name for name in node.input if name)
            for attr in node.attribute:  # subgraphs (If/Loop) read outer names too
                for sub in list(attr.g.node if attr.HasField("g") else []) + [n for g in attr.graphs for n in g.node]:
                    needed.update(sub.input)
    kept.reverse()
    del graph.node[:]
    graph.node.extend(kept)
    inits = [init for init in graph.initializer if init.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)


def final_activation(model: Any, output: str) -> str | None:
    """"Softmax"/"Sigmoid" when the output is a probability already (through reshapes), else None."""
    producers = {name: node for node in model.graph.node for name in node.output}
    node = producers.get(output)
    while node is not None and node.op_type in _PASSTHROUGH:
        node = producers.get(node.input[0]) if node.input else None
    return node.op_type if node is not None and node.op_type in ("Softmax", "Sigmoid") else None


def fix_graph(model: Any, io: GraphIO, output: str, size: tuple[int, int], dynamic_batch: bool, out_path: Path,
              where: str) -> Path:
    """Cut the graph to ``output``, fix the input at ``size`` (batch 1 or dynamic), write it as one file."""
    onnx = _onnx()
    chosen = [o for o in model.graph.output if o.name == output]
    if len(model.graph.output) > 1:
        del model.graph.output[:]
        model.graph.output.extend(chosen)
        _prune(model)
    shape = next(i for i in _inputs(model) if i.name == io.input_name).type.tensor_type.shape
    h, w = size
    values: list[int | str] = ["batch" if dynamic_batch else 1] + ([3, h, w] if io.layout == "NCHW" else [h, w, 3])
    for dim, value in zip(shape.dim, values):
        dim.Clear()
        if isinstance(value, str):
            dim.dim_param = value
        else:
            dim.dim_value = value
    out_dims = model.graph.output[0].type.tensor_type.shape.dim
    if len(out_dims):
        out_dims[0].Clear()
        if dynamic_batch:
            out_dims[0].dim_param = "batch"
        else:
            out_dims[0].dim_value = 1
    del model.graph.value_info[:]  # stale symbolic shapes; the backends infer them again
    try:
        model = onnx.shape_inference.infer_shapes(model)
    except Exception as err:  # inference is a help for the rewrites, not a requirement
        log.debug("shape inference failed on %s: %s", where, err)
    if model.ByteSize() >= MAX_PROTO_BYTES:
        raise InputError(f"{where} is larger than 2 GB, which one ONNX file cannot hold",
                         "edgevision compiles models under 2 GB of weights")
    onnx.save(model, str(out_path))
    return out_path


def output_shape(model_path: Path) -> tuple[int | str, ...]:
    onnx = _onnx()
    return _dims(onnx.load(str(model_path), load_external_data=False).graph.output[0])


def final_activation_path(model_path: Path, output: str) -> str | None:
    return final_activation(_onnx().load(str(model_path), load_external_data=False), output)
