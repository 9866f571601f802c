"""Run aarch64 Python under qemu-aarch64-static inside the cached Debian arm64 sysroot.

No binfmt_misc is assumed: every aarch64 program is started through qemu explicitly, and
programs that re-exec ``sys.executable`` (the TVM RPC server) get a wrapper script instead.

qemu 7.2 lets the guest read the x86 host's /proc/cpuinfo, and ONNX Runtime's aarch64 build
segfaults on import over it; so, where this host allows it, every guest runs in a private mount
namespace with a Raspberry Pi 4 cpuinfo (``pi4-cpuinfo``, shipped here) bind-mounted over it.
"""
from __future__ import annotations

import functools
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

SYSROOT_SCRIPT = Path(__file__).resolve().parent / "rpi4_sysroot.sh"
PI4_CPUINFO = Path(__file__).resolve().parent / "pi4-cpuinfo"
QEMU = "qemu-aarch64-static"
# Bind the Cortex-A72 cpuinfo in a mount namespace of the guest's own; "$1" is the file, the rest the command.
_CPUINFO_SHELL = 'mount --bind "$1" /proc/cpuinfo && shift && exec "$@"'
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


@functools.lru_cache(maxsize=None)
def cpuinfo_namespace_works(cpuinfo: Path = PI4_CPUINFO) -> bool:
    """Whether this host lets us bind-mount a cpuinfo in a private mount namespace (root, or a user
    namespace with mount rights); asked once per process, since the answer does not change."""
    if shutil.which("unshare") is None or not cpuinfo.is_file():
        return False
    try:
        done = subprocess.run(["unshare", "-m", "sh", "-c", _CPUINFO_SHELL, "sh", str(cpuinfo), "true"],
                              capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@dataclass(frozen=True)
class Emulator:
    """How aarch64 programs are started here: the qemu binary, the CPU model and the sysroot.

    ``python`` is the interpreter to start (default: the sysroot's own python3.11; a device venv's
    ``bin/python3`` for the installed package). ``cpuinfo`` is shown to the guest as /proc/cpuinfo
    when the host allows a private mount namespace (None: the guest sees the host's).
    """

    sysroot: Sysroot
    cpu: str = "cortex-a72"
    qemu: str = QEMU
    python: Path | None = None
    cpuinfo: Path | None = PI4_CPUINFO

    def with_python(self, python: Path) -> "Emulator":
        return Emulator(self.sysroot, self.cpu, self.qemu, python, self.cpuinfo)

    def _cpuinfo_prefix(self) -> list[str]:
        if self.cpuinfo is None:
            return []
        if not cpuinfo_namespace_works(self.cpuinfo):
            log.warning("cannot show the emulated Pi a Cortex-A72 /proc/cpuinfo (unshare -m is not permitted "
                        "here): it sees this host's, and ONNX Runtime's aarch64 build may crash on import")
            return []
        return ["unshare", "-m", "sh", "-c", _CPUINFO_SHELL, "sh", str(self.cpuinfo)]

    def command(self, args: Sequence[str], argv0: str | None = None) -> list[str]:
        """argv running the aarch64 python with ``args`` under qemu (``argv0``: its sys.executable).

        The guest's pid is the one Popen reports: unshare and sh exec into qemu, nothing forks."""
        prefix = [self.qemu, "-0", argv0] if argv0 else [self.qemu]
        python = self.python or self.sysroot.python
        return [*self._cpuinfo_prefix(), *prefix, "-cpu", self.cpu, "-L", str(self.sysroot.root), str(python), *args]

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """A clean environment: the host venv must not leak x86 packages into the aarch64 Python.

        A device venv (``python`` set) finds its packages itself; the bare sysroot python gets the
        sysroot's TVM RPC package set on PYTHONPATH. Nothing of a checkout is ever on the path."""
        keep = {k: v for k, v in os.environ.items()
                if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TVM_NUM_THREADS", "OMP_NUM_THREADS")}
        keep.update({"PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1"})
        if self.python is None:
            # The RPC server's package set: the TVM runtime only (the sysroot ships no compiler library).
            keep.update({"PYTHONPATH": str(self.sysroot.site), "TVM_USE_RUNTIME_LIB": "1"})
        keep.update(extra or {})
        return keep

    def run_python(self, args: Sequence[str], timeout: float = 600, extra_env: dict[str, str] | None = None,
                   cwd: Path | None = None) -> subprocess.CompletedProcess:
        cmd = self.command(args)
        log.info("qemu: %s", " ".join(cmd))
        # cwd: never the checkout, so nothing of it can shadow the installed package.
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=self.env(extra_env),
                              cwd=str(cwd or self.sysroot.root))

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
