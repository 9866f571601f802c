"""Reading and writing the artifact zip. Nothing in a file is trusted before it is checked.

Reading (``open_artifact``) checks, in this order and before one byte is extracted: the member table
(names, count, sizes, compression ratios: ``Limits``), the signature against the trust policy (when
one is set: on the raw manifest bytes, before they are parsed), the manifest (size, depth, canonical
form, its own digest, an allow-list of keys and values, the backend's payload rules), that the members
are exactly those the manifest lists with the sizes it records, and that the accuracy gate was measured
on this payload. ``extract``/``verify_members`` then stream every member through sha256, never past
the size the manifest records.
"""
from __future__ import annotations

import copy
import errno
import hashlib
import os
import shutil
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from ..errors import ArtifactError, TargetError
from ..files import atomic_output, sha256_file
from .canonical import bounded_loads, canonical_json, sha256_hex
from .manifest import SEAL_KEY, Manifest, check_format
from .signing import SIGNATURE_NAME, NO_POLICY, SignatureStatus, SigningKey, TrustPolicy, check_signature, sign_manifest

MANIFEST_NAME = "manifest.json"
PAYLOAD_PREFIX = "payload/"
RESERVED = (MANIFEST_NAME, SIGNATURE_NAME)
_DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Limits:
    """Bounds on what reading an artifact may cost: every one is checked before the work it bounds."""
    max_manifest_bytes: int = 4 << 20  # 1,000 labels and a TVM tuning summary take ~60 kB
    max_signature_bytes: int = 64 << 10
    max_json_depth: int = 32  # edgevision writes 5
    max_members: int = 10_000
    max_name_length: int = 512
    max_path_depth: int = 16
    max_unpacked_bytes: int = 16 << 30
    max_ratio: int = 32  # uncompressed / compressed size of a deflated member over 1 MiB (weights: ~1.1)


DEFAULT_LIMITS = Limits()


def payload_digest(files: dict[str, str]) -> str:
    """One digest for a whole payload: sha256 of the canonical JSON of {member: sha256} under payload/."""
    return sha256_hex(canonical_json({k: v for k, v in sorted(files.items()) if k.startswith(PAYLOAD_PREFIX)}))


def hash_payload_dir(payload_dir: Path) -> tuple[dict[str, str], dict[str, int]]:
    """{member name: sha256} and {member name: bytes} for the files a writer will put under payload/."""
    paths = sorted(p for p in Path(payload_dir).rglob("*") if p.is_file())
    names = [PAYLOAD_PREFIX + p.relative_to(payload_dir).as_posix() for p in paths]
    return ({n: sha256_file(p) for n, p in zip(names, paths)}, {n: p.stat().st_size for n, p in zip(names, paths)})


def seal(data: dict[str, Any]) -> bytes:
    """The manifest.json bytes: canonical JSON, including the digest of everything else in it."""
    body = {k: v for k, v in data.items() if k != SEAL_KEY}
    return canonical_json({**body, SEAL_KEY: sha256_hex(canonical_json(body))})


# --- writing --------------------------------------------------------------------------------------

def write_artifact(manifest: Manifest, payload_dir: Path, out_path: Path, signer: SigningKey | None = None) -> Path:
    """Zip ``payload_dir`` under ``payload/`` next to the manifest (and its signature when ``signer``
    is given): all of it in a temporary file that is renamed into place, or nothing."""
    out_path = Path(out_path)
    payload_dir = Path(payload_dir)
    manifest.files, manifest.sizes = hash_payload_dir(payload_dir)
    raw = seal(manifest.to_dict())
    signature = sign_manifest(raw, manifest, signer) if signer is not None else None
    with atomic_output(out_path) as tmp:
        # Stored, not deflated: weights barely compress and loading stays a plain copy.
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            zf.writestr(MANIFEST_NAME, raw, compress_type=zipfile.ZIP_DEFLATED)
            if signature is not None:
                zf.writestr(SIGNATURE_NAME, signature, compress_type=zipfile.ZIP_DEFLATED)
            for name in manifest.files:
                zf.write(payload_dir / name[len(PAYLOAD_PREFIX):], name)
    return out_path


def sign_artifact(path: Path, signer: SigningKey, out_path: Path | None = None) -> Path:
    """(Re-)sign an existing artifact after checking every member; the old signature is replaced.
    Written atomically: ``out_path`` (default: ``path`` itself) is the old file or the new one, whole."""
    out_path = Path(out_path or path)
    with open_artifact(path, NO_POLICY, enforce=False) as art:
        art.verify_members()  # never sign what does not hold together
        signature = sign_manifest(art.raw_manifest, art.manifest, signer)
        with atomic_output(out_path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zout:
            for info in art.zip.infolist():
                if info.filename == SIGNATURE_NAME:
                    continue
                info = copy.copy(info)  # writing sets offsets on it: keep the reader's own intact
                if info.filename == MANIFEST_NAME:  # right after the manifest, as write_artifact puts it
                    zout.writestr(info, art.raw_manifest)
                    zout.writestr(SIGNATURE_NAME, signature, compress_type=zipfile.ZIP_DEFLATED)
                    continue
                with art.zip.open(info.filename) as src, zout.open(info, "w") as dst:
                    shutil.copyfileobj(src, dst, _CHUNK)
    return out_path


# --- reading --------------------------------------------------------------------------------------

def _refuse(path: Path, problem: str) -> ArtifactError:
    return ArtifactError(f"artifact {path.name}: {problem}", "refusing it: only use artifacts from a trusted source")


def _check_member_table(zf: zipfile.ZipFile, path: Path, limits: Limits) -> None:
    infos = zf.infolist()
    if len(infos) > limits.max_members:
        raise _refuse(path, f"{len(infos):,} members, more than the {limits.max_members:,} allowed")
    seen: set[str] = set()
    total = 0
    for info in infos:
        name = info.filename
        parts = PurePosixPath(name).parts
        if name.startswith("/") or "\\" in name or ".." in parts or (parts and parts[0].endswith(":")):
            raise ArtifactError(f"artifact {path} has an unsafe member path {name!r}",
                                "refusing it: only use artifacts from a trusted source")
        if (len(name) > limits.max_name_length or len(parts) > limits.max_path_depth
                or any(ord(c) < 32 for c in name) or "//" in name or "." in name.split("/")):
            raise _refuse(path, f"member name {name[:60]!r}... ({len(name)} characters, {len(parts)} folders) "
                                f"is not one edgevision writes (at most {limits.max_path_depth} folders, "
                                f"{limits.max_name_length} characters)")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise ArtifactError(f"artifact {path} contains a symbolic link {name!r}",
                                "refusing it: only use artifacts from a trusted source")
        if name in seen:
            raise _refuse(path, f"member {name!r} appears twice")
        seen.add(name)
        if info.flag_bits & 0x1:
            raise _refuse(path, f"member {name!r} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _refuse(path, f"member {name!r} uses compression method {info.compress_type}")
        if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
            raise _refuse(path, f"stored member {name!r} declares {info.file_size:,} bytes in {info.compress_size:,}")
        if info.file_size > _CHUNK and info.file_size > info.compress_size * limits.max_ratio:
            raise _refuse(path, f"member {name!r} would unpack {info.compress_size:,} bytes into "
                                f"{info.file_size:,} (a zip bomb?)")
        total += info.file_size
    if total > limits.max_unpacked_bytes:
        raise _refuse(path, f"it would unpack to {total / 1e9:.1f} GB, more than the "
                            f"{limits.max_unpacked_bytes / 1e9:.1f} GB allowed")


def _read_bounded(zf: zipfile.ZipFile, name: str, limit: int, path: Path) -> bytes:
    info = zf.getinfo(name)
    if info.file_size > limit:
        raise _refuse(path, f"{name} is {info.file_size:,} bytes, more than the {limit:,} allowed")
    try:
        with zf.open(info) as fh:
            data = fh.read(limit + 1)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise ArtifactError(f"cannot read the {name} of {path} ({err})", "copy or compile it again") from err
    if len(data) > limit:
        raise _refuse(path, f"{name} is longer than the {limit:,} bytes allowed")
    return data


def _check_seal(data: dict[str, Any], raw: bytes, path: Path) -> None:
    recorded = data.get(SEAL_KEY)
    body = {k: v for k, v in data.items() if k != SEAL_KEY}
    if not isinstance(recorded, str) or recorded != sha256_hex(canonical_json(body)):
        raise ArtifactError(f"artifact {path.name}: {MANIFEST_NAME} was changed after it was written "
                            f"(its {SEAL_KEY} does not match its content)",
                            "it was edited or damaged: copy or compile it again")
    if canonical_json(data) != raw:
        raise ArtifactError(f"artifact {path.name}: {MANIFEST_NAME} is not in canonical form (re-serialised "
                            "or edited)", "copy or compile it again")


def _dotted(payload: dict[str, Any], key: str) -> Any:
    value: Any = payload
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _check_payload(manifest: Manifest, path: Path) -> None:
    """The backend's rules for its payload: known keys, file entries that are members, safe options."""
    from ..backends import get_backend

    try:
        backend = get_backend(manifest.backend)
    except TargetError as err:
        raise ArtifactError(f"{path.name} was built for backend '{manifest.backend}', which this edgevision "
                            f"does not provide", "install the package that adds that backend, or compile for "
                            "a target listed by `edgevision targets`") from err
    allowed = backend.allowed_payload_keys()
    if allowed is not None:
        unknown = sorted(set(manifest.payload) - allowed)
        if unknown:
            raise _refuse(path, f"payload key(s) {unknown[:5]} are not ones the {backend.name} backend writes")
    for key in backend.payload_files:
        value = _dotted(manifest.payload, key)
        if value is None:
            continue
        if not isinstance(value, str) or PAYLOAD_PREFIX + value not in manifest.files:
            raise ArtifactError(f"artifact {path}: payload entry {key}={value!r} points outside the artifact "
                                f"(it is not a member of its payload/)",
                                "refusing it: only use artifacts from a trusted source")
    problem = backend.check_payload(manifest.payload)
    if problem:
        raise _refuse(path, problem)


class Artifact:
    """An opened artifact whose member table, signature and manifest have been checked.

    Use as a context manager; ``extract(dest)`` or ``verify_members()`` then check every member's bytes.
    """

    def __init__(self, path: Path, zf: zipfile.ZipFile, raw_manifest: bytes, manifest: Manifest,
                 signature: SignatureStatus) -> None:
        self.path, self.zip, self.raw_manifest = path, zf, raw_manifest
        self.manifest, self.signature = manifest, signature

    def __enter__(self) -> "Artifact":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.zip.close()

    @property
    def unpacked_bytes(self) -> int:
        return sum(self.manifest.sizes.values())

    def _stream(self, name: str, out: IO[bytes] | None) -> None:
        expected = self.manifest.sizes[name]
        digest, count = hashlib.sha256(), 0
        try:
            with self.zip.open(name) as src:
                while True:
                    chunk = src.read(min(_CHUNK, expected - count + 1))
                    if not chunk:
                        break
                    count += len(chunk)
                    if count > expected:  # never write more than the manifest promised
                        raise _refuse(self.path, f"{name} is longer than the {expected:,} bytes its manifest records")
                    digest.update(chunk)
                    if out is not None:
                        out.write(chunk)
        except (zipfile.BadZipFile, OSError, EOFError) as err:
            if isinstance(err, OSError) and err.errno in _DISK_FULL:
                raise  # the destination is full: not the artifact's fault
            raise ArtifactError(f"cannot read member {name} of {self.path} ({err})",
                                "the artifact is corrupt: copy or compile it again") from err
        if count != expected or digest.hexdigest() != self.manifest.files[name]:
            raise ArtifactError(f"artifact {self.path}: {name} fails its sha256 check",
                                "it was tampered with or damaged: copy or compile it again")

    def verify_members(self) -> None:
        """Every member through sha256, nothing written."""
        for name in sorted(self.manifest.files):
            self._stream(name, None)

    def extract(self, dest: Path) -> None:
        dest = Path(dest)
        free = shutil.disk_usage(dest).free
        if free < self.unpacked_bytes:
            raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} (unpacking needs {self.unpacked_bytes / 1e6:.1f} "
                                        f"MB, {free / 1e6:.1f} MB free)", str(dest))
        for name in sorted(self.manifest.files):
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as out:
                self._stream(name, out)


def _open_zip(path: Path) -> zipfile.ZipFile:
    if not path.is_file():
        raise ArtifactError(f"artifact {path} does not exist", "check the path or compile it first")
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise ArtifactError(f"{path} is not a readable edgevision artifact ({err})",
                            "it is corrupt or truncated: copy or compile it again") from err


def open_artifact(path: Path | str, policy: TrustPolicy | None = None, *, enforce: bool = True,
                  limits: Limits = DEFAULT_LIMITS) -> Artifact:
    """Open and check an artifact (see the module docstring); nothing is extracted.

    ``policy`` None reads the environment's (``TrustPolicy.from_environment``). ``enforce=False``
    reports what the policy would refuse in ``Artifact.signature`` instead of raising; damage and
    tampering (a signature that does not hold, a changed manifest) always raise.
    """
    path = Path(path)
    if policy is None:
        policy = TrustPolicy.from_environment()
    zf = _open_zip(path)
    try:
        _check_member_table(zf, path, limits)
        names = set(zf.namelist())
        if MANIFEST_NAME not in names:
            raise ArtifactError(f"{path} has no {MANIFEST_NAME}: not an edgevision artifact",
                                "compile one with `edgevision compile`")
        raw = _read_bounded(zf, MANIFEST_NAME, limits.max_manifest_bytes, path)
        raw_signature = (_read_bounded(zf, SIGNATURE_NAME, limits.max_signature_bytes, path)
                         if SIGNATURE_NAME in names else None)
        # Before the manifest is parsed: under a policy only authenticated bytes reach the JSON parser.
        signature = check_signature(raw_signature, raw, policy, path.name, enforce=enforce)
        data = bounded_loads(raw, f"the manifest of {path}", limits.max_manifest_bytes, limits.max_json_depth)
        check_format(data)
        _check_seal(data, raw, path)
        manifest = Manifest.from_dict(data)
        members = {n for n in names if not n.endswith("/")} - set(RESERVED)
        expected = set(manifest.files)
        if members != expected:
            extra, missing = sorted(members - expected), sorted(expected - members)
            raise ArtifactError(f"artifact {path} members do not match its manifest "
                                f"(unexpected {extra[:5]}, missing {missing[:5]})",
                                "it was modified or truncated: copy or compile it again")
        wrong = [n for n in sorted(expected) if zf.getinfo(n).file_size != manifest.sizes[n]]
        if wrong:
            raise _refuse(path, f"{wrong[0]} is {zf.getinfo(wrong[0]).file_size:,} bytes in the zip, "
                                f"{manifest.sizes[wrong[0]]:,} in the manifest")
        if not all(n.startswith(PAYLOAD_PREFIX) for n in expected):
            raise _refuse(path, "a member outside payload/")
        signature.check_statement(manifest, path.name)
        _check_payload(manifest, path)
        if manifest.accuracy is not None and manifest.accuracy.payload_sha256 != payload_digest(manifest.files):
            raise ArtifactError(f"artifact {path.name}: its accuracy gate record was measured on another payload",
                                "the payload was replaced after compiling: use the original or compile again")
    except BaseException:
        zf.close()
        raise
    return Artifact(path, zf, raw, manifest, signature)


def read_manifest(path: Path | str) -> Manifest:
    """The checked manifest, without hashing the members (``open_artifact(...).verify_members`` does)."""
    with open_artifact(path, NO_POLICY, enforce=False) as art:
        return art.manifest


def unpack(path: Path | str, dest: Path, policy: TrustPolicy | None = NO_POLICY) -> Manifest:
    """Check the artifact, then extract its payload into ``dest`` with every member's sha256 verified."""
    with open_artifact(path, policy) as art:
        art.extract(dest)
        return art.manifest


