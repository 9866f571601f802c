"""edgevision keys new NAME | keys id KEYFILE"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..console import Console


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("keys", help="make and inspect Ed25519 signing keys",
                       description="`keys new NAME` writes NAME.key (private, mode 0600) and NAME.pub (give this "
                                   "to devices) into ~/.config/edgevision/keys/ or --dir.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    new = actions.add_parser("new", help="make a key pair")
    new.add_argument("name", help="a plain name, e.g. ci-2026")
    new.add_argument("--dir", type=Path, help="folder for NAME.key and NAME.pub (default ~/.config/edgevision/keys)")
    new.add_argument("--passphrase", action="store_true",
                     help="encrypt the private key (passphrase from EDGEVISION_KEY_PASSPHRASE, or asked twice)")
    new.set_defaults(handler=run_new)
    show = actions.add_parser("id", help="print the key id of a .pub or .key file")
    show.add_argument("key", help="NAME, NAME.pub or NAME.key")
    show.set_defaults(handler=run_id)


def run_new(args: argparse.Namespace, console: Console) -> int:
    from ...artifact.signing import generate_key_pair, keys_dir
    from ...errors import InputError
    from ..signing import passphrase

    secret = None
    if args.passphrase:
        secret = passphrase("passphrase for the new key: ", confirm=True)
        if not secret:
            raise InputError("--passphrase needs a passphrase", "set EDGEVISION_KEY_PASSPHRASE or run in a terminal")
    private, public, kid = generate_key_pair(args.name, args.dir or keys_dir(), secret)
    console.print(f"key {kid}: private {private} (keep it secret{', passphrase-protected' if secret else ''}), "
                  f"public {public} (give it to devices)")
    if not secret:
        console.info("note: the private key is not passphrase-protected (--passphrase protects it)")
    return 0


def run_id(args: argparse.Namespace, console: Console) -> int:
    from ...artifact.signing import PUBLIC_SUFFIX, PublicKey, keys_dir

    path = Path(args.key)
    if not path.is_file():
        path = keys_dir() / f"{args.key}{PUBLIC_SUFFIX}"
    if path.suffix == ".key":
        from ..signing import load_signing_key

        console.print(load_signing_key(str(path)).key_id)
        return 0
    console.print(PublicKey.load(path).key_id)
    return 0
