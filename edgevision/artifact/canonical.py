"""One byte form per manifest, and JSON parsing with its size and depth bounded before it starts.

Canonical form (``canonical_json``): UTF-8, keys sorted, no whitespace (separators ``,`` and ``:``),
non-ASCII characters written as themselves (``ensure_ascii=False``), no NaN or Infinity. Strings and
integers come out as in RFC 8785 (JCS); floats are Python's shortest round-trip repr (JCS writes
e.g. ``1e-05`` as ``0.00001``) and keys sort by code point (JCS: by UTF-16 unit; the two differ only
for characters beyond U+FFFF). A checker in another language does not need to re-create it: what is
signed is the sha256 of the ``manifest.json`` bytes (see docs/signing.md).
"""
from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import numpy as np

from ..errors import ArtifactError

# A string literal, escapes included: removed before counting brackets so "[" inside text is not nesting.
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def canonical_json(data: Any) -> bytes:
    try:
        return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode("utf-8")
    except ValueError as err:  # NaN/Infinity (a gate that compared garbage) or a circular structure
        raise ArtifactError(f"the manifest cannot be written: {err}",
                            "report it: a number in the manifest is not finite") from err


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def json_depth(raw: bytes) -> int:
    """Deepest nesting of ``[``/``{`` outside string literals, counted without parsing (numpy, C speed)."""
    codes = np.frombuffer(_STRING.sub(b'""', raw), dtype=np.uint8)
    steps = np.zeros(len(codes), dtype=np.int32)
    steps[(codes == ord("[")) | (codes == ord("{"))] = 1
    steps[(codes == ord("]")) | (codes == ord("}"))] = -1
    return int(np.cumsum(steps).max(initial=0))


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data = dict(pairs)
    if len(data) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise ValueError(f"key {dup!r} appears twice")
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number a manifest may hold")


def bounded_loads(raw: bytes, what: str, max_bytes: int, max_depth: int) -> Any:
    """Parse JSON that came from an untrusted file: size and depth first, then strict parsing
    (duplicate keys and NaN refused: two parsers must never read two different documents)."""
    if len(raw) > max_bytes:
        raise ArtifactError(f"{what} is {len(raw):,} bytes, more than the {max_bytes:,} a manifest may have",
                            "refusing it: it is not one edgevision wrote")
    depth = json_depth(raw)
    if depth > max_depth:
        raise ArtifactError(f"{what} nests {depth} levels deep, more than the {max_depth} allowed",
                            "refusing it: it is not one edgevision wrote")
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (ValueError, RecursionError) as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ArtifactError(f"{what} is not valid JSON ({str(err)[:120]})",
                            "the artifact is damaged: copy or compile it again") from err
