"""The artifact's self-description. JSON, so any device-side Python can read it."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import ArtifactError
from ..preprocess import PreprocessConfig
from ..targets import Target

FORMAT = "edgevision-artifact"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int | str, ...]  # a str dimension is dynamic, e.g. "batch"
    dtype: str = "float32"
    layout: str = "NCHW"

    @property
    def dynamic_batch(self) -> bool:
        return isinstance(self.shape[0], str)


@dataclass(frozen=True)
class AccuracyReport:
    reference: str  # what the compiled model was compared with, e.g. "torch" or "onnxruntime"
    candidate: str  # what was run, e.g. "openvino CPU fp32" or "export only"
    images: int
    max_abs_diff: float
    top1_agreement: float
    top5_agreement: float
    threshold: float
    passed: bool
    mean_cosine: float = 1.0
    mean_kl: float = 0.0
    note: str = ""
    criterion: str = "top1"  # the agreement the threshold applies to: "top1", or "top5" (int8)


@dataclass
class Manifest:
    model_name: str
    target: Target
    backend: str
    backend_version: str
    precision: str
    input: TensorSpec
    output: TensorSpec
    preprocess: PreprocessConfig
    labels: list[str]
    payload: dict[str, Any]  # backend-specific: entry file names, build settings, runtime config
    accuracy: AccuracyReport | None = None
    toolchain: dict[str, str] = field(default_factory=dict)
    created: str = ""
    host: dict[str, str] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)  # original model file, its sha256, kind
    files: dict[str, str] = field(default_factory=dict)  # member name -> sha256
    # "logits": the runtime applies softmax; "probabilities": the model ends in Softmax/Sigmoid already.
    scores: str = "logits"
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["target"] = self.target.to_dict()
        data["preprocess"] = self.preprocess.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Manifest":
        if data.get("format") != FORMAT:
            raise ArtifactError("this file is not an edgevision artifact (no edgevision manifest)",
                                "compile one with `edgevision compile`")
        version = data.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ArtifactError(f"artifact format version {version} is newer than this edgevision "
                                f"understands ({FORMAT_VERSION})", "upgrade edgevision on this device")
        try:
            values = dict(data)
            values["target"] = Target.from_dict(values["target"])
            values["input"] = TensorSpec(**{**values["input"], "shape": tuple(values["input"]["shape"])})
            values["output"] = TensorSpec(**{**values["output"], "shape": tuple(values["output"]["shape"])})
            values["preprocess"] = PreprocessConfig.from_dict(values["preprocess"])
            if values.get("accuracy") is not None:
                values["accuracy"] = AccuracyReport(**values["accuracy"])
            return cls(**values)
        except (KeyError, TypeError, ValueError) as err:
            raise ArtifactError(f"artifact manifest is malformed ({err})",
                                "recompile the model with this edgevision version") from err
