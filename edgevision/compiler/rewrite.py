"""Graph rewrites edgevision offers when a backend cannot convert an operator as exported.

Each rewrite is exact (the same numbers, not an approximation); the accuracy gate still compares
the rewritten, compiled model with the original on every compile.

- ``global-pool``: an AveragePool/MaxPool whose kernel covers the whole feature map (transformers'
  EfficientNet pools with kernel 1280 and ceil_mode over a 7x7 map) becomes GlobalAveragePool /
  GlobalMaxPool. ONNX Runtime runs the original; OpenVINO refuses it ("Kernel after dilation has size").
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from ..errors import InputError

log = logging.getLogger(__name__)


def _spatial_dims(model: Any, names: set[str]) -> dict[str, tuple[int, ...]]:
    """The spatial shape of each tensor in ``names``: from shape inference, else from one ONNX Runtime run.

    Static shape inference gives up on many exported graphs (transformers' EfficientNet loses its
    shapes at a computed Pad), so the shapes are measured: one run on zeros at the fixed input size.
    """
    import numpy as np
    import onnx

    shapes = {}
    for info in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        dims = info.type.tensor_type.shape.dim
        if info.name in names and len(dims) >= 3 and all(d.HasField("dim_value") for d in dims[2:]):
            shapes[info.name] = tuple(d.dim_value for d in dims[2:])
    missing = sorted(names - set(shapes))
    if not missing:
        return shapes
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend(onnx.ValueInfoProto(name=name) for name in missing)
    initialized = {init.name for init in model.graph.initializer}
    feed = {}
    for graph_input in model.graph.input:
        if graph_input.name in initialized:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else 1 for d in graph_input.type.tensor_type.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(graph_input.type.tensor_type.elem_type)
        feed[graph_input.name] = np.zeros(dims, dtype)
    options = ort.SessionOptions()
    options.log_severity_level = 4
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    for name, value in zip(missing, session.run(missing, feed)):
        if value.ndim >= 3:
            shapes[name] = tuple(value.shape[2:])
    return shapes


def _pool_attrs(node: Any) -> dict[str, Any]:
    return {a.name: a for a in node.attribute}


def _whole_map_pools(model: Any) -> list[Any]:
    """Pooling nodes whose window covers the entire input: a global pool written the long way."""
    pools = [n for n in model.graph.node if n.op_type in ("AveragePool", "MaxPool") and len(n.output) == 1]
    big = [n for n in pools if "kernel_shape" in _pool_attrs(n)]
    if not big:
        return []
    shapes = _spatial_dims(model, {n.input[0] for n in big})
    found = []
    for node in big:
        if node.input[0] not in shapes:
            continue
        attrs = _pool_attrs(node)
        kernel = list(attrs["kernel_shape"].ints) if "kernel_shape" in attrs else []
        spatial = shapes[node.input[0]]
        pads = list(attrs["pads"].ints) if "pads" in attrs else [0] * (2 * len(spatial))
        dilations = list(attrs["dilations"].ints) if "dilations" in attrs else [1] * len(spatial)
        ceil_mode = attrs["ceil_mode"].i if "ceil_mode" in attrs else 0
        auto_pad = attrs["auto_pad"].s.decode() if "auto_pad" in attrs else "NOTSET"
        if (len(kernel) == len(spatial) and not any(pads) and set(dilations) == {1}
                and auto_pad in ("NOTSET", "VALID")
                and all(k >= s for k, s in zip(kernel, spatial))
                and (ceil_mode or all(k == s for k, s in zip(kernel, spatial)))):
            found.append(node)
    return found


def _global_pool(model: Any) -> int:
    import onnx

    nodes = _whole_map_pools(model)
    for node in nodes:
        op = "GlobalAveragePool" if node.op_type == "AveragePool" else "GlobalMaxPool"
        replacement = onnx.helper.make_node(op, [node.input[0]], list(node.output), name=node.name or None)
        node.CopyFrom(replacement)
    return len(nodes)


def _count_global_pool(model: Any) -> int:
    return len(_whole_map_pools(model))


# name -> (apply in place and return how many nodes changed, count what it would change)
REWRITES: dict[str, tuple[Callable[[Any], int], Callable[[Any], int]]] = {
    "global-pool": (_global_pool, _count_global_pool),
}


def check_names(names: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    unknown = [n for n in names if n not in REWRITES]
    if unknown:
        raise InputError(f"unknown graph rewrite {unknown[0]!r}", f"use one of {', '.join(REWRITES)}")
    return tuple(names)


def applicable(onnx_path: Path) -> list[str]:
    """The rewrites that would change this graph (offered when a backend refuses it)."""
    import onnx

    model = onnx.load(str(onnx_path))
    return [name for name, (_, count) in REWRITES.items() if count(model)]


def apply(onnx_path: Path, names: tuple[str, ...], out_path: Path) -> tuple[Path, dict[str, int]]:
    """Write ``onnx_path`` with ``names`` applied to ``out_path``; how many nodes each changed."""
    import onnx

    model = onnx.load(str(onnx_path))
    changed = {name: REWRITES[name][0](model) for name in names}
    onnx.save(model, str(out_path))
    log.info("graph rewrites on %s: %s", onnx_path.name, changed)
    return out_path, changed
