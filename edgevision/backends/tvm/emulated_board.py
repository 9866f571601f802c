"""A stand-in Raspberry Pi for TVM RPC: a tracker on this host and the aarch64 RPC server under qemu.

Used by the tests and to rehearse ``bench --rpc`` / RPC tuning without a board::

    with emulated_board(key="rpi4") as board:
        bench_remote(artifact, RemoteDevice("127.0.0.1", board.tracker_port, "rpi4"))
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ...emulation.qemu import Emulator, emulator_for
from ...errors import EdgevisionError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmulatedBoard:
    tracker_port: int
    server_port: int
    key: str


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _registered(tracker_port: int, key: str) -> bool:
    from tvm import rpc

    try:
        summary = rpc.connect_tracker("127.0.0.1", tracker_port).summary()
    except Exception:  # tracker not up yet
        return False
    return any(key in str(entry.get("key", "")) for entry in summary.get("server_info", []))


def _wait(check, timeout: float, what: str, procs: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        for proc in procs:
            if proc.poll() is not None:
                raise EdgevisionError(f"{what}: a helper process exited with {proc.returncode}",
                                      "rerun with --debug; see the process log in the temp folder")
        time.sleep(0.5)
    raise EdgevisionError(f"{what}: not ready after {timeout:.0f} s", "the machine may be overloaded; retry")


def _stop(proc: subprocess.Popen) -> None:
    """Stop the helper and the workers it forked: each helper leads its own process group."""
    import signal

    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=10)
            # The group may outlive its leader (the RPC server's worker): end it on the second pass.
        except subprocess.TimeoutExpired:
            continue


@contextlib.contextmanager
def emulated_board(key: str = "rpi4", cpu: str = "cortex-a72", emulator: Emulator | None = None,
                   startup_timeout: float = 180) -> Iterator[EmulatedBoard]:
    """Start tracker + qemu RPC server on loopback; both are stopped (by their ids) on exit."""
    emulator = emulator or emulator_for(cpu, build=False)
    tracker_port, server_port = free_port(), free_port()
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="edgevision-board-") as tmp:
        tmpdir = Path(tmp)
        # The server re-executes sys.executable for its worker; without binfmt_misc that must be a
        # script that starts qemu, so the aarch64 Python is told (qemu -0) that the script is its argv[0].
        interpreter = emulator.write_interpreter(tmpdir / "python3-aarch64")
        extra = emulator.sysroot.site / "tvm" / "lib" / "libtvm_runtime_extra.so"
        try:
            with open(tmpdir / "tracker.log", "w") as tlog:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1",
                     "--port", str(tracker_port), "--port-end", str(tracker_port + 1)],
                    stdout=tlog, stderr=subprocess.STDOUT, env={**os.environ}, start_new_session=True))
            _wait(lambda: _tracker_up(tracker_port), 60, "TVM RPC tracker", procs)
            server_cmd = [str(interpreter), "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1",
                          "--port", str(server_port), "--port-end", str(server_port + 1),
                          "--tracker", f"127.0.0.1:{tracker_port}", "--key", key]
            if extra.is_file():
                server_cmd += ["--load-library", str(extra)]
            with open(tmpdir / "server.log", "w") as slog:
                procs.append(subprocess.Popen(server_cmd, stdout=slog, stderr=subprocess.STDOUT,
                                              env=emulator.env(), cwd=str(tmpdir), start_new_session=True))
            _wait(lambda: _registered(tracker_port, key), startup_timeout, "qemu RPC server", procs)
            yield EmulatedBoard(tracker_port=tracker_port, server_port=server_port, key=key)
        finally:
            for proc in reversed(procs):
                _stop(proc)
            for name in ("tracker.log", "server.log"):
                path = tmpdir / name
                if path.is_file():
                    log.debug("%s:\n%s", name, path.read_text()[-4000:])


def _tracker_up(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0
