"""A folder of wheels that installs edgevision and one runtime on a device with no network.

The device's Python, CPU architecture and glibc come from the target file (``[requires]``:
``wheel_python``, ``glibc``, ``extra``), so ``pip download`` fetches the device's wheels (aarch64 for a
Raspberry Pi) on the workstation. On the device: ``pip install --no-index --find-links DIR
'edgevision[EXTRA]'``.
"""
from __future__ import annotations

import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from .errors import EdgevisionError, InputError, TargetError
from .targets import Target

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
OLDEST_MANYLINUX = 17  # manylinux_2_17 (= manylinux2014): the oldest tag the runtimes' wheels use
PIP_TIMEOUT_S = 1800.0
Runner = Callable[[Sequence[str]], subprocess.CompletedProcess]


@dataclass(frozen=True)
class DevicePlatform:
    """What the device's pip would accept: CPU architecture, CPython version and glibc version."""

    arch: str  # "aarch64", "x86_64"
    python: str  # "3.11"
    glibc: str  # "2.36"

    def __post_init__(self) -> None:
        if not re.fullmatch(r"3\.\d{1,2}", self.python):
            raise InputError(f"python version {self.python!r} is not of the form 3.N", "pass e.g. --python-version 3.11")
        if not re.fullmatch(r"2\.\d{1,2}", self.glibc):
            raise InputError(f"glibc version {self.glibc!r} is not of the form 2.N", "pass e.g. --glibc 2.36")
        if not re.fullmatch(r"[a-z0-9_]+", self.arch):
            raise InputError(f"architecture {self.arch!r} is not a machine name", "use e.g. aarch64 or x86_64")

    @property
    def abi(self) -> str:
        return "cp" + self.python.replace(".", "")

    def platform_tags(self) -> list[str]:
        """Every manylinux tag the device accepts, newest first (pip does not expand ``--platform``)."""
        newest = int(self.glibc.split(".")[1])
        tags = [f"manylinux_2_{minor}_{self.arch}" for minor in range(newest, OLDEST_MANYLINUX - 1, -1)]
        return tags + [f"manylinux2014_{self.arch}"]

    def pip_args(self) -> list[str]:
        args = ["--only-binary=:all:", "--implementation", "cp", "--python-version", self.python, "--abi", self.abi]
        for tag in self.platform_tags():
            args += ["--platform", tag]
        return args


@dataclass(frozen=True)
class Wheelhouse:
    folder: Path
    edgevision_wheel: Path
    extra: str
    platform: DevicePlatform
    wheels: list[Path] = field(default_factory=list)

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.wheels)

    def install_command(self, venv: str = "~/ev") -> str:
        return (f"python3 -m venv {venv} && {venv}/bin/pip install --no-index --find-links {self.folder.name}/ "
                f"'edgevision[{self.extra}]'")


def host_platform() -> DevicePlatform:
    libc, version = platform.libc_ver()
    glibc = ".".join(version.split(".")[:2]) if libc == "glibc" and version else "2.28"
    return DevicePlatform(arch=platform.machine(), python=f"{sys.version_info[0]}.{sys.version_info[1]}",
                          glibc=glibc)


def device_platform(target: Target, python: str | None = None, glibc: str | None = None) -> DevicePlatform:
    """The target's platform; a target for this machine's architecture defaults to this Python and glibc."""
    requires = target.requires
    host = host_platform()
    same_arch = target.arch == host.arch
    python = python or requires.get("wheel_python") or (host.python if same_arch else None)
    glibc = glibc or requires.get("glibc") or (host.glibc if same_arch else None)
    if python is None or glibc is None:
        raise TargetError(f"target '{target.name}' does not say which Python and glibc its device has",
                          "pass --python-version and --glibc, or add wheel_python and glibc to its [requires]")
    return DevicePlatform(arch=target.arch, python=str(python), glibc=str(glibc))


def wheel_extras(wheel: Path) -> set[str]:
    """The extras a built edgevision wheel declares (``Provides-Extra`` in its METADATA)."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
            metadata = archive.read(name).decode("utf-8")
    except (OSError, zipfile.BadZipFile, StopIteration) as err:
        raise InputError(f"{wheel} is not a readable wheel", "pass the .whl that `python -m build` made") from err
    return {line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Provides-Extra:")}


def device_extra(target: Target, wheel: Path, extra: str | None = None) -> str:
    """The extra that installs the target's runtime: ``[requires] extra``, else one named after its backend."""
    offered = wheel_extras(wheel)
    chosen = extra or target.requires.get("extra") or target.backend
    if chosen not in offered:
        raise TargetError(f"edgevision has no extra '{chosen}' for target '{target.name}'",
                          f"pass --extra with one of {', '.join(sorted(offered))}")
    return chosen


def source_checkout() -> Path | None:
    """The checkout this edgevision runs from, when it is one (an installed wheel has no pyproject.toml)."""
    root = PACKAGE_DIR.parent
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and 'name = "edgevision"' in pyproject.read_text(encoding="utf-8"):
        return root
    return None


def _run(cmd: Sequence[str]) -> subprocess.CompletedProcess:
    log.info("wheelhouse: %s", " ".join(cmd))
    try:
        return subprocess.run(list(cmd), capture_output=True, text=True, timeout=PIP_TIMEOUT_S,
                              env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    except subprocess.TimeoutExpired as err:
        raise EdgevisionError(f"pip did not finish in {PIP_TIMEOUT_S:.0f} s", "check the network to the package index") from err


def _pip(args: Sequence[str], what: str, run: Runner) -> None:
    done = run([sys.executable, "-m", "pip", *args])
    if done.returncode != 0:
        lines = [ln for ln in (done.stderr or "").strip().splitlines() if ln.startswith("ERROR")] or \
            (done.stderr or "no output").strip().splitlines() or ["no output"]
        raise EdgevisionError(f"{what} failed: {lines[-1].removeprefix('ERROR: ')}",
                              "rerun with --debug for pip's log; a version with no wheel for the device "
                              "needs another --python-version")


def build_edgevision_wheel(source: Path, out_dir: Path, run: Runner = _run) -> Path:
    _pip(["wheel", "--no-deps", "-q", "-w", str(out_dir), str(source)], f"building the wheel from {source}", run)
    built = sorted(out_dir.glob("edgevision-*.whl"))
    if not built:
        raise EdgevisionError(f"pip wheel made no edgevision wheel from {source}", "run python -m build there")
    return built[-1]


def build_wheelhouse(target: Target, out_dir: Path, wheel: Path | None = None, python: str | None = None,
                     glibc: str | None = None, extra: str | None = None, run: Runner = _run) -> Wheelhouse:
    """Download the device's wheels for ``target`` and the edgevision wheel into ``out_dir``.

    Everything lands in a scratch folder first, so a failed download leaves ``out_dir`` as it was.
    """
    device = device_platform(target, python, glibc)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir} exists and is not a folder", "pass a folder for the wheels with -o")
    if wheel is not None and not (Path(wheel).is_file() and Path(wheel).name.startswith("edgevision-")
                                  and Path(wheel).suffix == ".whl"):
        raise InputError(f"{wheel} is not an edgevision wheel file", "pass the edgevision-*.whl that python -m build made")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".wheelhouse-", dir=out_dir) as scratch_name:
        scratch = Path(scratch_name)
        if wheel is None:
            source = source_checkout()
            if source is None:
                raise InputError("this edgevision was installed from a wheel, so there is no checkout to build from",
                                 "pass --wheel edgevision-*.whl (python -m build in the checkout makes it)")
            wheel = build_edgevision_wheel(source, scratch / "built", run)
        chosen = device_extra(target, Path(wheel), extra)
        download = scratch / "wheels"
        download.mkdir()
        # pip resolves the device extra from the wheel's own metadata: the same pins the device will see.
        _pip(["download", "-q", "--dest", str(download), *device.pip_args(), f"{Path(wheel).resolve()}[{chosen}]"],
             f"downloading the {device.arch} Python {device.python} wheels for '{target.name}'", run)
        if not any(download.glob("edgevision-*.whl")):
            shutil.copy2(wheel, download)
        placed = []
        for item in sorted(download.iterdir()):
            destination = out_dir / item.name
            os.replace(item, destination)
            placed.append(destination)
    edgevision_wheel = next(p for p in placed if p.name.startswith("edgevision-"))
    return Wheelhouse(folder=out_dir, edgevision_wheel=edgevision_wheel, extra=chosen, platform=device, wheels=placed)
