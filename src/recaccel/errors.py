"""Errors a user can act on.

Every error raised at a boundary (CLI arguments, data files, artifacts) is a `RecaccelError`
carrying a message that says what is wrong and a hint that says what to do. The CLI prints both
and exits non-zero, never a traceback.
"""

from __future__ import annotations


class RecaccelError(Exception):
    """A failure the user can fix; `hint` says how."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\nHint: {self.hint}" if self.hint else self.message


class UnknownNameError(RecaccelError):
    """A dataset, model or preset name that is not registered."""

    def __init__(self, kind: str, name: str, known: list[str]) -> None:
        super().__init__(
            f"unknown {kind} {name!r}",
            f"choose one of: {', '.join(sorted(known))}",
        )


class DataSourceError(RecaccelError):
    """No source could provide a dataset, and no cache holds it."""


class ChecksumError(RecaccelError):
    """A data file is corrupt or truncated."""


class ArtifactError(RecaccelError):
    """A model artifact is missing a file, corrupt, or of an unknown format version."""


class OutputError(RecaccelError):
    """A result could not be written: the disk full, no permission."""


class ConfigError(RecaccelError):
    """A configuration value is invalid."""
