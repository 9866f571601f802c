"""The `edgevision` command. Each subcommand is one module in ``commands/`` exposing ``register``."""
from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import pkgutil
import sys
from pathlib import Path
from typing import Any, NoReturn

from .. import __version__
from ..errors import EdgevisionError, InputError
from ..signals import Terminated, terminate_like_interrupt
from . import commands
from .console import Console


class UsageError(EdgevisionError):
    """A command line argparse rejects; one line like every other mistake."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse prints a usage block and exits; here its message becomes the usual one-line error."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, f"see `{self.prog} --help`")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="edgevision", description=__doc__.split(".")[0])
    parser.add_argument("--version", action="version", version=f"edgevision {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks and debug logs")
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors and results")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=ArgumentParser)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"{commands.__name__}.{info.name}").register(sub)
    return parser


def quiet_opencv() -> None:
    """OpenCV and FFmpeg print their own warnings (unreadable files, unopenable sources); our one line says it."""
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    if "cv2" in sys.modules:
        cv2 = sys.modules["cv2"]
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


def refuse_special_paths(args: argparse.Namespace) -> None:
    """A named pipe, socket or device given where a file is expected would block open() without end.

    (``stream --source`` takes pipes on purpose: it is a string, and the stream opens it with a timeout.)
    """
    from ..files import kind_of_special_file

    for name, value in vars(args).items():
        for path in value if isinstance(value, list) else [value]:
            if isinstance(path, Path):
                special = kind_of_special_file(path)
                if special:
                    flag = name.replace("_", "-")
                    raise InputError(f"{path} ({flag}) is {special}, not a regular file",
                                     "pass a file; only `stream --source` reads from pipes and cameras")


def _disk_error(err: OSError) -> str:
    disk_full = err.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
    hint = " — free some disk space or write elsewhere" if disk_full else " — check the path and permissions"
    return f"{err.strerror or err}: {err.filename or ''}{hint}".replace(": —", " —")


def main(argv: list[str] | None = None) -> int:
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    if not debug:
        quiet_opencv()
    console = Console(quiet=False)
    args: Any = None
    with terminate_like_interrupt():
        try:
            args = build_parser().parse_args(argv)
            logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                                format="%(levelname)s %(name)s: %(message)s")
            console = Console(quiet=args.quiet)
            refuse_special_paths(args)
            return int(args.handler(args, console) or 0)
        except EdgevisionError as err:
            if debug:
                raise
            console.error(str(err))
            return err.exit_code
        except Terminated as err:
            what = "interrupted" if err.name == "SIGINT" else f"stopped by {err.name}"
            console.error(f"{what} — nothing was written; run the command again to finish")
            return err.exit_code
        except KeyboardInterrupt:
            console.error("interrupted — nothing was written; run the command again to finish")
            return 130
        except MemoryError:
            console.error("out of memory — close other programs or use a smaller model/batch")
            return 2
        except OSError as err:
            if debug:
                raise
            console.error(_disk_error(err))
            return 2


if __name__ == "__main__":
    sys.exit(main())
