"""The artifact's self-description. JSON, so any device-side Python can read it.

Everything here is checked against an allow-list when an artifact is read (``Manifest.from_dict``):
unknown keys, wrong types, a label list that does not fit the output and values outside sane bounds
are refused with one line, because a manifest is input from whoever made the file.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..errors import ArtifactError, EdgevisionError
from ..preprocess import PreprocessConfig
from ..targets import Target

FORMAT = "edgevision-artifact"
# 2: manifest_sha256 (the manifest's own digest), sizes (each member's byte count), the gate bound to
# the payload it measured (accuracy.payload_sha256), canonical JSON, an optional signature.json member.
FORMAT_VERSION = 2
SEAL_KEY = "manifest_sha256"  # sha256 of the canonical manifest without this key (see package.seal)
MAX_LABELS = 100_000
MAX_TEXT = 4096  # characters in one label or name
MAX_PIXELS_SIDE = 16384
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


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
    # What the threshold applies to: "decisive-top1" (top-1 agreement where the original is decisive),
    # "top1-drop" (accuracy drop in points, labelled folders) or "cosine" (flat outputs). Older artifacts: "top1"/"top5".
    criterion: str = "top1"
    decisive: int = 0  # inputs whose reference top-1 beats its runner-up by >= decisive_margin (log-odds)
    ties: int = 0
    decisive_agreement: float = 1.0
    tie_agreement: float = 1.0
    decisive_margin: float = 0.0
    available_inputs: int = 0  # images in the validation folder (images: how many the gate ran)
    validation: str = ""  # the folder
    spread: dict = field(default_factory=dict)  # inputs per sub-folder
    distinct_classes: int = 0  # distinct top-1 classes of the reference over the inputs
    labelled: bool = False
    reference_top1_accuracy: float | None = None
    candidate_top1_accuracy: float | None = None
    reference_top5_accuracy: float | None = None
    candidate_top5_accuracy: float | None = None
    drop_points: float | None = None
    classes: int = 0
    # The payload this gate measured (package.payload_digest): a gate record copied onto another
    # payload no longer matches, and the artifact is refused.
    payload_sha256: str = ""

    def summary(self) -> str:
        """One line: what the gate judged by and what it measured."""
        used = f"{self.images} inputs" + (f" of {self.available_inputs}" if self.available_inputs > self.images else "")
        if self.criterion == "top1-drop":
            return (f"top-1 accuracy {self.reference_top1_accuracy:.1%} -> {self.candidate_top1_accuracy:.1%} "
                    f"(drop {self.drop_points:.2f} points, limit {self.threshold:g}) on {used} in {self.classes} classes")
        if self.criterion == "cosine":
            return (f"mean cosine {self.mean_cosine:.6f} (need {self.threshold:g}), max|diff| {self.max_abs_diff:.3g} "
                    f"on {used}; only {self.decisive} decisive")
        if self.criterion != "decisive-top1":  # artifacts from before the margin-aware gate
            return f"{self.criterion} agreement on {used} (need {self.threshold:.0%})"
        return (f"top-1 agreement {self.decisive_agreement:.1%} on {self.decisive} decisive inputs (need "
                f"{self.threshold:.0%}; {self.ties} near-ties apart, {self.tie_agreement:.0%} kept) of {used}; "
                f"all inputs {self.top1_agreement:.1%}")


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
    sizes: dict[str, int] = field(default_factory=dict)  # member name -> bytes
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
        check_format(data)
        try:
            _check_schema(data)
            values = {k: v for k, v in data.items() if k != SEAL_KEY}
            values["target"] = Target.from_dict(values["target"])
            values["input"] = TensorSpec(**{**values["input"], "shape": tuple(values["input"]["shape"])})
            values["output"] = TensorSpec(**{**values["output"], "shape": tuple(values["output"]["shape"])})
            values["preprocess"] = PreprocessConfig.from_dict(values["preprocess"])
            if values.get("accuracy") is not None:
                values["accuracy"] = AccuracyReport(**values["accuracy"])
            manifest = cls(**values)
        except ArtifactError:
            raise
        except (KeyError, TypeError, ValueError, EdgevisionError) as err:
            problem = getattr(err, "problem", None) or str(err)
            raise ArtifactError(f"artifact manifest is malformed ({problem})",
                                "recompile the model with this edgevision version") from err
        _check_values(manifest)
        return manifest


def check_format(data: Any) -> None:
    """Is this an edgevision manifest of the one format version this edgevision reads?"""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ArtifactError("this file is not an edgevision artifact (no edgevision manifest)",
                            "compile one with `edgevision compile`")
    version = data.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version > FORMAT_VERSION:
        raise ArtifactError(f"artifact format version {version} is newer than this edgevision "
                            f"understands ({FORMAT_VERSION})", "upgrade edgevision on this device")
    if version < FORMAT_VERSION:
        raise ArtifactError(f"artifact format version {version} predates checked manifests "
                            f"(this edgevision reads {FORMAT_VERSION})",
                            "recompile the model with this edgevision version")


def _malformed(problem: str) -> ArtifactError:
    return ArtifactError(f"artifact manifest is malformed: {problem}",
                         "it was edited or not made by edgevision: copy or compile it again")


def _known_keys(dataclass_type: type, data: Any, where: str, extra: tuple[str, ...] = ()) -> None:
    if not isinstance(data, dict):
        raise _malformed(f"{where} is {type(data).__name__}, not an object")
    allowed = {f.name for f in fields(dataclass_type)} | set(extra)
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise _malformed(f"unknown key(s) {unknown[:5]} in {where}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _text(value: Any, where: str) -> None:
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise _malformed(f"{where} must be text of at most {MAX_TEXT} characters")


def _str_map(value: Any, where: str) -> None:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise _malformed(f"{where} must map text to text")


def _check_schema(data: dict[str, Any]) -> None:
    """Keys and types, before anything is built from them."""
    _known_keys(Manifest, data, "the manifest", extra=(SEAL_KEY,))
    for key in ("target", "input", "output", "preprocess", "labels", "payload", "model_name", "backend"):
        if key not in data:
            raise _malformed(f"it lacks {key!r}")
    _known_keys(Target, data["target"], "target")
    _known_keys(PreprocessConfig, data["preprocess"], "preprocess")
    for key in ("input", "output"):
        _known_keys(TensorSpec, data[key], key)
        shape = data[key].get("shape")
        if (not isinstance(shape, list) or not 1 <= len(shape) <= 8
                or not all((_is_int(d) and 0 < d <= 1 << 20) or (isinstance(d, str) and d.isidentifier())
                           for d in shape)):
            raise _malformed(f"{key}.shape {str(shape)[:60]} is not a list of positive sizes")
    if data.get("accuracy") is not None:
        _known_keys(AccuracyReport, data["accuracy"], "accuracy")
        for key in ("max_abs_diff", "top1_agreement", "top5_agreement", "threshold", "mean_cosine", "mean_kl"):
            if key in data["accuracy"] and not _is_number(data["accuracy"][key]):
                raise _malformed(f"accuracy.{key} is not a finite number")
    for key in ("model_name", "backend", "backend_version", "precision", "created"):
        if key in data:
            _text(data[key], key)
    if not str(data["backend"]).isidentifier():
        raise _malformed(f"backend {data['backend']!r} is not a backend name")
    for key in ("toolchain", "host", "files"):
        if key in data:
            _str_map(data[key], key)
    for key in ("payload", "source"):
        if not isinstance(data.get(key, {}), dict):
            raise _malformed(f"{key} is not an object")
    if data.get("scores", "logits") not in ("logits", "probabilities"):
        raise _malformed(f"scores {str(data.get('scores'))[:40]!r} is neither 'logits' nor 'probabilities'")
    sizes = data.get("sizes", {})
    if not isinstance(sizes, dict) or not all(_is_int(v) and v >= 0 for v in sizes.values()):
        raise _malformed("sizes must map member names to byte counts")
    labels = data["labels"]
    if not isinstance(labels, list) or len(labels) > MAX_LABELS:
        raise _malformed(f"labels must be a list of at most {MAX_LABELS:,} names")
    bad = next((i for i, label in enumerate(labels) if not isinstance(label, str) or len(label) > MAX_TEXT), None)
    if bad is not None:
        raise _malformed(f"label {bad} is {str(labels[bad])[:40]!r} ({type(labels[bad]).__name__}), not a name")


def _check_values(m: Manifest) -> None:
    """Consistency between fields: what the runtime indexes and divides by must be sound."""
    classes = m.output.shape[-1]
    if not _is_int(classes) or len(m.labels) != classes:
        raise _malformed(f"{len(m.labels)} labels for an output of {classes} classes")
    if set(m.files) != set(m.sizes):
        raise _malformed("files and sizes list different members")
    if not all(_SHA256.match(h) for h in m.files.values()):
        raise _malformed("files must hold lowercase sha256 hex digests")
    p = m.preprocess
    if (len(p.input_size) != 2 or not all(_is_int(v) and 0 < v <= MAX_PIXELS_SIDE for v in p.input_size)
            or not (p.resize_short is None or (_is_int(p.resize_short) and 0 < p.resize_short <= MAX_PIXELS_SIDE))):
        raise _malformed(f"preprocess sizes {p.input_size}, resize_short {p.resize_short} are out of range")
    if (len(p.mean) != 3 or len(p.std) != 3 or not all(_is_number(v) for v in (*p.mean, *p.std))
            or not all(abs(v) > 1e-6 for v in p.std)):
        raise _malformed("preprocess mean/std must be three finite numbers each, std not zero")
    t = m.target
    if not (t.threads is None or (_is_int(t.threads) and 0 < t.threads <= 1024)):
        raise _malformed(f"target.threads {t.threads!r} is not a thread count")
    for key in ("name", "arch", "device", "backend"):
        _text(getattr(t, key), f"target.{key}")
    if m.accuracy is not None and not _SHA256.match(m.accuracy.payload_sha256):
        raise _malformed("the accuracy gate record names no payload digest")
