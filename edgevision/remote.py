"""Time an artifact on a real board: the endpoint (:class:`RemoteDevice`), the figures (:class:`RemoteTiming`)
and :func:`bench_remote`, which hands the artifact to its backend's ``time_remote`` (TVM: over TVM RPC,
``edgevision.backends.tvm.remote``: upload the library, run it there, time it there).

The board runs the stock TVM RPC server, registered with a tracker under a key::

    python -m tvm.exec.rpc_tracker --host 0.0.0.0 --port 9190            # on any machine
    python -m tvm.exec.rpc_server --tracker TRACKER:9190 --key rpi4      # on each Pi

``bench_remote(artifact, RemoteDevice.parse("TRACKER:9190", key="rpi4"))`` then measures with
``time_evaluator`` on the board itself, so network latency is not in the figures. Without a key
``HOST:PORT`` is a server to connect to directly.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import InputError


@dataclass(frozen=True)
class RemoteDevice:
    host: str
    port: int
    key: str | None = None  # set: host:port is a tracker and key names the board kind; None: a server
    session_timeout_s: int = 600  # the board ends a session that runs longer
    connect_timeout_s: int = 180  # waiting for a free board and the session handshake

    @classmethod
    def parse(cls, address: str, key: str | None = None, session_timeout_s: int = 600) -> "RemoteDevice":
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise InputError(f"RPC address {address!r} is not HOST:PORT", "write e.g. --rpc 192.168.1.20:9190")
        return cls(host, int(port), key or None, session_timeout_s)

    def __str__(self) -> str:
        return f"{self.key}@{self.host}:{self.port} (tracker)" if self.key else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class RemoteTiming:
    """``time_evaluator`` figures from the board, in milliseconds per inference."""

    device: str
    artifact: str
    model: str
    target: str
    number: int  # runs averaged into one repeat
    repeat: int
    mean_ms: float
    median_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    upload_s: float  # connect + upload + load, wall clock from here
    output_max_abs_diff: float | None  # vs the artifact's x86 probe outputs, when it carries a probe
    remote_threads: int | None
    costs_ms: tuple[float, ...] = ()  # one entry per repeat (each the mean of ``number`` runs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bench_remote(artifact: Path, device: RemoteDevice, number: int = 10, repeat: int = 5,
                 min_repeat_ms: int = 0) -> RemoteTiming:
    """Time one batch of ``artifact`` on ``device`` with its backend's remote timing.

    Raises InputError for an artifact whose backend cannot time on a board, and EdgevisionError when
    the board cannot be reached.
    """
    from .artifact import read_manifest
    from .backends import backend_names, get_backend

    if number < 1 or repeat < 1:
        raise InputError(f"number={number}, repeat={repeat}: both must be at least 1", "pass positive counts")
    artifact = Path(artifact)
    backend = get_backend(read_manifest(artifact).backend)
    if backend.remote_timing is None:
        able = []
        for name in backend_names():
            try:
                other = get_backend(name)
            except Exception:  # noqa: BLE001 - a broken plugin times nothing
                continue
            if other.remote_timing is not None:
                able.append(f"{other.name} ({other.remote_timing})")
        raise InputError(f"{artifact.name} is a {backend.name} artifact; remote boards time "
                         f"{', '.join(able) or 'no'} artifacts only",
                         "compile it for a target whose backend times remotely, or bench it on the device")
    return backend.time_remote(artifact, device, number=number, repeat=repeat, min_repeat_ms=min_repeat_ms)
