"""Devices as data: one TOML file per target, found in ``edgevision/data/targets/`` and in user folders.

A target names the backend that compiles for it and everything that backend needs to know
about the device; code never branches on a target's name.
"""
from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import TargetError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (JetPack 6): the same parser, from its backport
    import tomli as tomllib

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
BUILTIN_TARGETS_DIR = Path(__file__).resolve().parent / "data" / "targets"
USER_TARGETS_DIR = Path.home() / ".config" / "edgevision" / "targets"


@dataclass(frozen=True)
class Target:
    name: str
    backend: str
    description: str = ""
    device: str = "cpu"
    arch: str = "x86_64"
    precisions: tuple[str, ...] = ("fp32",)
    default_precision: str = "fp32"
    threads: int | None = None
    static_shapes: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    requires: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        unknown = [p for p in self.precisions if p not in PRECISIONS]
        if unknown:
            raise TargetError(f"target '{self.name}' lists unknown precision(s) {unknown}",
                              f"use some of {', '.join(PRECISIONS)}")
        if self.default_precision not in self.precisions:
            raise TargetError(f"target '{self.name}': default_precision '{self.default_precision}' "
                              f"is not in precisions {list(self.precisions)}", "fix the target file")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["precisions"] = list(self.precisions)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "") -> "Target":
        allowed = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise TargetError(f"target file {source or data.get('name')} has unknown key(s) {unknown}",
                              f"allowed keys: {', '.join(sorted(allowed - {'source'}))}")
        missing = [k for k in ("name", "backend") if k not in data]
        if missing:
            raise TargetError(f"target file {source} lacks {missing}", "every target needs name and backend")
        values = dict(data)
        values["precisions"] = tuple(values.get("precisions", ("fp32",)))
        values.setdefault("source", source)
        return cls(**values)


def search_path() -> list[Path]:
    """Later folders override earlier ones, so a user file can replace a built-in target."""
    dirs = [BUILTIN_TARGETS_DIR, USER_TARGETS_DIR]
    extra = os.environ.get("EDGEVISION_TARGETS_PATH", "")
    dirs += [Path(p) for p in extra.split(os.pathsep) if p]
    return dirs


def load_target_file(path: Path) -> Target:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise TargetError(f"cannot read target file {path}: {err}", "fix the TOML syntax") from err
    return Target.from_dict(data, source=str(path))


def available_targets(dirs: list[Path] | None = None) -> dict[str, Target]:
    found: dict[str, Target] = {}
    for folder in dirs if dirs is not None else search_path():
        if folder.is_dir():
            for path in sorted(folder.glob("*.toml")):
                target = load_target_file(path)
                found[target.name] = target
    return found


def get_target(name_or_path: str, dirs: list[Path] | None = None) -> Target:
    """Look a target up by name, or read it straight from a .toml path."""
    if name_or_path.endswith(".toml"):
        path = Path(name_or_path)
        if not path.is_file():
            raise TargetError(f"target file {path} does not exist", "check the path")
        return load_target_file(path)
    targets = available_targets(dirs)
    if name_or_path not in targets:
        raise TargetError(f"unknown target '{name_or_path}'",
                          f"choose one of {', '.join(sorted(targets))} (see `edgevision targets`)"
                          " or add a TOML file to ~/.config/edgevision/targets/")
    return targets[name_or_path]
