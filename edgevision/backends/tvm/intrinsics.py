"""TVM's tensor intrinsics, imported in seconds instead of most of a minute.

MetaSchedule imports ``tvm.s_tir.tensor_intrin`` in every process that schedules or builds a
kernel. That parses about 500 TVMScript functions, and each parse calls ``inspect.stack()``, which
looks up the module of every frame on the stack; for the ``<frozen importlib...>`` frames of an
import the lookup finds nothing and rescans all of ``sys.modules``, every time. Measured on a 2-core
AMD EPYC: 41 s in a bare process, 53 s beside torch, 4.3 s with the lookups memoized.
"""
from __future__ import annotations

import contextlib
import importlib
import inspect
import sys
from typing import Any, Iterator

TENSOR_INTRINSICS = "tvm.s_tir.tensor_intrin"


@contextlib.contextmanager
def _memoized_module_lookup() -> Iterator[None]:
    # inspect.getsourcefile/findsource ask getmodule(frame, filename); the answer depends only on
    # the file name, and a file that was not found stays unfound for the few seconds of one import.
    original = inspect.getmodule
    found: dict[str, Any] = {}

    def getmodule(obj: Any, _filename: str | None = None) -> Any:
        if _filename is None:
            return original(obj)
        if _filename not in found:
            found[_filename] = original(obj, _filename)
        return found[_filename]

    inspect.getmodule = getmodule  # type: ignore[assignment]
    try:
        yield
    finally:
        inspect.getmodule = original  # type: ignore[assignment]


def import_tensor_intrinsics() -> None:
    """Import TVM's tensor intrinsics once per process (a builder worker's initializer, too)."""
    if TENSOR_INTRINSICS in sys.modules:
        return
    with _memoized_module_lookup():
        importlib.import_module(TENSOR_INTRINSICS)  # registers the intrinsics
