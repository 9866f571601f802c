"""Ed25519 signatures on artifacts, and the trust policy a device applies before loading one.

The ``signature.json`` member is a DSSE envelope (the signing layer of in-toto and of OpenSSF model
signing) around an in-toto Statement v1 whose subjects are every other member with its sha256 --
``manifest.json`` included, and the manifest lists every payload member's sha256 and the target --
plus the signer's raw public key. docs/signing.md describes the format and why.

``cryptography`` is imported only when a signature is made or checked.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence, Union

from ..errors import ArtifactError, BackendUnavailable, InputError
from .canonical import bounded_loads, canonical_json, sha256_hex

if TYPE_CHECKING:
    from .manifest import Manifest

log = logging.getLogger(__name__)

SIGNATURE_NAME = "signature.json"
MEDIA_TYPE = "application/vnd.edgevision.signature.v1+json"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "urn:edgevision:artifact-signature:v1"
ALGORITHM = "ed25519"
PUBLIC_SUFFIX, PRIVATE_SUFFIX = ".pub", ".key"
ENV_TRUSTED_KEYS = "EDGEVISION_TRUSTED_KEYS"
ENV_REQUIRE = "EDGEVISION_REQUIRE_SIGNATURE"
ENV_PASSPHRASE = "EDGEVISION_KEY_PASSPHRASE"
_FIX_INSTALL = "pip install 'edgevision[sign]' (the cryptography package)"


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "edgevision"


def trust_dir() -> Path:
    """Every ``*.pub`` here is a trusted key (``~/.config/edgevision/trust/``)."""
    return config_dir() / "trust"


def keys_dir() -> Path:
    """Where ``edgevision keys new NAME`` puts NAME.key and NAME.pub unless told otherwise."""
    return config_dir() / "keys"


def key_id(raw_public: bytes) -> str:
    """Short name of a public key: the first 16 hex digits of sha256 over its 32 raw bytes."""
    return hashlib.sha256(raw_public).hexdigest()[:16]


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what is really signed (type and body, length-prefixed)."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(body), body)


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as err:
        raise BackendUnavailable("signing and checking signatures need the cryptography package", _FIX_INSTALL) from err
    return serialization, ed25519


def crypto_available() -> bool:
    try:
        _crypto()
    except BackendUnavailable:
        return False
    return True


def _read_key_file(path: Path, what: str, name: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise InputError(f"cannot read {what} {path} ({err.strerror or err})",
                         f"pass the {name} file `edgevision keys new` wrote") from err


@dataclass(frozen=True)
class PublicKey:
    raw: bytes  # the 32-byte Ed25519 public key
    source: str = ""  # the file it was read from, for messages

    @property
    def key_id(self) -> str:
        return key_id(self.raw)

    @classmethod
    def load(cls, path: Path | str) -> "PublicKey":
        path = Path(path)
        data = _read_key_file(path, "public key", "NAME.pub")
        serialization, ed25519 = _crypto()
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError) as err:
            raise InputError(f"{path} is not a PEM public key", "pass the NAME.pub file `edgevision keys new` "
                             "wrote (not the .key file)") from err
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise InputError(f"{path} is not an Ed25519 key", "make one with `edgevision keys new NAME`")
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return cls(raw, str(path))


class SigningKey:
    """An Ed25519 private key read from a PKCS#8 PEM file (optionally passphrase-protected)."""

    def __init__(self, private: Any, source: str = "") -> None:
        serialization, _ = _crypto()
        self._private = private
        self.source = source
        self.public = PublicKey(private.public_key().public_bytes(serialization.Encoding.Raw,
                                                                  serialization.PublicFormat.Raw), source)

    @property
    def key_id(self) -> str:
        return self.public.key_id

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    @classmethod
    def load(cls, path: Path | str, passphrase: bytes | None = None) -> "SigningKey":
        path = Path(path)
        data = _read_key_file(path, "private key", "NAME.key")
        serialization, ed25519 = _crypto()
        try:
            key = serialization.load_pem_private_key(data, password=passphrase or None)
        except TypeError as err:  # encrypted without a passphrase, or a passphrase for a plain key
            if passphrase:
                raise InputError(f"private key {path} is not protected by a passphrase",
                                 f"unset {ENV_PASSPHRASE}") from err
            raise InputError(f"private key {path} is protected by a passphrase",
                             f"set {ENV_PASSPHRASE}, or run in a terminal to be asked") from err
        except ValueError as err:
            if b"ENCRYPTED" in data:
                raise InputError(f"wrong passphrase for private key {path}", "type it again") from err
            raise InputError(f"{path} is not a PEM private key", "pass the NAME.key file `edgevision keys new` "
                             "wrote") from err
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise InputError(f"{path} is not an Ed25519 key", "make one with `edgevision keys new NAME`")
        return cls(key, str(path))


def generate_key_pair(name: str, directory: Path, passphrase: bytes | None = None) -> tuple[Path, Path, str]:
    """Write NAME.key (PKCS#8 PEM, mode 0600, encrypted when ``passphrase``) and NAME.pub beside it.

    Refuses to replace existing files: a lost private key cannot be recovered, a replaced one silently
    invalidates every device that trusts it.
    """
    from ..files import atomic_output, write_atomic

    if not name or "/" in name or name.startswith(".") or not all(c.isalnum() or c in "-_." for c in name):
        raise InputError(f"key name {name!r} is not a plain name", "use letters, digits, '-', '_', e.g. ci-2026")
    directory = Path(directory)
    private_path, public_path = directory / f"{name}{PRIVATE_SUFFIX}", directory / f"{name}{PUBLIC_SUFFIX}"
    for existing in (private_path, public_path):
        if existing.exists():
            raise InputError(f"{existing} exists already", "pick another NAME, or move the old key away first")
    serialization, ed25519 = _crypto()
    private = ed25519.Ed25519PrivateKey.generate()
    encryption = (serialization.BestAvailableEncryption(passphrase) if passphrase
                  else serialization.NoEncryption())
    private_pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    public_pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    if not directory.exists():
        directory.mkdir(parents=True, mode=0o700)
    with atomic_output(private_path, mode=0o600) as tmp:  # created 0600: never readable by others, not briefly
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(private_pem)
    write_atomic(public_path, public_pem)
    raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return private_path, public_path, key_id(raw)


# --- the signature member -------------------------------------------------------------------------

def _statement(raw_manifest: bytes, manifest: "Manifest") -> dict[str, Any]:
    subjects = [{"name": "manifest.json", "digest": {"sha256": sha256_hex(raw_manifest)}}]
    subjects += [{"name": name, "digest": {"sha256": digest}} for name, digest in sorted(manifest.files.items())]
    return {"_type": STATEMENT_TYPE, "subject": subjects, "predicateType": PREDICATE_TYPE,
            "predicate": {"target": manifest.target.name, "arch": manifest.target.arch,
                          "backend": manifest.backend, "model_name": manifest.model_name}}


def sign_manifest(raw_manifest: bytes, manifest: "Manifest", key: SigningKey) -> bytes:
    """The signature.json bytes for an artifact whose manifest.json is ``raw_manifest``."""
    body = canonical_json(_statement(raw_manifest, manifest))
    sig = key.sign(pae(PAYLOAD_TYPE, body))
    b64 = lambda data: base64.b64encode(data).decode("ascii")  # noqa: E731
    return canonical_json({
        "mediaType": MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": key.key_id, "algorithm": ALGORITHM,
                                               "rawBytes": b64(key.public.raw)}},
        "dsseEnvelope": {"payloadType": PAYLOAD_TYPE, "payload": b64(body),
                         "signatures": [{"keyid": key.key_id, "sig": b64(sig)}]}})


# --- trust ----------------------------------------------------------------------------------------

KeySource = Union[str, Path, PublicKey]


@dataclass(frozen=True)
class TrustPolicy:
    """Which signers a device accepts. ``require_signature``: unsigned artifacts are refused too.

    With trusted keys, a signature by any other key is refused; with ``require_signature`` and no
    keys, everything is refused (fail closed: a misconfigured device runs nothing).
    """
    keys: tuple[PublicKey, ...] = ()
    require_signature: bool = False
    source: str = "no trust policy"

    @property
    def active(self) -> bool:
        return self.require_signature or bool(self.keys)

    @classmethod
    def of(cls, keys: Iterable[KeySource], require_signature: bool = True, source: str = "") -> "TrustPolicy":
        loaded = tuple(k if isinstance(k, PublicKey) else PublicKey.load(k) for k in _expand(keys))
        return cls(loaded, require_signature, source or ", ".join(k.source for k in loaded) or "an empty key list")

    @classmethod
    def from_environment(cls, env: "os._Environ[str] | dict[str, str] | None" = None) -> "TrustPolicy":
        """``EDGEVISION_TRUSTED_KEYS`` (key files or folders, os.pathsep-separated), every ``*.pub`` in
        ``~/.config/edgevision/trust/``, and ``EDGEVISION_REQUIRE_SIGNATURE`` (1/0; default: 1 when any
        key is configured)."""
        env = os.environ if env is None else env
        listed = [p for p in env.get(ENV_TRUSTED_KEYS, "").split(os.pathsep) if p]
        folder = trust_dir()
        sources = listed + ([str(folder)] if folder.is_dir() and any(folder.glob(f"*{PUBLIC_SUFFIX}")) else [])
        require_text = env.get(ENV_REQUIRE, "").strip().lower()
        if require_text not in ("", "0", "1", "true", "false", "yes", "no"):
            raise ArtifactError(f"{ENV_REQUIRE}={require_text!r} is not 1 or 0", f"set {ENV_REQUIRE}=1 or unset it")
        keys = cls.of(sources, source="").keys if sources else ()
        require = require_text in ("1", "true", "yes") or (require_text == "" and bool(keys))
        where = " and ".join(filter(None, [f"{ENV_TRUSTED_KEYS}" if listed else "",
                                            str(folder) if len(sources) > len(listed) else "",
                                            f"{ENV_REQUIRE}={require_text}" if require_text else ""]))
        return cls(keys, require, where or "no trust policy")


def _expand(keys: Iterable[KeySource]) -> list[KeySource]:
    out: list[KeySource] = []
    for key in keys:
        if not isinstance(key, PublicKey) and Path(key).is_dir():
            out += sorted(Path(key).glob(f"*{PUBLIC_SUFFIX}"))
        else:
            out.append(key)
    return out


NO_POLICY = TrustPolicy()
Trust = Union[TrustPolicy, Sequence[KeySource], KeySource, None]


def resolve_trust(trust: Trust) -> TrustPolicy:
    """``load(trust=...)``: None -> the environment's policy; a policy as is; key files/folders ->
    those keys, signatures required."""
    if trust is None:
        return TrustPolicy.from_environment()
    if isinstance(trust, TrustPolicy):
        return trust
    if isinstance(trust, (str, Path, PublicKey)):
        trust = [trust]
    return TrustPolicy.of(trust, require_signature=True, source="the trust argument")


@dataclass
class SignatureStatus:
    signed: bool
    key_id: str | None = None
    checked: bool = False  # the Ed25519 signature was verified
    trusted: bool | None = None  # None: no keys to compare with
    policy: TrustPolicy = field(default_factory=TrustPolicy)
    problem: str = ""  # what the policy would refuse, when not enforced
    subjects: dict[str, str] = field(default_factory=dict)
    predicate: dict[str, Any] = field(default_factory=dict)

    def check_statement(self, manifest: "Manifest", name: str) -> None:
        """The signed statement must describe this manifest: its members and its target."""
        if not self.checked:
            return
        members = {k: v for k, v in self.subjects.items() if k != "manifest.json"}
        if members != manifest.files or self.predicate.get("target") != manifest.target.name:
            raise ArtifactError(f"artifact {name}: its signed statement does not describe its manifest",
                                "it was altered: get it again from whoever signed it")

    def describe(self) -> str:
        if not self.signed:
            text = "unsigned"
            return text + (f" (refused by the trust policy: {self.policy.source})" if self.policy.require_signature
                           else "")
        text = f"{ALGORITHM}, key {self.key_id}"
        if not self.checked:
            return f"{text}: not checked ({self.problem or 'no cryptography package'})"
        text += ": signature holds"
        if self.trusted is None:
            return text + "; no trusted keys configured here"
        return text + ("; key trusted" if self.trusted else f"; key NOT trusted ({self.problem})")


def _malformed(name: str, why: str) -> ArtifactError:
    return ArtifactError(f"artifact {name}: {SIGNATURE_NAME} is malformed ({why})",
                         "it was damaged or forged: get it again from whoever signed it")


def _b64(value: Any, name: str, what: str) -> bytes:
    if not isinstance(value, str):
        raise _malformed(name, f"{what} is not text")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as err:
        raise _malformed(name, f"{what} is not base64") from err


def _parse_bundle(raw: bytes, name: str) -> tuple[bytes, str, bytes, bytes]:
    """(raw public key, key id, statement bytes, signature) from signature.json, shape-checked."""
    data = bounded_loads(raw, f"{SIGNATURE_NAME} of {name}", 1 << 16, 8)
    try:
        material, envelope = data["verificationMaterial"]["publicKey"], data["dsseEnvelope"]
        sigs = envelope["signatures"]
        ok = (data.get("mediaType") == MEDIA_TYPE and material.get("algorithm") == ALGORITHM
              and envelope.get("payloadType") == PAYLOAD_TYPE and isinstance(sigs, list) and len(sigs) == 1)
        hint, keyid = material.get("hint"), sigs[0].get("keyid")
    except (KeyError, TypeError, AttributeError, IndexError) as err:
        raise _malformed(name, f"no {err}") from err
    if not ok:
        raise _malformed(name, "unknown media type, algorithm or payload type, or not exactly one signature")
    public = _b64(material.get("rawBytes"), name, "the public key")
    if len(public) != 32 or hint != key_id(public) or keyid != hint:
        raise _malformed(name, "its key id does not name its public key")
    return public, hint, _b64(envelope.get("payload"), name, "the payload"), _b64(sigs[0].get("sig"), name, "the signature")


def check_signature(raw_signature: bytes | None, raw_manifest: bytes, policy: TrustPolicy, name: str,
                    enforce: bool = True) -> SignatureStatus:
    """Check signature.json against the manifest bytes and the policy; raise on what must be refused.

    A signature that does not hold is refused with or without a policy (it is proof of a change);
    an unsigned or untrusted artifact only under an enforced policy.
    """
    def refuse(status: SignatureStatus, problem: str, fix: str) -> SignatureStatus:
        if enforce:
            raise ArtifactError(f"artifact {name}: {problem} (trust policy: {policy.source})", fix)
        status.problem = problem
        return status

    if raw_signature is None:
        status = SignatureStatus(signed=False, policy=policy)
        if policy.require_signature:
            return refuse(status, "it is not signed, and signed artifacts are required",
                          f"sign it with `edgevision sign {name} --key KEY` by a key this device trusts")
        return status
    public, kid, body, sig = _parse_bundle(raw_signature, name)
    status = SignatureStatus(signed=True, key_id=kid, policy=policy)
    if not crypto_available():
        if policy.active and enforce:
            _crypto()  # raises the one-line install hint
        status.problem = f"cryptography is not installed: {_FIX_INSTALL}"
        log.warning("%s is signed by key %s, not checked: %s", name, kid, status.problem)
        return status
    _, ed25519 = _crypto()
    from cryptography.exceptions import InvalidSignature

    trusted = next((k for k in policy.keys if k.raw == public), None)
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(public).verify(sig, pae(PAYLOAD_TYPE, body))
    except InvalidSignature as err:
        raise ArtifactError(f"artifact {name}: its signature by key {kid} does not hold",
                            "it was changed after it was signed: get it again from whoever signed it") from err
    statement = bounded_loads(body, f"the signed statement of {name}", 1 << 16, 8)
    try:
        subjects = {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}
        predicate = statement["predicate"]
        ok = (statement.get("_type") == STATEMENT_TYPE and statement.get("predicateType") == PREDICATE_TYPE
              and len(subjects) == len(statement["subject"]) and isinstance(predicate, dict))
    except (KeyError, TypeError) as err:
        raise _malformed(name, f"its statement lacks {err}") from err
    if not ok:
        raise _malformed(name, "its statement is not an edgevision artifact statement")
    if subjects.get("manifest.json") != sha256_hex(raw_manifest):
        raise ArtifactError(f"artifact {name}: manifest.json is not the one key {kid} signed",
                            "it was changed after it was signed: get it again from whoever signed it")
    status.checked, status.subjects, status.predicate = True, subjects, predicate
    if policy.keys:
        status.trusted = trusted is not None
        if trusted is None:
            return refuse(status, f"it is signed by key {kid}, which is not among the {len(policy.keys)} trusted key(s)",
                          "add the signer's .pub to the trusted keys if you trust it, or get an artifact signed "
                          "by a trusted key")
    elif policy.require_signature:
        return refuse(status, f"it is signed by key {kid}, but no trusted keys are configured",
                      f"put the signer's .pub in {trust_dir()} or {ENV_TRUSTED_KEYS}")
    return status
