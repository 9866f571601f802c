"""The on-device cache of serialized TensorRT engines.

A serialized engine only runs on the TensorRT version and GPU that built it, so the key holds
the TensorRT version, the GPU's name and compute capability, the ONNX's sha256 and every build
setting. Each engine has a JSON sidecar repeating its key fields and the engine's own sha256;
an entry whose sidecar disagrees with the wanted key, or whose bytes fail the checksum, is a
miss (and is removed), never loaded. Writes are atomic: temp file + os.replace, sidecar last.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ...files import write_atomic

log = logging.getLogger(__name__)

CACHE_ENV = "EDGEVISION_TRT_CACHE"
KEY_SCHEMA = 1


def default_cache_dir() -> Path:
    """$EDGEVISION_TRT_CACHE, else $XDG_CACHE_HOME/edgevision/trt, else ~/.cache/edgevision/trt."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgevision" / "trt"


@dataclass(frozen=True)
class EngineKey:
    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "8.7" on Orin, "5.3" on the original Nano
    model_sha256: str
    settings: dict[str, Any] = field(default_factory=dict)  # BuildConfig.engine_settings()
    schema: int = KEY_SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def digest(self) -> str:
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def file_stem(self) -> str:
        # Model hash first: all engines of one model sort together for a human looking at the folder.
        return f"{self.model_sha256[:12]}-{self.digest()[:20]}"


@dataclass(frozen=True)
class Lookup:
    engine: bytes | None  # the cached engine when hit, else None
    path: Path
    reason: str  # why it is a miss ("" when hit)

    @property
    def hit(self) -> bool:
        return self.engine is not None


class EngineCache:
    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    def engine_path(self, key: EngineKey) -> Path:
        return self.root / f"{key.file_stem()}.engine"

    def sidecar_path(self, key: EngineKey) -> Path:
        return self.root / f"{key.file_stem()}.json"

    def lookup(self, key: EngineKey) -> Lookup:
        engine_path, sidecar_path = self.engine_path(key), self.sidecar_path(key)
        if not engine_path.is_file() or not sidecar_path.is_file():
            return Lookup(None, engine_path, "no cached engine for this TensorRT version, GPU, model and settings")
        try:
            sidecar = json.loads(sidecar_path.read_text(encoding="utf-8"))
            data = engine_path.read_bytes()
        except (OSError, ValueError) as err:
            return self._reject(key, f"unreadable cache entry ({err})")
        if not isinstance(sidecar, dict) or sidecar.get("key") != key.to_dict():
            wanted = key.to_dict()
            found = sidecar.get("key", {}) if isinstance(sidecar, dict) else {}
            differing = sorted(k for k in wanted if not isinstance(found, dict) or found.get(k) != wanted[k])
            return self._reject(key, f"cached engine was built for a different {', '.join(differing) or 'key'}")
        if sidecar.get("engine_sha256") != hashlib.sha256(data).hexdigest() or sidecar.get("size") != len(data):
            return self._reject(key, "cached engine fails its checksum (corrupt or truncated)")
        return Lookup(data, engine_path, "")

    def store(self, key: EngineKey, engine: bytes) -> Path:
        """Write engine then sidecar; a reader never sees a sidecar without its complete engine."""
        self.root.mkdir(parents=True, exist_ok=True)
        engine_path = self.engine_path(key)
        sidecar = {"key": key.to_dict(), "engine_sha256": hashlib.sha256(engine).hexdigest(), "size": len(engine),
                   "engine_file": engine_path.name}
        self.sidecar_path(key).unlink(missing_ok=True)
        write_atomic(engine_path, bytes(engine))
        write_atomic(self.sidecar_path(key), (json.dumps(sidecar, indent=2, sort_keys=True) + "\n").encode())
        log.info("cached TensorRT engine %s", engine_path)
        return engine_path

    def invalidate(self, key: EngineKey) -> None:
        """Drop an entry, e.g. one TensorRT refused to deserialize."""
        self.sidecar_path(key).unlink(missing_ok=True)
        self.engine_path(key).unlink(missing_ok=True)

    def _reject(self, key: EngineKey, reason: str) -> Lookup:
        log.warning("TensorRT engine cache: %s; rebuilding", reason)
        self.invalidate(key)
        return Lookup(None, self.engine_path(key), reason)
