"""A str-valued Enum base for the names edgevision prints and stores (stop reasons, source kinds, ...).

Members compare equal to their strings, and print, format and JSON-encode as their value on every
supported Python, so outputs stay what they were when these were plain strings (3.10 has no
``enum.StrEnum``; 3.12 changed ``format()`` of ``(str, Enum)`` members to the member's name).
"""
from __future__ import annotations

from enum import Enum


class StrEnum(str, Enum):
    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)
