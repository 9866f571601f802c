"""Backend plugins, found by name: ``edgevision/backends/<name>.py`` (or a package ``<name>/``, as
``tvm/``) exposing ``BACKEND``, or a third-party package registering the ``edgevision.backends``
entry point (docs/write-a-backend.md)."""
from __future__ import annotations

import importlib
import pkgutil
from importlib.metadata import entry_points

from ..errors import TargetError
from .base import Backend, CompileSettings, LoadOptions, Runner

__all__ = ["Backend", "CompileSettings", "LoadOptions", "Runner",
           "get_backend", "backend_names"]

ENTRY_POINT_GROUP = "edgevision.backends"
_NOT_BACKENDS = {"base"}


def backend_names() -> list[str]:
    names = {m.name for m in pkgutil.iter_modules(__path__) if m.name not in _NOT_BACKENDS}
    names |= {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(names)


def get_backend(name: str) -> Backend:
    """Importing a backend module must stay cheap: runtimes are imported inside its methods."""
    if name in _NOT_BACKENDS or not name.isidentifier():
        raise TargetError(f"unknown backend '{name}'", f"use one of {', '.join(backend_names())}")
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return ep.load()()
    try:
        module = importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as err:
        if err.name != f"{__name__}.{name}":
            raise
        raise TargetError(f"unknown backend '{name}'", f"use one of {', '.join(backend_names())}") from err
    return module.BACKEND
