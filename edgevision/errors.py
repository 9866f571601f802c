"""One error type whose message is a single line: what went wrong, then how to fix it."""
from __future__ import annotations


class EdgevisionError(Exception):
    """A user-facing failure. The CLI prints ``str(err)`` on one line and exits non-zero."""

    exit_code = 2

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(problem if not fix else f"{problem} — {fix}")


class ArtifactError(EdgevisionError):
    """The artifact is corrupt, tampered with, foreign or built for something else."""


class TargetError(EdgevisionError):
    """Unknown or malformed target description."""


class BackendUnavailable(EdgevisionError):
    """The backend's runtime or toolchain is not installed here."""


class BackendError(EdgevisionError):
    """The backend's runtime or compiler rejected the model (an operator or attribute it lacks)."""


class InputError(EdgevisionError):
    """Input data (image, tensor, model file) has the wrong shape, type or content."""


class AccuracyGateFailed(EdgevisionError):
    """The compiled model disagrees with the original beyond the threshold."""

    exit_code = 3
