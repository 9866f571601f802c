"""The `edgevision` command. Each subcommand is one module in ``commands/`` exposing ``register``."""
from __future__ import annotations

import argparse
import errno
import importlib
import logging
import pkgutil
import sys

from .. import __version__
from ..errors import EdgevisionError
from . import commands
from .console import Console


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgevision", description=__doc__.split(".")[0])
    parser.add_argument("--version", action="version", version=f"edgevision {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks and debug logs")
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors and results")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"{commands.__name__}.{info.name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    console = Console(quiet=args.quiet)
    try:
        return int(args.handler(args, console) or 0)
    except EdgevisionError as err:
        if args.debug:
            raise
        console.error(str(err))
        return err.exit_code
    except KeyboardInterrupt:
        console.error("interrupted")
        return 130
    except MemoryError:
        console.error("out of memory — close other programs or use a smaller model/batch")
        return 2
    except OSError as err:
        if args.debug:
            raise
        disk_full = err.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
        hint = " — free some disk space or write elsewhere" if disk_full else " — check the path and permissions"
        console.error(f"{err.strerror or err}: {err.filename or ''}{hint}".replace(": —", " —"))
        return 2


if __name__ == "__main__":
    sys.exit(main())
