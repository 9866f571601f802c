"""Key handling shared by `keys`, `sign`, `compile --sign` and `verify --key`: find a key, ask for its passphrase."""
from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path

from ..errors import InputError


def passphrase(prompt: str, confirm: bool = False) -> bytes | None:
    """EDGEVISION_KEY_PASSPHRASE, else asked on the terminal; None when neither is there."""
    from ..artifact.signing import ENV_PASSPHRASE

    if os.environ.get(ENV_PASSPHRASE):
        return os.environ[ENV_PASSPHRASE].encode("utf-8")
    if not sys.stdin.isatty():
        return None
    first = getpass.getpass(prompt)
    if confirm and getpass.getpass("again: ") != first:
        raise InputError("the two passphrases differ", "type the same passphrase twice")
    return first.encode("utf-8") or None


def key_path(name: str) -> Path:
    """A path to a .key file, or a NAME from `edgevision keys new NAME` (in ~/.config/edgevision/keys/)."""
    from ..artifact.signing import PRIVATE_SUFFIX, keys_dir

    path = Path(name)
    if path.is_file():
        return path
    named = keys_dir() / f"{name}{PRIVATE_SUFFIX}"
    if named.is_file():
        return named
    raise InputError(f"no private key {name} (neither a file nor {named})",
                     "make one with `edgevision keys new NAME`, or pass the path of a .key file")


def load_signing_key(name: str):
    """The SigningKey for --sign/--key NAME, asking for the passphrase only when the key has one."""
    from ..artifact.signing import SigningKey

    path = key_path(name)
    encrypted = b"ENCRYPTED" in path.read_bytes()[:64]
    return SigningKey.load(path, passphrase(f"passphrase for {path.name}: ") if encrypted else None)
