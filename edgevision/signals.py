"""SIGTERM and SIGHUP handled like Ctrl-C, so that every ``finally`` and ``with`` block gets to clean up.

systemd stops a service with SIGTERM and a closed terminal sends SIGHUP; by default either kills
Python at once, leaving temporary files, unpacked payloads and half-written outputs behind. Inside
:func:`terminate_like_interrupt` they raise :class:`Terminated`, a ``KeyboardInterrupt``, in the main
thread instead: code that already handles Ctrl-C (the stream finalising its outputs, the atomic
writers removing their temporary files, ``TemporaryDirectory``) handles them the same way.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

HANDLED = tuple(s for s in (getattr(signal, n, None) for n in ("SIGINT", "SIGTERM", "SIGHUP")) if s is not None)


class Terminated(KeyboardInterrupt):
    """Raised in the main thread for SIGINT, SIGTERM or SIGHUP; ``exit_code`` is the shell's 128 + N."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.name = signal.Signals(signum).name
        super().__init__(self.name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@contextlib.contextmanager
def terminate_like_interrupt(signals: tuple[int, ...] = HANDLED) -> Iterator[None]:
    """Within the block, the first of ``signals`` raises Terminated; later ones are ignored until the
    block is left, so that the clean-up the first one started is not itself cut short.

    Outside the main thread (where Python cannot install handlers) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        for sig in signals:
            signal.signal(sig, signal.SIG_IGN)
        raise Terminated(signum)

    previous = {sig: signal.getsignal(sig) for sig in signals}
    for sig in signals:
        if previous[sig] != signal.SIG_IGN:  # nohup and friends asked for this signal to be ignored
            signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
