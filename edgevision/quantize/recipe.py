"""Quantization recipes: method, percentile, per-channel and symmetry settings as data.

Built-in recipes live in ``edgevision/data/calibration/recipes/*.toml``; ``--calib-method`` takes a recipe name
or a path to a .toml file. The three method names also work without the files (installed
packages), from the defaults below.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ..errors import InputError

RECIPES_DIR = Path(__file__).resolve().parent.parent / "data" / "calibration" / "recipes"
METHODS = ("minmax", "entropy", "percentile")
ACTIVATION_TYPES = ("int8", "uint8")


@dataclass(frozen=True)
class QuantRecipe:
    name: str = "minmax"
    method: str = "minmax"
    percentile: float = 99.999  # percentile method only: the share of each activation range kept
    per_channel: bool = True  # weights: one scale per output channel
    # Asymmetric uint8: ReLU outputs use all 256 levels. TensorRT needs symmetric (recipe "symmetric").
    symmetric_activations: bool = False
    activation_type: str = "uint8"
    skip_sensitive: bool = True  # keep the first conv and the classifier in float (measured: docs/int8.md)
    exclude_nodes: tuple[str, ...] = ()
    # Average each calibration batch's min/max instead of taking the extremes (ORT CalibMovingAverage).
    moving_average: bool = False
    # Sensitivity pass (quantize/sensitivity.py): return to float the layers whose INT8 error costs the
    # most, each at least ``sensitivity_min_gain`` of the all-INT8 KL on calibration, at most ``max_float_layers``.
    sensitivity: bool = False
    max_float_layers: int = 4
    sensitivity_min_gain: float = 0.05

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InputError(f"recipe {self.name}: unknown calibration method {self.method!r}",
                             f"use one of {', '.join(METHODS)}")
        if self.activation_type not in ACTIVATION_TYPES:
            raise InputError(f"recipe {self.name}: unknown activation type {self.activation_type!r}",
                             f"use one of {', '.join(ACTIVATION_TYPES)}")
        if not 50.0 < self.percentile <= 100.0:
            raise InputError(f"recipe {self.name}: percentile {self.percentile} is out of range",
                             "use a value such as 99.99 or 99.999")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}


def _from_toml(path: Path) -> QuantRecipe:
    if sys.version_info < (3, 11):  # pragma: no cover - compiling needs 3.11 anyway
        raise InputError("reading recipe files needs Python 3.11+", "use --calib-method minmax")
    import tomllib

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise InputError(f"cannot read quantization recipe {path}: {err}", "fix the TOML syntax") from err
    allowed = {f.name for f in fields(QuantRecipe)}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise InputError(f"recipe {path} has unknown key(s) {unknown}", f"allowed keys: {', '.join(sorted(allowed))}")
    data.setdefault("name", path.stem)
    if "exclude_nodes" in data:
        data["exclude_nodes"] = tuple(data["exclude_nodes"])
    try:
        return QuantRecipe(**data)
    except TypeError as err:
        raise InputError(f"recipe {path} is malformed ({err})", "compare it with edgevision/data/calibration/recipes/minmax.toml") from err


def load_recipe(name_or_path: str | None) -> QuantRecipe:
    """A recipe by name (edgevision/data/calibration/recipes/NAME.toml, or a built-in method) or from a .toml path."""
    name = name_or_path or "minmax"
    if name.endswith(".toml"):
        path = Path(name)
        if not path.is_file():
            raise InputError(f"quantization recipe {path} does not exist", "check the path")
        return _from_toml(path)
    path = RECIPES_DIR / f"{name}.toml"
    if path.is_file():
        return _from_toml(path)
    if name in METHODS:
        return QuantRecipe(name=name, method=name)
    known = sorted({*METHODS, *(p.stem for p in RECIPES_DIR.glob("*.toml"))}) if RECIPES_DIR.is_dir() else METHODS
    raise InputError(f"unknown calibration method or recipe {name!r}", f"use one of {', '.join(known)} or a .toml file")
