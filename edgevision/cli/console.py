"""Terminal output for the CLI: rich when installed, plain text otherwise (e.g. on a small device)."""
from __future__ import annotations

import contextlib
import sys
from typing import Any, Iterator, Sequence

try:
    import rich.console
    import rich.table
except ImportError:  # pragma: no cover - exercised on devices without rich
    rich = None


class Console:
    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self._out = rich.console.Console(highlight=False) if rich else None
        if self._out and not self._out.is_terminal:
            # Piped output is read by scripts and logs: never wrap or truncate cells there.
            self._out = rich.console.Console(highlight=False, width=200)
        self._err = rich.console.Console(stderr=True, highlight=False) if rich else None

    def print(self, text: str = "") -> None:
        if self._out:
            self._out.print(text, markup=False, soft_wrap=True)
        else:
            print(text)

    def info(self, text: str) -> None:
        if not self.quiet:
            if self._err:
                self._err.print(text, style="dim", markup=False, soft_wrap=True)
            else:
                print(text, file=sys.stderr)

    def error(self, text: str) -> None:
        line = " ".join(text.split())  # the promise is one line
        if self._err:
            self._err.print(f"error: {line}", style="bold red", markup=False, soft_wrap=True)
        else:
            print(f"error: {line}", file=sys.stderr)

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        if self._out:
            table = rich.table.Table(title=title)
            for i, col in enumerate(columns):
                table.add_column(col, no_wrap=i == 0, overflow="fold")
            for row in rows:
                table.add_row(*[str(c) for c in row])
            self._out.print(table)
            return
        widths = [max(len(str(c)) for c in col) for col in zip(columns, *rows)]
        print(title)
        for row in [columns, *rows]:
            print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))

    @contextlib.contextmanager
    def status(self, first: str) -> Iterator[Any]:
        """A spinner whose text the caller updates per step: ``with console.status(..) as step: step('x')``."""
        if self._err and not self.quiet and self._err.is_terminal:
            with self._err.status(first) as live:
                yield lambda msg: (live.update(msg), self.info(f"• {msg}"))
        else:
            self.info(f"• {first}")
            yield lambda msg: self.info(f"• {msg}")
