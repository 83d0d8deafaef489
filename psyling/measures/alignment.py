"""Map tokens onto whitespace-delimited words, and words onto regions, by character offsets."""
from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass

from ..errors import AlignmentError

_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class Alignment:
    """``token_word[t]``: word index of token t; ``word_region[w]``: region index (into the set's regions)."""
    words: list[str]
    word_spans: list[tuple[int, int]]
    token_word: list[int]
    word_region: list[int]


def region_spans(regions: tuple[str, ...], separator: str = " ") -> list[tuple[int, int, int]]:
    """(start, end, region index) of each non-empty region in the text joined by ``separator``."""
    spans, pos = [], 0
    for index, text in enumerate(regions):
        if text:
            spans.append((pos, pos + len(text), index))
            pos += len(text) + len(separator)
    return spans


def align(text: str, offsets: list[tuple[int, int]], regions: tuple[str, ...], region_names: tuple[str, ...],
          where: str, separator: str = " ", segmentation: str = "whitespace") -> Alignment:
    """Align tokens (character offsets into ``text``) to words and regions; a token that straddles two
    words (hence possibly a region boundary) is an AlignmentError naming both. With segmentation "none"
    (scripts without spaces) each region is one unit in place of words."""
    reg_spans = region_spans(regions, separator)
    if segmentation == "none":
        spans = [(s, e) for s, e, _ in reg_spans]
        word_region = [idx for _, _, idx in reg_spans]
    else:
        spans = [m.span() for m in _WORD.finditer(text)]
        word_region = [next(idx for s, e, idx in reg_spans if s <= ws < e) for ws, _ in spans]
    words = [text[s:e] for s, e in spans]
    starts = [s for s, _ in spans]

    def word_at(pos: int) -> int:
        return max(bisect_right(starts, pos) - 1, 0)

    token_word = []
    for s, e in offsets:
        chars = [i for i in range(s, e) if not text[i].isspace()]
        if not chars:
            if e > s:  # whitespace: belongs to the word that starts after it
                token_word.append(min(bisect_left(starts, s), len(words) - 1))
            else:  # zero-width (e.g. a byte of a multi-byte character): the previous token's word
                token_word.append(token_word[-1] if token_word else word_at(s))
            continue
        first, last = word_at(chars[0]), word_at(chars[-1])
        if first != last:
            names = f"{region_names[word_region[first]]}|{region_names[word_region[last]]}"
            raise AlignmentError(f"{where}: token {text[s:e]!r} spans words {words[first]!r} and {words[last]!r} "
                                 f"(regions {names}); region and word boundaries must fall between tokens")
        token_word.append(first)
    missing = sorted(set(range(len(words))) - set(token_word))
    if missing:
        raise AlignmentError(f"{where}: no token covers word {words[missing[0]]!r}")
    return Alignment(words, spans, token_word, word_region)
