"""How a set's text divides into words: detected from the script, or declared by the user.

Scripts written without spaces between words (Han, kana, Thai, Lao, Khmer, Myanmar, Tibetan) have no
whitespace words; such sets are aligned by region only (segmentation "none"), and their regions are joined
without a separator."""
from __future__ import annotations

from typing import Iterable, Optional

SEGMENTATION_CHOICES = ("auto", "whitespace", "none")

# (first, last) code points of scripts written without spaces between words
_UNSPACED_RANGES = (
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x0F00, 0x0FFF),  # Tibetan
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0x20000, 0x2FA1F),  # CJK extensions B-F and compatibility supplement
)


def is_unspaced_char(ch: str) -> bool:
    """Is ``ch`` a letter of a script written without spaces between words?"""
    code = ord(ch)
    return any(lo <= code <= hi for lo, hi in _UNSPACED_RANGES)


def detect_segmentation(texts: Iterable[str]) -> str:
    """"none" when most letters of ``texts`` belong to scripts written without spaces, else "whitespace"."""
    unspaced = letters = 0
    for text in texts:
        if text.isascii():  # no ASCII letter belongs to a script written without spaces
            letters += sum(ch.isalpha() for ch in text)
            continue
        for ch in text:
            if ch.isalpha():
                letters += 1
                unspaced += not ch.isascii() and is_unspaced_char(ch)
    return "none" if letters and unspaced * 2 > letters else "whitespace"


def resolve_segmentation(declared: Optional[str], texts: Iterable[str]) -> tuple[str, str]:
    """(segmentation, how it was decided: "declared" or "detected"); ``declared`` None or "auto" detects."""
    if declared in (None, "auto"):
        return detect_segmentation(texts), "detected"
    return declared, "declared"
