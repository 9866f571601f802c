"""Keeping third-party chatter off the user's terminal: the one stdout silencer.

Quantizers, exporters and weight loaders print progress and dumps with ``print()`` (Python's
``sys.stdout``) or from C++ (file descriptor 1). Library code must not print, so those calls run in
:func:`silenced`, and what they said goes to the debug log, where ``--debug`` shows it.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
from typing import Iterator

_MAX_LOGGED = 1 << 16  # a TorchScript IR dump can be megabytes: log its first 64 KiB


@contextlib.contextmanager
def silenced(log: logging.Logger, what: str, *, native: bool = False, stderr: bool = False) -> Iterator[None]:
    """Run the block with ``sys.stdout`` captured (and ``sys.stderr`` with ``stderr=True``).

    ``native=True`` also captures the process's file descriptors 1 (and 2), for output written from C
    or C++; those are process-wide, so other threads' output in the meantime is captured as well.
    Whatever was captured is logged at DEBUG on ``log`` as "<what> output: ...", also when the block raises.
    """
    fds = (1, 2) if stderr else (1,)
    buffer = io.StringIO()
    with tempfile.TemporaryFile() if native else contextlib.nullcontext() as sink:
        try:
            with contextlib.ExitStack() as stack:
                if native:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    saved = [os.dup(fd) for fd in fds]

                    def restore() -> None:
                        for fd, copy in zip(fds, saved):
                            os.dup2(copy, fd)
                            os.close(copy)

                    stack.callback(restore)
                    for fd in fds:
                        os.dup2(sink.fileno(), fd)
                stack.enter_context(contextlib.redirect_stdout(buffer))
                if stderr:
                    stack.enter_context(contextlib.redirect_stderr(buffer))
                yield
        finally:  # the streams (and descriptors) are restored here, before anything is logged
            text = buffer.getvalue()
            if sink is not None:
                sink.seek(0)
                text += sink.read(_MAX_LOGGED).decode("utf-8", "replace")
            if text.strip():
                log.debug("%s output:\n%s", what, text.strip()[:_MAX_LOGGED])
