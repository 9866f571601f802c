"""argparse ``type=`` functions: a bad number is refused at parse time with one line naming the bound."""
from __future__ import annotations

import argparse
from typing import Callable


def _number(kind: type, low: float | None, high: float | None = None, *, low_open: bool = False,
            what: str = "") -> Callable[[str], float]:
    noun = "a whole number" if kind is int else "a number"
    if low is not None and high is not None:
        bound = f"between {low:g} and {high:g}"
    elif low is not None:
        bound = f"{'>' if low_open else '>='} {low:g}"
    else:
        bound = ""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}{' ' + bound if bound else ''}") from None
        if value != value or (low is not None and (value < low or (low_open and value == low))) or \
                (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {noun} {bound}{what}, not {text}")
        return value

    parse.__name__ = noun.split()[-1]  # argparse names the type in some messages
    return parse


positive_int = _number(int, 1)
non_negative_int = _number(int, 0)
positive_float = _number(float, 0, low_open=True)
non_negative_float = _number(float, 0)
fraction = _number(float, 0, 1)
