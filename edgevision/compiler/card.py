"""Model cards: a model's preprocessing, labels and output written as data, not code.

A card is a small TOML file (``model.card.toml`` beside the model, or ``--card FILE``) whose fields
are those of the compile flags::

    input_size = [48, 192]          # or "48x192"
    resize = "direct"               # "crop" (short side, then centre crop), "direct", "letterbox"
    crop_pct = 0.875                # "crop": short side = input / crop_pct (or resize_short = 256)
    interpolation = "bilinear"      # nearest, bilinear, bicubic, area, lanczos
    scale = 0.00784313725           # tensor = pixel * scale + offset (pixel 0-255) ...
    offset = -1.0
    # mean = [0.485, 0.456, 0.406]  # ... or (pixel / 255 - mean) / std
    # std = [0.229, 0.224, 0.225]
    channel_order = "RGB"           # or "BGR"
    layout = "NCHW"                 # or "NHWC"
    input_dtype = "float32"         # or "uint8" (raw pixels)
    labels = ["0", "180"]           # or "labels.txt" (beside the card), or {0 = "cat", 1 = "dog"}
    output = "logits"               # which output is the classifier's: a name or an index
    scores = "logits"               # or "probabilities" (the model ends in softmax/sigmoid)

The same fields come from an ONNX model's metadata props (``edgevision.card`` holding card TOML,
or one prop per field, ``labels``/``names``/``classes`` for labels), and from what sits beside the
model: a Hugging Face ``preprocessor_config.json`` or ``config.json`` (``id2label``), a timm
``pretrained_cfg`` (in ``config.json`` or ``pretrained_cfg.json``). Later sources win: files beside
the model < ONNX metadata < the card < command-line flags.
"""
from __future__ import annotations

import ast
import json
import math
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from ..errors import InputError
from ..preprocess import INPUT_DTYPES, RESIZE_MODES, PreprocessConfig
from ..runtime.prediction import SCORE_KINDS

CARD_SUFFIX = ".card.toml"
MAX_CARD_BYTES = 1 << 20
MAX_LABELS = 100_000
_PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "area", 5: "area"}


@dataclass(frozen=True)
class ModelCard:
    """What a card says; None: it does not say (something earlier or the default decides)."""

    input_size: tuple[int, int] | None = None
    resize: str | None = None
    resize_short: int | None = None
    crop_pct: float | None = None
    interpolation: str | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    channel_order: str | None = None
    layout: str | None = None
    input_dtype: str | None = None
    pad_value: int | None = None
    labels: tuple[str, ...] | None = None
    output: str | int | None = None
    scores: str | None = None
    origin: tuple[str, ...] = field(default=(), compare=False)  # where the fields came from, for messages

    def merged(self, later: "ModelCard") -> "ModelCard":
        """This card with every field ``later`` states taken from ``later``."""
        values = {f.name: getattr(later, f.name) for f in fields(self)
                  if f.name != "origin" and getattr(later, f.name) is not None}
        return replace(self, **values, origin=self.origin + later.origin)

    def apply(self, config: PreprocessConfig) -> PreprocessConfig:
        """``config`` with what the card states."""
        names = ("resize", "resize_short", "crop_pct", "interpolation", "mean", "std", "channel_order", "layout",
                 "input_dtype", "pad_value")
        values = {name: getattr(self, name) for name in names if getattr(self, name) is not None}
        if self.input_size is not None:
            values["input_size"] = self.input_size
            if self.resize_short is None:
                values["resize_short"] = None  # the short side follows the new size through crop_pct
        if self.resize is not None:
            values["crop"] = "center"
        return replace(config, **values)


def _fail(where: str, problem: str, fix: str) -> InputError:
    return InputError(f"{where}: {problem}", fix)


def _size(value: Any, where: str) -> tuple[int, int]:
    if isinstance(value, str):
        parts = value.lower().replace("x", ",").split(",")
        try:
            value = [int(p) for p in parts]
        except ValueError:
            raise _fail(where, f"input_size {value!r} is not HxW", "write e.g. input_size = [224, 224]") from None
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and 8 <= v <= 8192 for v in value)):
        raise _fail(where, f"input_size {value!r} must be [height, width], each 8-8192",
                    "write e.g. input_size = [224, 224]")
    return int(value[0]), int(value[1])


def _triple(name: str, value: Any, where: str) -> tuple[float, float, float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value] * 3
    if (not isinstance(value, (list, tuple)) or len(value) != 3
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)):
        raise _fail(where, f"{name} {value!r} must be one number or three", f"write e.g. {name} = [0.5, 0.5, 0.5]")
    return tuple(float(v) for v in value)  # type: ignore[return-value]


def _choice(name: str, value: Any, allowed: tuple[str, ...], where: str) -> str:
    text = str(value)
    aliases = {"center": "crop", "centre": "crop", "center_crop": "crop", "short": "crop", "stretch": "direct",
               "pad": "letterbox"} if name == "resize" else {}
    text = aliases.get(text.lower(), text)
    if name in ("channel_order", "layout"):
        text = text.upper()
    elif name not in ("input_dtype",):
        text = text.lower()
    if text not in allowed:
        raise _fail(where, f"{name} {value!r} unknown", f"use one of {', '.join(allowed)}")
    return text


def _number(name: str, value: Any, where: str, low: float, high: float) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not (low <= value <= high):
        raise _fail(where, f"{name} {value!r} must be a number from {low:g} to {high:g}", f"write e.g. {name} = {high:g}")
    return float(value)


def labels_from(value: Any, where: str, base: Path | None = None) -> tuple[str, ...]:
    """Labels as a card, a flag or model metadata give them: a list, {index: name}, a file, or "a,b,c"."""
    if isinstance(value, str):
        path = Path(value) if base is None or Path(value).is_absolute() else base / value
        if path.is_file():
            try:
                if path.stat().st_size > 16 << 20:
                    raise _fail(where, f"labels file {path} is larger than 16 MB", "pass one label a line")
                lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
            except OSError as err:
                raise _fail(where, f"cannot read labels file {path} ({err.strerror or err})",
                            "check the path and its permissions") from err
            value = [ln.strip() for ln in lines if ln.strip()]
        elif "," in value:
            value = [part.strip() for part in value.split(",")]
        else:
            raise _fail(where, f"labels file {path} does not exist",
                        "pass a text file (one label a line) or an inline list, e.g. --labels 0,180")
    if isinstance(value, Mapping):
        try:
            indexed = {int(k): v for k, v in value.items()}
        except (TypeError, ValueError):
            raise _fail(where, "labels keys must be class indices", 'write e.g. labels = {0 = "cat", 1 = "dog"}') from None
        if sorted(indexed) != list(range(len(indexed))):
            raise _fail(where, f"labels name classes {sorted(indexed)[:5]}..., not 0..{len(indexed) - 1}",
                        "name every class from 0 up")
        value = [indexed[i] for i in range(len(indexed))]
    if not isinstance(value, (list, tuple)) or not value or len(value) > MAX_LABELS:
        raise _fail(where, f"labels must be a non-empty list (at most {MAX_LABELS})",
                    'write e.g. labels = ["cat", "dog"] or a labels file')
    if not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value):
        raise _fail(where, "labels must be strings", 'write e.g. labels = ["0", "180"]')
    labels = tuple(str(v).strip() for v in value)
    if any(not label for label in labels):
        raise _fail(where, "a label is empty", "give every class a name")
    return labels


def card_from_dict(data: Mapping[str, Any], where: str, base: Path | None = None) -> ModelCard:
    """Validate the fields of a card (TOML table, metadata, flags) into a ModelCard."""
    known = {f.name for f in fields(ModelCard)} - {"origin"} | {"scale", "offset"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise _fail(where, f"unknown field {unknown[0]!r}", f"use only {', '.join(sorted(known))}")
    values: dict[str, Any] = {}
    for name, value in data.items():
        if value is None:
            continue
        if name == "input_size":
            values[name] = _size(value, where)
        elif name in ("mean", "std"):
            values[name] = _triple(name, value, where)
        elif name == "resize":
            values[name] = _choice(name, value, RESIZE_MODES, where)
        elif name == "interpolation":
            values[name] = _choice(name, value, ("nearest", "bilinear", "bicubic", "area", "lanczos"), where)
        elif name == "channel_order":
            values[name] = _choice(name, value, ("RGB", "BGR"), where)
        elif name == "layout":
            values[name] = _choice(name, value, ("NCHW", "NHWC"), where)
        elif name == "input_dtype":
            values[name] = _choice(name, value, INPUT_DTYPES, where)
        elif name == "scores":
            values[name] = _choice(name, value, SCORE_KINDS, where)
        elif name == "crop_pct":
            values[name] = _number(name, value, where, 0.05, 1.0)
        elif name in ("resize_short", "pad_value"):
            high = 16384 if name == "resize_short" else 255
            values[name] = int(_number(name, value, where, 2 if name == "resize_short" else 0, high))
        elif name == "labels":
            values[name] = labels_from(value, where, base)
        elif name == "output":
            if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
                raise _fail(where, f"output {value!r} must be an output name or index", 'write e.g. output = "logits"')
            values[name] = int(value) if isinstance(value, str) and value.isdigit() else value
    if "scale" in data or "offset" in data:
        if "mean" in values or "std" in values:
            raise _fail(where, "both scale/offset and mean/std given", "state the normalisation one way")
        # pixel * scale + offset == (pixel / 255 - mean) / std  with  std = 1 / (255 scale), mean = -offset * std
        scale = _triple("scale", data.get("scale", 1 / 255), where)
        offset = _triple("offset", data.get("offset", 0.0), where)
        if any(s == 0 for s in scale):
            raise _fail(where, "scale 0 erases the image", "write e.g. scale = 0.00392156862745098 (1/255)")
        std = tuple(1 / (255 * s) for s in scale)
        values["std"] = std
        values["mean"] = tuple(-o * d for o, d in zip(offset, std))
    return ModelCard(**values, origin=(where,))


def _toml(text: str, where: str) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.9/3.10
        import tomli as tomllib
    try:
        return tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as err:
        raise _fail(where, f"is not valid TOML ({str(err).splitlines()[0]})", "fix the line it names") from None


def read_card(path: Path) -> ModelCard:
    path = Path(path)
    where = f"model card {path}"
    if not path.is_file():
        raise InputError(f"{where} does not exist", "pass a TOML file, e.g. --card model.card.toml")
    try:
        if path.stat().st_size > MAX_CARD_BYTES:
            raise _fail(where, "is larger than 1 MB", "a card holds a few fields; put labels in a labels file")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise _fail(where, "is not UTF-8 text", "save it as a UTF-8 TOML file") from None
    except OSError as err:
        raise _fail(where, f"cannot be read ({err.strerror or err})", "check its permissions") from err
    return card_from_dict(_toml(text, where), where, base=path.parent)


def card_beside(model_path: Path) -> Path | None:
    """``model.card.toml`` (or ``card.toml``) next to ``model.onnx``/``model.pt``."""
    for candidate in (model_path.with_name(model_path.stem + CARD_SUFFIX), model_path.parent / "card.toml"):
        if candidate.is_file():
            return candidate
    return None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        if not path.is_file() or path.stat().st_size > MAX_CARD_BYTES * 16:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _hf_size(value: Any) -> tuple[int, int] | int | None:
    if isinstance(value, int):
        return value
    if isinstance(value, Mapping):
        if "height" in value and "width" in value:
            return int(value["height"]), int(value["width"])
        if "shortest_edge" in value:
            return int(value["shortest_edge"])
    return None


def card_from_hf_preprocessor(data: Mapping[str, Any], where: str) -> ModelCard:
    """A Hugging Face image processor config (preprocessor_config.json)."""
    fields_: dict[str, Any] = {}
    if data.get("do_normalize", True) and "image_mean" in data and "image_std" in data:
        fields_["mean"], fields_["std"] = data["image_mean"], data["image_std"]
    elif not data.get("do_normalize", True):
        factor = data.get("rescale_factor", 1 / 255) if data.get("do_rescale", True) else 1.0
        fields_["scale"], fields_["offset"] = factor, 0.0
    if isinstance(data.get("resample"), int):
        fields_["interpolation"] = _PIL_RESAMPLE.get(data["resample"], "bilinear")
    size, crop = _hf_size(data.get("size")), _hf_size(data.get("crop_size"))
    crop_pct = data.get("crop_pct")
    if data.get("do_center_crop") and crop is not None:
        crop_hw = crop if isinstance(crop, tuple) else (crop, crop)
        fields_.update(input_size=list(crop_hw), resize="crop")
        if isinstance(size, int):
            fields_["resize_short"] = size
    elif isinstance(size, int) and isinstance(crop_pct, (int, float)):  # ConvNeXt: shortest_edge / crop_pct, crop
        fields_.update(input_size=[size, size], resize="crop", crop_pct=float(crop_pct))
    elif isinstance(size, tuple):
        fields_.update(input_size=list(size), resize="direct")
    elif isinstance(size, int):
        fields_.update(input_size=[size, size], resize="direct")
    return card_from_dict(fields_, where)


def card_from_timm(cfg: Mapping[str, Any], where: str) -> ModelCard:
    """A timm ``pretrained_cfg``: input_size [3, H, W], interpolation, mean, std, crop_pct, crop_mode."""
    fields_: dict[str, Any] = {}
    size = cfg.get("input_size") or cfg.get("test_input_size")
    if isinstance(size, (list, tuple)) and len(size) == 3:
        fields_["input_size"] = [int(size[1]), int(size[2])]
    for key in ("mean", "std", "interpolation", "crop_pct"):
        if cfg.get(key) is not None:
            fields_[key] = cfg[key]
    mode = cfg.get("crop_mode", "center")
    fields_["resize"] = {"center": "crop", "squash": "direct", "border": "letterbox"}.get(mode, "crop")
    if cfg.get("label_names"):
        fields_["labels"] = list(cfg["label_names"])
    return card_from_dict(fields_, where)


def id2label(mapping: Any, where: str) -> ModelCard:
    if not isinstance(mapping, Mapping) or not mapping:
        return ModelCard()
    return card_from_dict({"labels": dict(mapping)}, where)


def card_from_neighbours(model_path: Path) -> ModelCard:
    """What a Hugging Face or timm checkpoint folder says about the model next to it."""
    folder = model_path.parent
    card = ModelCard()
    config = _read_json(folder / "config.json")
    if config is not None:
        if isinstance(config.get("pretrained_cfg"), Mapping):
            card = card.merged(card_from_timm(config["pretrained_cfg"], f"{folder / 'config.json'} (timm)"))
        if config.get("label_names") and card.labels is None:
            card = card.merged(card_from_dict({"labels": list(config["label_names"])}, str(folder / "config.json")))
        if "id2label" in config:
            card = card.merged(id2label(config["id2label"], str(folder / "config.json")))
    timm_cfg = _read_json(folder / "pretrained_cfg.json")
    if timm_cfg is not None:
        card = card.merged(card_from_timm(timm_cfg, str(folder / "pretrained_cfg.json")))
    hf = _read_json(folder / "preprocessor_config.json")
    if hf is not None:
        card = card.merged(card_from_hf_preprocessor(hf, str(folder / "preprocessor_config.json")))
    return card


_LABEL_PROPS = ("labels", "names", "classes", "id2label", "class_names")


def card_from_metadata(props: Mapping[str, str], where: str) -> ModelCard:
    """ONNX metadata_props: ``edgevision.card`` (TOML), card fields one a prop, or labels/names/classes."""
    card = ModelCard()
    text = props.get("edgevision.card")
    if text:
        card = card.merged(card_from_dict(_toml(text, where), where))
    single: dict[str, Any] = {}
    for name in {f.name for f in fields(ModelCard)} - {"origin", "labels"} | {"scale", "offset"}:
        raw = props.get(f"edgevision.{name}")
        if raw is not None:
            single[name] = _parse_value(raw)
    if single:
        card = card.merged(card_from_dict(single, where))
    if card.labels is None:
        for key in ("edgevision.labels",) + _LABEL_PROPS:
            raw = props.get(key)
            if raw:
                value = _parse_value(raw)
                card = card.merged(card_from_dict({"labels": value if not isinstance(value, (int, float))
                                                   else str(value)}, f"{where} ({key})"))
                break
    return card


def _parse_value(raw: str) -> Any:
    """A metadata value: JSON, a Python literal (ultralytics writes ``{0: 'person', ...}``), or text."""
    raw = raw.strip()
    if len(raw) > MAX_CARD_BYTES:
        return raw
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(raw)
        except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError):
            continue
    return raw
