"""The package a Pi owner installs, inside the emulated Pi: one virtualenv per device extra.

``ensure_device_env(sysroot, "onnxruntime")`` makes ``SYSROOT/opt/venvs/onnxruntime-<key>/``: a real
venv (``pyvenv.cfg``, ``bin/python3`` -> the sysroot's aarch64 python3.11) holding the built edgevision
wheel and one device extra's aarch64 wheels, installed from this host with ``pip --target --platform``
(the same wheels ``pip install edgevision[EXTRA]`` picks on a Pi). The key hashes the wheel's contents
and the install settings, so a rebuilt wheel gets a fresh venv; older venvs of the same extra are
removed. Nothing of a checkout is on the guest's path.

The wheel comes from, in order: the ``wheel`` argument, ``$EDGEVISION_WHEEL``, an ``edgevision-*.whl``
in the wheelhouse (``$EDGEVISION_WHEELHOUSE``), or -- when edgevision runs from a checkout -- a
``pip wheel --no-deps`` build of that checkout.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import BackendUnavailable, InputError
from .qemu import Sysroot

log = logging.getLogger(__name__)

VENVS = Path("opt/venvs")
STAMP = ".edgevision-complete"
# Another wheel's venv is deleted only when unused this long: two checkouts (two test runs, a lead and
# a helper) with different wheels each keep theirs, and a cache of old wheels' venvs does not grow.
STALE_AFTER_S = 6 * 3600
# Raspberry Pi OS / Debian bookworm: glibc 2.36, CPython 3.11. OpenVINO publishes manylinux_2_35 only.
PLATFORMS = ("manylinux_2_36_aarch64", "manylinux_2_35_aarch64", "manylinux_2_28_aarch64", "manylinux2014_aarch64")
PYTHON_VERSION = "3.11"
PACKAGE_ROOT = Path(__file__).resolve().parent.parent
CHECKOUT = PACKAGE_ROOT.parent  # a source checkout when pyproject.toml sits beside the package
INSTALL_TIMEOUT_S = 1800


@dataclass(frozen=True)
class DeviceEnv:
    """One device extra installed in a venv inside the sysroot."""

    root: Path
    extra: str
    wheel: str  # the edgevision wheel's file name

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python3"

    @property
    def site(self) -> Path:
        return self.root / "lib" / f"python{PYTHON_VERSION}" / "site-packages"

    def size_bytes(self) -> int:
        """What the install occupies on the device (the interpreter is the OS's, not counted)."""
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file() and not p.is_symlink())


def wheel_digest(wheel: Path) -> str:
    """Hash of the wheel's members and their contents: zip timestamps do not change it."""
    digest = hashlib.sha256()
    with zipfile.ZipFile(wheel) as zf:
        for info in sorted(zf.infolist(), key=lambda i: i.filename):
            digest.update(info.filename.encode() + b"\0" + zf.read(info) + b"\0")
    return digest.hexdigest()


def _checkout_constraints() -> Path | None:
    found = CHECKOUT / "constraints.txt"
    return found if (CHECKOUT / "pyproject.toml").is_file() and found.is_file() else None


def build_checkout_wheel(dest: Path) -> Path:
    """``pip wheel --no-deps`` of the checkout edgevision runs from (a few seconds)."""
    if not (CHECKOUT / "pyproject.toml").is_file():
        raise BackendUnavailable("the emulated Pi installs the edgevision wheel, and none was given",
                                 "build one (`pip wheel --no-deps edgevision` or `edgevision wheelhouse DIR`) "
                                 "and set EDGEVISION_WHEEL=PATH or EDGEVISION_WHEELHOUSE=DIR")
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest, prefix=".build-") as tmp:
        done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                               "--disable-pip-version-check", "-q", "-w", tmp, str(CHECKOUT)],
                              capture_output=True, text=True, timeout=600,
                              env={**os.environ, "SOURCE_DATE_EPOCH": "315532800"})
        built = sorted(Path(tmp).glob("edgevision-*.whl"))
        if done.returncode != 0 or not built:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise BackendUnavailable(f"building the edgevision wheel from {CHECKOUT} failed: {tail}",
                                     f"run pip wheel --no-deps {CHECKOUT} by hand to see why")
        final = dest / built[0].name
        os.replace(built[0], final)
    return final


def find_wheel(wheel: Path | None = None, cache: Path | None = None) -> Path:
    """The edgevision wheel to install on the emulated device (see the module docstring)."""
    if wheel is None and os.environ.get("EDGEVISION_WHEEL"):
        wheel = Path(os.environ["EDGEVISION_WHEEL"])
    if wheel is None and os.environ.get("EDGEVISION_WHEELHOUSE"):
        found = sorted(Path(os.environ["EDGEVISION_WHEELHOUSE"]).glob("edgevision-*.whl"))
        wheel = found[-1] if found else None
    if wheel is not None:
        if not wheel.is_file() or wheel.suffix != ".whl":
            raise InputError(f"{wheel} is not a wheel file", "point EDGEVISION_WHEEL at an edgevision-*.whl")
        return wheel
    return build_checkout_wheel((cache or Path(tempfile.gettempdir())) / "edgevision-wheel")


def _install_key(extra: str, wheel: Path) -> str:
    constraints = _checkout_constraints()
    parts = [extra, wheel_digest(wheel), *PLATFORMS, PYTHON_VERSION,
             constraints.read_text() if constraints else "", os.environ.get("EDGEVISION_WHEELHOUSE", "")]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def _pip_install(site: Path, wheel: Path, extra: str) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile",
           "--target", str(site), "--python-version", PYTHON_VERSION, "--implementation", "cp",
           "--abi", f"cp{PYTHON_VERSION.replace('.', '')}", "--only-binary=:all:"]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    constraints = _checkout_constraints()
    if constraints is not None:
        cmd += ["-c", str(constraints)]  # the versions this checkout is tested with
    if os.environ.get("EDGEVISION_WHEELHOUSE"):
        cmd += ["--find-links", os.environ["EDGEVISION_WHEELHOUSE"]]
    cmd.append(f"{wheel}[{extra}]")
    log.info("installing %s[%s] for aarch64: %s", wheel.name, extra, " ".join(cmd))
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    if done.returncode != 0:
        tail = [line for line in done.stderr.strip().splitlines() if "WARNING" not in line] or ["no output"]
        raise BackendUnavailable(f"installing edgevision[{extra}] for aarch64 failed: {tail[-1]}",
                                 "it needs PyPI (or EDGEVISION_WHEELHOUSE=DIR of aarch64 wheels) once; "
                                 "rerun with --debug for pip's log")


def _write_venv(root: Path, sysroot: Sysroot, final: Path) -> None:
    """The layout ``python3 -m venv --without-pip`` makes, with the interpreter link relative to the
    sysroot: an absolute /usr/bin/python3.11 would resolve on this host to its own x86 python."""
    bindir = root / "bin"
    bindir.mkdir(parents=True)
    (root / "lib" / f"python{PYTHON_VERSION}" / "site-packages").mkdir(parents=True)
    interpreter = sysroot.python
    os.symlink(os.path.relpath(interpreter, final / "bin"), bindir / interpreter.name)  # valid once renamed
    for alias in ("python3", "python"):
        os.symlink(interpreter.name, bindir / alias)
    (root / "pyvenv.cfg").write_text(f"home = /usr/bin\ninclude-system-site-packages = false\n"
                                     f"version = {PYTHON_VERSION}\n")


def _write_console_script(root: Path) -> None:
    """``bin/edgevision`` as pip writes it on the Pi (pip --target leaves an x86 shebang in site/bin)."""
    stray = root / "lib" / f"python{PYTHON_VERSION}" / "site-packages" / "bin"
    if stray.is_dir():
        shutil.rmtree(stray)
    script = root / "bin" / "edgevision"
    script.write_text(f"#!{root / 'bin' / 'python3'}\nimport sys\nfrom edgevision.cli import main\n"
                      "if __name__ == '__main__':\n    sys.exit(main())\n")
    script.chmod(0o755)


def ensure_device_env(sysroot: Sysroot, extra: str, wheel: Path | None = None) -> DeviceEnv:
    """The venv for ``extra`` with this wheel, built once (pip from PyPI's aarch64 wheels, ~10-60 s)."""
    wheel = find_wheel(wheel, cache=sysroot.root.parent)
    key = _install_key(extra, wheel)
    venvs = sysroot.root / VENVS
    root = venvs / f"{extra}-{key}"
    env = DeviceEnv(root, extra, wheel.name)
    if (root / STAMP).is_file():
        os.utime(root / STAMP)  # in use: not stale for another checkout
        return env
    venvs.mkdir(parents=True, exist_ok=True)
    # Built beside its final place and renamed at the end: an interrupted install leaves no half venv.
    work = Path(tempfile.mkdtemp(dir=venvs, prefix=f".{extra}-build-"))
    try:
        staged = work / root.name
        _write_venv(staged, sysroot, root)
        _pip_install(staged / "lib" / f"python{PYTHON_VERSION}" / "site-packages", wheel, extra)
        _write_console_script(staged)
        (staged / STAMP).write_text(wheel.name + "\n")
        # The console script and pyvenv.cfg name the final path; rename into it.
        (staged / "bin" / "edgevision").write_text(
            (staged / "bin" / "edgevision").read_text().replace(str(staged), str(root)))
        if root.exists():
            shutil.rmtree(root)
        os.replace(staged, root)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for old in venvs.glob(f"{extra}-*"):
        stamp = old / STAMP
        stale = old != root and len(old.name) == len(root.name) and stamp.is_file() and \
            time.time() - stamp.stat().st_mtime > STALE_AFTER_S
        if stale:
            shutil.rmtree(old, ignore_errors=True)  # a previous wheel's venv of this extra
    log.info("device venv for edgevision[%s]: %s (%.0f MB)", extra, root, env.size_bytes() / 1e6)
    return env
