"""What a model factory hands the compiler: the network plus what travels with it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..preprocess import PreprocessConfig


@dataclass
class ModelSpec:
    module: Any  # torch.nn.Module, or None when the source is already ONNX
    name: str
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    labels: list[str] | None = None  # None: ImageNet names for 1000 classes, else class_<i>
    onnx_path: Any = None  # pathlib.Path of a ready ONNX model (ONNX sources)
    exported_program: Any = None  # torch.export.ExportedProgram (.pt2 sources): exported with dynamo
    source: dict[str, Any] = field(default_factory=dict)
