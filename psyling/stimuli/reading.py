"""What every stimulus reader shares: the reading options, the item-id rule, text cleaning by segmentation.

Item ids (one rule for every reader): the file's own id (an id column or key, e.g. ``id``, ``item``,
``pairID``; Marvin & Linzen's ``condition-idx``; SyntaxGym's ``item_number``) when it has one, else the 1-based
position of the item in the file, blank lines and header rows not counted (the first pair is item "1")."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable

from ..errors import PsylingError
from .segmentation import SEGMENTATION_CHOICES, resolve_segmentation


@dataclass(frozen=True)
class ReaderOptions:
    """How stimulus files are read: ``detokenize`` (SyntaxGym 2020's free-standing " ." and " ,") and
    ``segmentation`` ("auto": detected from the text unless the file's sidecar declares it; "whitespace" or
    "none": declared for every file read, overriding a sidecar)."""
    detokenize: bool = False
    segmentation: str = "auto"

    def __post_init__(self) -> None:
        if self.segmentation not in SEGMENTATION_CHOICES:
            raise PsylingError(f"unknown segmentation {self.segmentation!r} "
                               f"(choose from {', '.join(SEGMENTATION_CHOICES)})")


def segmentation_of(options: ReaderOptions, texts: Iterable[str]) -> tuple[str, str]:
    """(segmentation, "declared" or "detected") of a set whose sentences are ``texts``."""
    return resolve_segmentation(options.segmentation, texts)


def clean_text(text: str, segmentation: str) -> str:
    """A sentence or region as the set stores it: whitespace-segmented text has single spaces between words;
    unsegmented text ("none") is kept as written, only the leading and trailing whitespace removed."""
    return " ".join(text.split()) if segmentation == "whitespace" else text.strip()


def separator(segmentation: str) -> str:
    """What joins a set's regions: a space, or nothing for text written without spaces."""
    return "" if segmentation == "none" else " "


def metadata_text(value: Any) -> str:
    """An item metadata value as a string (JSON values other than strings in their JSON spelling; null -> '')."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
