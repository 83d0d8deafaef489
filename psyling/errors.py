"""Errors that psyling reports to users as one line (no traceback)."""
from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """An exception's message cut to its first line (stripped), or its type's name when it has no message: how
    a library error becomes part of a one-line psyling error."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0].strip()


class PsylingError(Exception):
    """Base class for errors shown to the user as a single line; the CLI exits with code 2."""


class StimulusError(PsylingError):
    """A problem in a stimulus file, located by file, item, condition and field."""

    def __init__(self, message: str, *, file: str | None = None, item: object = None,
                 condition: str | None = None, field: str | None = None) -> None:
        self.file, self.item, self.condition, self.field = file, item, condition, field
        self.reason = message
        where = [f"{k}={v}" for k, v in
                 (("item", item), ("condition", condition), ("field", field)) if v is not None]
        prefix = f"{file}: " if file else ""
        super().__init__(f"{prefix}{' '.join(where)}{': ' if where else ''}{message}")


class ModelError(PsylingError):
    """A model that cannot be located, loaded or used for scoring."""


class AlignmentError(PsylingError):
    """Tokens that cannot be mapped onto the words and regions of a stimulus."""
