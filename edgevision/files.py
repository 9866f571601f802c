"""Writing files so that a reader (or a crash, or a signal) never sees half of one, and never loses an input.

Every file edgevision writes goes through here: :func:`atomic_output` (a temporary name beside the
destination, renamed into place on success and removed on failure; :func:`finish_temp` is its commit)
and :func:`write_atomic` for bytes.
The result gets the permissions a plain ``open()`` would give (0666 minus the umask), not mkstemp's 0600.
:func:`refuse_overwriting_inputs` is the one check that an output path is not also an input.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import uuid
from pathlib import Path
from typing import Iterator, Mapping

from .errors import InputError

_CHUNK = 1 << 20


def current_umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask sets it to read it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: Path | str, mode: int = 0o666) -> None:
    """Give ``path`` the mode a plain ``open(path, "w")`` would have created it with."""
    os.chmod(path, mode & ~current_umask())


def temp_path_beside(path: Path) -> Path:
    """A fresh hidden name next to ``path`` that keeps its suffix (OpenCV picks a video container by it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp{path.suffix}")


@contextlib.contextmanager
def atomic_output(path: Path | str, mode: int = 0o666) -> Iterator[Path]:
    """``with atomic_output(dest) as tmp: write tmp`` -> ``dest`` appears whole, or not at all.

    The temporary file is removed when the block raises anything, KeyboardInterrupt and the CLI's
    SIGTERM/SIGHUP included; on success it is fsynced, given ``mode & ~umask`` and renamed over ``dest``.
    """
    path = Path(path)
    tmp = temp_path_beside(path)
    try:
        yield tmp
        if tmp.exists():
            finish_temp(tmp, path, mode)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: Path | str, data: bytes) -> Path:
    """Nothing partially written: a temp file beside ``path``, flushed to disk, then a rename."""
    path = Path(path)
    with atomic_output(path) as tmp:
        # O_EXCL: the fresh name must not exist; a planted link there is not followed.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
    return path


def finish_temp(tmp: Path | str, path: Path | str, mode: int = 0o666) -> None:
    """The commit of every atomic write: the finished temp file flushed to disk, given ``mode & ~umask``,
    renamed over ``path``. Writers that outlive one ``with`` block (the stream's video and JSON-lines
    sinks) pair :func:`temp_path_beside` with this; everything else uses :func:`atomic_output`."""
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    apply_umask(tmp, mode)
    os.replace(tmp, path)


def sha256_file(path: Path | str) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks (weights files do not fit in memory twice)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)  # hard links and symbolic links included
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def refuse_overwriting_inputs(outputs: Mapping[str, "Path | str | None"],
                              inputs: Mapping[str, "Path | str | None"]) -> None:
    """Raise a one-line InputError when an output names an input file (or another output).

    Keys are what the user typed them as (``--json``, ``the artifact``); None values are skipped.
    """
    outs = [(name, Path(p)) for name, p in outputs.items() if p is not None]
    ins = [(name, Path(p)) for name, p in inputs.items() if p is not None]
    for i, (out_name, out) in enumerate(outs):
        for in_name, src in ins:
            if src.exists() and _same_file(out, src):
                raise InputError(f"{out_name} {out} is {in_name} (same file): writing it would destroy an input",
                                 f"write {out_name} to another path")
        for other_name, other in outs[i + 1:]:
            if _same_file(out, other):
                raise InputError(f"{out_name} and {other_name} are the same file {out}",
                                 "give each output its own path")


def kind_of_special_file(path: Path) -> str | None:
    """'a named pipe', 'a socket', 'a device' for paths whose open() may block or never end; else None."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return None
