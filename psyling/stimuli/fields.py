"""Type checks for the fields of parsed stimulus files (JSON, YAML): each wrong type is a one-line
StimulusError naming the file, item, condition and field, and the JSON type that was found."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Optional

from ..errors import StimulusError


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type (``true`` is a boolean, not a number)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


@dataclass(frozen=True)
class Where:
    """Where a field sits: the file, and the item and condition when there are ones."""
    file: str
    item: Optional[str] = None
    condition: Optional[str] = None

    def at(self, item: Optional[str] = None, condition: Optional[str] = None) -> "Where":
        return replace(self, item=item if item is not None else self.item,
                       condition=condition if condition is not None else self.condition)

    def error(self, message: str, field: str) -> StimulusError:
        return StimulusError(message, file=self.file, item=self.item, condition=self.condition, field=field)

    def wrong(self, value: Any, want: str, field: str) -> StimulusError:
        return self.error(f"must be {want}, got {json_type(value)}", field)


def string(value: Any, where: Where, field: str, nonempty: bool = True) -> str:
    """A string (non-empty unless ``nonempty`` is False)."""
    if not isinstance(value, str):
        raise where.wrong(value, "a string", field)
    if nonempty and not value.strip():
        raise where.error("must not be empty", field)
    return value


def optional_string(value: Any, where: Where, field: str) -> str:
    """A string that may be absent or null ("")."""
    return "" if value is None else string(value, where, field, nonempty=False)


def integer(value: Any, where: Where, field: str) -> int:
    """An integer (a boolean or a number with a fraction is refused)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise where.wrong(value, "an integer", field)
    return value


def mapping(value: Any, where: Where, field: str) -> dict:
    if not isinstance(value, dict):
        raise where.wrong(value, "an object", field)
    return value


def array(value: Any, where: Where, field: str) -> list:
    if not isinstance(value, list):
        raise where.wrong(value, "an array", field)
    return value


def string_list(value: Any, where: Where, field: str) -> list[str]:
    """An array of non-empty strings."""
    for k, entry in enumerate(array(value, where, field), start=1):
        if not isinstance(entry, str):
            raise where.error(f"entry {k} must be a string, got {json_type(entry)}", field)
        if not entry.strip():
            raise where.error(f"entry {k} is empty", field)
    return value
