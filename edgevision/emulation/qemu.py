"""Run aarch64 Python under qemu-aarch64-static inside the cached Debian arm64 sysroot.

No binfmt_misc is assumed: every aarch64 program is started through qemu explicitly, and
programs that re-exec ``sys.executable`` (the TVM RPC server) get a wrapper script instead.
"""
from __future__ import annotations

import logging
import os
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import BackendUnavailable

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
SYSROOT_SCRIPT = Path(__file__).resolve().parent / "rpi4_sysroot.sh"
QEMU = "qemu-aarch64-static"
SITE_PACKAGES = Path("opt/edgevision/site-packages")
PYTHON = Path("usr/bin/python3.11")


@dataclass(frozen=True)
class Sysroot:
    """An unpacked arm64 Debian tree with the device-side wheels in ``site``."""

    root: Path

    @property
    def site(self) -> Path:
        return self.root / SITE_PACKAGES

    @property
    def python(self) -> Path:
        return self.root / PYTHON

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file() and not p.is_symlink())


@dataclass(frozen=True)
class Emulator:
    """How aarch64 programs are started here: the qemu binary, the CPU model and the sysroot."""

    sysroot: Sysroot
    cpu: str = "cortex-a72"
    qemu: str = QEMU

    def command(self, args: Sequence[str], argv0: str | None = None) -> list[str]:
        """argv running the sysroot's python3.11 with ``args`` under qemu (``argv0``: its sys.executable)."""
        prefix = [self.qemu, "-0", argv0] if argv0 else [self.qemu]
        return [*prefix, "-cpu", self.cpu, "-L", str(self.sysroot.root), str(self.sysroot.python), *args]

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """A clean environment: the host venv must not leak x86 packages into the aarch64 Python."""
        keep = {k: v for k, v in os.environ.items()
                if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TVM_NUM_THREADS", "OMP_NUM_THREADS")}
        keep.update({"PYTHONPATH": os.pathsep.join([str(self.sysroot.site), str(REPO_ROOT)]),
                     "PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1",
                     # The device runs the TVM runtime only; the sysroot ships no compiler library.
                     "TVM_USE_RUNTIME_LIB": "1"})
        keep.update(extra or {})
        return keep

    def run_python(self, args: Sequence[str], timeout: float = 600,
                   extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        cmd = self.command(args)
        log.info("qemu: %s", " ".join(cmd))
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=self.env(extra_env),
                              cwd=str(REPO_ROOT))

    def write_interpreter(self, path: Path) -> Path:
        """A shell script that behaves like the aarch64 ``python3`` (for code that re-execs itself)."""
        quoted = " ".join(f"'{part}'" for part in self.command([], argv0=str(path)))
        # Environment too: a child started by the aarch64 Python must find the same packages.
        exports = "".join(f"export {k}='{v}'\n" for k, v in self.env().items() if k != "PATH")
        path.write_text("#!/bin/sh\n"
                        "# aarch64 python3.11 under qemu: binfmt_misc is not available to run it directly\n"
                        f"{exports}exec {quoted} \"$@\"\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        return path


def qemu_available(qemu: str = QEMU) -> bool:
    return shutil.which(qemu) is not None


def find_sysroot() -> Sysroot | None:
    """The cached sysroot when it is complete; never builds."""
    if not SYSROOT_SCRIPT.is_file():
        return None
    done = subprocess.run(["bash", str(SYSROOT_SCRIPT), "--path"], capture_output=True, text=True)
    if done.returncode != 0:
        return None
    return Sysroot(Path(done.stdout.strip().splitlines()[-1]))


def ensure_sysroot(build: bool = True, timeout: float = 1800) -> Sysroot:
    """The cached sysroot, building it first (~1.5 min, ~420 MB, needs network) when ``build``."""
    found = find_sysroot()
    if found is not None:
        return found
    if not build:
        raise BackendUnavailable("the rpi4 emulation sysroot is not built yet",
                                 f"run bash {SYSROOT_SCRIPT} once (needs network and root)")
    for tool in (QEMU, "debootstrap", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise BackendUnavailable(f"{tool} is not installed, so rpi4 artifacts cannot be emulated here",
                                     "apt-get install qemu-user-static debootstrap")
    log.info("building the rpi4 sysroot with %s", SYSROOT_SCRIPT)
    done = subprocess.run(["bash", str(SYSROOT_SCRIPT)], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise BackendUnavailable(f"building the rpi4 sysroot failed: {tail}",
                                 f"run bash {SYSROOT_SCRIPT} by hand to see the whole log")
    return Sysroot(Path(done.stdout.strip().splitlines()[-1]))


def emulator_for(cpu: str, build: bool = True) -> Emulator:
    if not qemu_available():
        raise BackendUnavailable(f"{QEMU} is not installed", "apt-get install qemu-user-static")
    return Emulator(ensure_sysroot(build=build), cpu=cpu)
