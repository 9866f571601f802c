"""Which buffers to allocate and bind for an engine, decided from its tensor list alone.

Buffers are sized once for the largest batch the engine accepts and bound once; a smaller batch
uses the front of each buffer. The engine's tensors are read into :class:`TensorInfo` by the
device code; everything here runs without TensorRT.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import prod

from ...errors import ArtifactError

DTYPE_SIZES = {"float32": 4, "float16": 2, "int8": 1, "int32": 4}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    is_input: bool
    shape: tuple[int, ...]  # -1 marks a dynamic dimension, as TensorRT reports it
    dtype: str  # numpy name: float32, float16, ...
    index: int  # binding index (TensorRT < 8.5) or I/O tensor index


@dataclass(frozen=True)
class Buffer:
    name: str
    index: int
    shape: tuple[int, ...]  # sized for max_batch
    dtype: str

    @property
    def nbytes(self) -> int:
        return prod(self.shape) * DTYPE_SIZES[self.dtype]

    def batch_nbytes(self, batch: int) -> int:
        return self.nbytes // self.shape[0] * batch

    def batch_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, *self.shape[1:])


@dataclass(frozen=True)
class IOPlan:
    input: Buffer
    output: Buffer
    max_batch: int
    dynamic_batch: bool
    api: str  # "tensors" (set_tensor_address, execute_async_v3) or "bindings" (execute_async_v2)

    def binding_order(self) -> list[str]:
        """Names in binding-index order: the device pointer list execute_async_v2 takes."""
        return [b.name for b in sorted((self.input, self.output), key=lambda b: b.index)]


def plan_io(tensors: list[TensorInfo], max_batch: int, api: str) -> IOPlan:
    """One float32 image-batch input, one float32 logits output; only the batch may be dynamic."""
    inputs = [t for t in tensors if t.is_input]
    outputs = [t for t in tensors if not t.is_input]
    if len(inputs) != 1 or len(outputs) != 1:
        raise ArtifactError(f"the engine has {len(inputs)} inputs and {len(outputs)} outputs; "
                            "an image classifier needs exactly one of each",
                            "export the model with a single image input and a single logits output")
    if api not in ("tensors", "bindings"):
        raise ValueError(f"unknown TensorRT I/O api {api!r}")
    buffers = []
    dynamic = False
    for t in (inputs[0], outputs[0]):
        if t.dtype != "float32":
            raise ArtifactError(f"engine tensor {t.name!r} is {t.dtype}, edgevision feeds float32",
                                "keep the ONNX inputs and outputs float32")
        if any(d < 0 for d in t.shape[1:]):
            raise ArtifactError(f"engine tensor {t.name!r} has dynamic dimensions {t.shape} beyond the batch",
                                "compile with a fixed --input-size")
        if t.shape[0] < 0:
            dynamic = True
            batch = max_batch
        else:
            batch = t.shape[0]
            if batch != max_batch:
                raise ArtifactError(f"engine tensor {t.name!r} has batch {batch}, the build config says {max_batch}",
                                    "recompile the artifact")
        buffers.append(Buffer(t.name, t.index, (batch, *t.shape[1:]), t.dtype))
    return IOPlan(buffers[0], buffers[1], max_batch, dynamic, api)
