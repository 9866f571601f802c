"""Reading and writing the artifact zip, with integrity checks before anything is trusted."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from ..errors import ArtifactError
from ..files import finish_temp
from .manifest import Manifest

MANIFEST_NAME = "manifest.json"
_DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
PAYLOAD_PREFIX = "payload/"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_artifact(manifest: Manifest, payload_dir: Path, out_path: Path) -> Path:
    """Zip ``payload_dir`` under ``payload/`` next to the manifest; atomic: a temp file, then rename."""
    out_path = Path(out_path)
    files = sorted(p for p in Path(payload_dir).rglob("*") if p.is_file())
    manifest.files = {PAYLOAD_PREFIX + p.relative_to(payload_dir).as_posix(): sha256_file(p) for p in files}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".tmp", dir=out_path.parent)
    os.close(fd)
    try:
        # Stored, not deflated: weights barely compress and loading stays a plain copy.
        with zipfile.ZipFile(tmp_name, "w", compression=zipfile.ZIP_STORED) as zf:
            zf.writestr(MANIFEST_NAME, json.dumps(manifest.to_dict(), indent=2, sort_keys=True),
                        compress_type=zipfile.ZIP_DEFLATED)
            for path in files:
                zf.write(path, PAYLOAD_PREFIX + path.relative_to(payload_dir).as_posix())
        finish_temp(tmp_name, out_path)  # mkstemp makes 0600 files; the artifact gets the user's umask
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return out_path


def _open(path: Path) -> zipfile.ZipFile:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"artifact {path} does not exist", "check the path or compile it first")
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise ArtifactError(f"{path} is not a readable edgevision artifact ({err})",
                            "it is corrupt or truncated: copy or compile it again") from err


def _check_member_names(zf: zipfile.ZipFile, path: Path) -> None:
    for info in zf.infolist():
        name = info.filename
        parts = PurePosixPath(name).parts
        if name.startswith("/") or "\\" in name or ".." in parts or (parts and parts[0].endswith(":")):
            raise ArtifactError(f"artifact {path} has an unsafe member path {name!r}",
                                "refusing it: only use artifacts from a trusted source")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise ArtifactError(f"artifact {path} contains a symbolic link {name!r}",
                                "refusing it: only use artifacts from a trusted source")


def _check_payload_references(manifest: Manifest, path: Path) -> None:
    """A backend opens ``payload/<entry>`` for its file entries: none may climb out of the payload folder."""
    for key, value in manifest.payload.items():
        if not isinstance(value, str) or any(c.isspace() for c in value):
            continue  # not a file name (free text such as notes)
        name = value.replace("\\", "/")
        if name.startswith("/") or ".." in PurePosixPath(name).parts:
            raise ArtifactError(f"artifact {path}: payload entry {key}={value!r} points outside the artifact",
                                "refusing it: only use artifacts from a trusted source")


def _manifest_from(zf: zipfile.ZipFile, path: Path) -> Manifest:
    _check_member_names(zf, path)
    try:
        raw = zf.read(MANIFEST_NAME)
    except KeyError as err:
        raise ArtifactError(f"{path} has no {MANIFEST_NAME}: not an edgevision artifact",
                            "compile one with `edgevision compile`") from err
    except (zipfile.BadZipFile, OSError) as err:
        raise ArtifactError(f"cannot read the manifest of {path} ({err})", "copy or compile it again") from err
    try:
        data = json.loads(raw)
    except ValueError as err:
        raise ArtifactError(f"the manifest of {path} is not valid JSON", "copy or compile it again") from err
    if not isinstance(data, dict):
        raise ArtifactError(f"the manifest of {path} is not a JSON object", "copy or compile it again")
    return Manifest.from_dict(data)


def read_manifest(path: Path) -> Manifest:
    with _open(path) as zf:
        return _manifest_from(zf, Path(path))


def unpack(path: Path, dest: Path) -> Manifest:
    """Verify every member against the manifest's sha256, then extract the payload into ``dest``."""
    path = Path(path)
    with _open(path) as zf:
        manifest = _manifest_from(zf, path)
        members = {i.filename for i in zf.infolist() if not i.is_dir()} - {MANIFEST_NAME}
        expected = set(manifest.files)
        if members != expected:
            extra, missing = sorted(members - expected), sorted(expected - members)
            raise ArtifactError(f"artifact {path} members do not match its manifest "
                                f"(unexpected {extra}, missing {missing})",
                                "it was modified or truncated: copy or compile it again")
        _check_payload_references(manifest, path)
        dest = Path(dest)
        for name in sorted(expected):
            digest = hashlib.sha256()
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(name) as src, open(target, "wb") as out:
                    for chunk in iter(lambda: src.read(1 << 20), b""):
                        digest.update(chunk)
                        out.write(chunk)
            except (zipfile.BadZipFile, OSError, EOFError) as err:
                if isinstance(err, OSError) and err.errno in _DISK_FULL:
                    raise  # the destination is full: not the artifact's fault
                raise ArtifactError(f"cannot read member {name} of {path} ({err})",
                                    "the artifact is corrupt: copy or compile it again") from err
            if digest.hexdigest() != manifest.files[name]:
                raise ArtifactError(f"artifact {path}: {name} fails its sha256 check",
                                    "it was tampered with or damaged: copy or compile it again")
    return manifest
