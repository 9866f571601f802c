"""Time a TVM artifact on a real board over TVM RPC: upload the library, run it there, time it there.

The board runs the stock TVM RPC server, registered with a tracker under a key (see
``edgevision.remote``); ``time_evaluator`` runs on the board itself, so network latency is not in the figures.
"""
from __future__ import annotations

import logging
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import BackendUnavailable, EdgevisionError, InputError
from ...remote import RemoteDevice, RemoteTiming

log = logging.getLogger(__name__)


def _session(device: RemoteDevice) -> Any:
    from tvm import rpc

    def connect() -> Any:
        if device.key:
            tracker = rpc.connect_tracker(device.host, device.port)
            return tracker.request(device.key, priority=1, session_timeout=device.session_timeout_s)
        return rpc.connect(device.host, device.port, session_timeout=device.session_timeout_s)

    # A tracker queues the request until a board with the key is free, and neither it nor the
    # server handshake has a timeout: wait in a daemon thread so a busy or stuck board is an error.
    outcome: dict[str, Any] = {}
    waiter = threading.Thread(target=lambda: outcome.update(_attempt(connect)), daemon=True)
    waiter.start()
    waiter.join(device.connect_timeout_s)
    if waiter.is_alive():
        what = f"a free '{device.key}' board from the tracker" if device.key else "the server's handshake"
        raise EdgevisionError(f"no TVM RPC session within {device.connect_timeout_s} s at "
                              f"{device.host}:{device.port}: waited for {what}",
                              "check the boards with python -m tvm.exec.query_rpc_tracker, or retry when one is free")
    if "error" in outcome:
        err = outcome["error"]
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise EdgevisionError(f"cannot reach the TVM RPC {'tracker' if device.key else 'server'} "
                              f"{device.host}:{device.port}: {first}",
                              "start it (python -m tvm.exec.rpc_tracker / rpc_server) and check "
                              "the address, the port and the --key the board registered with") from err
    return outcome["session"]


def _attempt(connect: Any) -> dict[str, Any]:
    try:
        return {"session": connect()}
    except Exception as err:  # TVM raises TVMError/RuntimeError/socket errors for every kind of failure
        return {"error": err}


def bench_remote(artifact: Path, device: RemoteDevice, number: int = 10, repeat: int = 5,
                 min_repeat_ms: int = 0) -> RemoteTiming:
    """Upload the artifact's TVM library to ``device`` and time one batch there (``TvmBackend.time_remote``).

    The input is the artifact's probe (real photos) when it has one, else zeros of the input shape.
    Raises InputError for non-TVM artifacts and EdgevisionError when the board cannot be reached.
    """
    from ...artifact import unpack

    if number < 1 or repeat < 1:
        raise InputError(f"number={number}, repeat={repeat}: both must be at least 1", "pass positive counts")
    try:
        import tvm
        from tvm.runtime.vm import VirtualMachine
    except ImportError as err:
        raise BackendUnavailable("timing over TVM RPC needs the TVM Python package here",
                                 "pip install 'edgevision[tvm]'") from err
    artifact = Path(artifact)
    with tempfile.TemporaryDirectory(prefix="edgevision-rpc-") as tmp:
        manifest = unpack(artifact, Path(tmp))
        if manifest.backend != "tvm":
            raise InputError(f"{artifact.name} is a {manifest.backend} artifact; TVM RPC runs TVM libraries only",
                             "compile it for a TVM target (e.g. --target rpi4), or bench it on the device")
        payload = Path(tmp) / "payload"
        library = payload / manifest.payload["library"]
        probe = manifest.payload.get("probe", {})
        if probe.get("file"):
            # The probe holds the x86 logits of bundled photos; the input is rebuilt from the first photo.
            from ...preprocess import preprocess
            from ...samples import sample_image

            batch = preprocess(sample_image(probe["images"][0]), manifest.preprocess)[None]
            with np.load(payload / probe["file"]) as data:
                expected = data["outputs"][:1]
        else:
            batch, expected = np.zeros([int(d) for d in manifest.input.shape], np.float32), None

        started = time.perf_counter()
        session = _session(device)
        remote_name = f"edgevision-{manifest.model_name}-{manifest.files[f'payload/{library.name}'][:12]}.so"
        try:
            session.upload(str(library), remote_name)
            remote_lib = session.load_module(remote_name)
        except Exception as err:
            raise EdgevisionError(f"the board could not load {library.name}: {str(err).strip().splitlines()[-1]}",
                                  f"check that the board is {manifest.target.arch} and runs apache-tvm "
                                  f"{manifest.backend_version}") from err
        dev = session.cpu()
        vm = VirtualMachine(remote_lib, dev)
        upload_s = time.perf_counter() - started

        vm.set_input("main", tvm.runtime.tensor(batch, dev))
        vm.invoke_stateful("main")
        output = vm.get_outputs("main").numpy()
        diff = float(np.abs(output - expected).max()) if expected is not None else None
        result = vm.time_evaluator("invoke_stateful", dev, number=number, repeat=repeat,
                                   min_repeat_ms=min_repeat_ms)("main")
        try:
            threads = int(session.get_function("runtime.NumThreads")())
        except Exception:  # older servers do not expose it; the figure is optional
            threads = None
    costs_ms = [float(c) * 1e3 for c in result.results]
    timing = RemoteTiming(device=str(device), artifact=str(artifact), model=manifest.model_name,
                          target=manifest.target.name, number=number, repeat=repeat,
                          mean_ms=statistics.fmean(costs_ms), median_ms=statistics.median(costs_ms),
                          std_ms=statistics.pstdev(costs_ms), min_ms=min(costs_ms), max_ms=max(costs_ms),
                          upload_s=round(upload_s, 3), output_max_abs_diff=diff, remote_threads=threads,
                          costs_ms=tuple(costs_ms))
    log.info("remote %s on %s: median %.2f ms (host %s)", artifact.name, device, timing.median_ms,
             platform.machine())
    return timing
