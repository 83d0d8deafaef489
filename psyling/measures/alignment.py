"""Map tokens onto whitespace-delimited words and onto regions, by character offsets."""
from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass

from ..errors import AlignmentError
from ..stimuli.schema import Condition

_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class Alignment:
    """``token_word[t]`` and ``token_region[t]``: word and region (index into the set's regions) of token t;
    ``word_region[w]``: region of the word's first character. A word spans two regions only where a region
    is attached to the previous one without a space (e.g. detokenized punctuation). ``crossing``: the tokens
    whose characters lie in two regions, each attributed to one of them (see :func:`align`)."""
    words: list[str]
    word_spans: list[tuple[int, int]]
    token_word: list[int]
    token_region: list[int]
    word_region: list[int]
    crossing: tuple[int, ...] = ()


def region_spans(cond: Condition) -> list[tuple[int, int, int]]:
    """(start, end, region index) of each non-empty region in ``cond.text``."""
    spans, pos = [], 0
    for index, text in enumerate(cond.regions):
        if text:
            if spans:
                pos += 0 if index in cond.attached else len(cond.separator)
            spans.append((pos, pos + len(text), index))
            pos += len(text)
    return spans


BOUNDARY_POLICY = ("a token whose characters lie in two regions counts in the region of its last character "
                   "(its probability is known only where it ends); a region left without a token of its own has "
                   "NaN surprisal; counted per set")


def align(cond: Condition, offsets: list[tuple[int, int]], region_names: tuple[str, ...], where: str,
          segmentation: str = "whitespace") -> Alignment:
    """Align tokens (character offsets into ``cond.text``) to words and regions. With segmentation "none"
    (scripts without spaces) each region is one unit in place of words. A token that straddles a region
    boundary follows ``BOUNDARY_POLICY`` (its index is listed in ``crossing``); a region whose characters are
    all inside such tokens then has no token of its own. A token that straddles two whitespace words is an
    AlignmentError (the word correction is undefined there)."""
    text = cond.text
    reg_spans = region_spans(cond)
    reg_starts = [s for s, _, _ in reg_spans]

    def region_at(pos: int) -> int:
        return reg_spans[max(bisect_right(reg_starts, pos) - 1, 0)][2]

    by_region = segmentation == "none"
    spans = [(s, e) for s, e, _ in reg_spans] if by_region else [m.span() for m in _WORD.finditer(text)]
    words = [text[s:e] for s, e in spans]
    starts = [s for s, _ in spans]
    word_region = [region_at(s) for s, _ in spans]
    unit_of_region = {r: w for w, r in enumerate(word_region)}

    def word_at(pos: int) -> int:
        return max(bisect_right(starts, pos) - 1, 0)

    token_word, token_region, crossing = [], [], []
    for t, (s, e) in enumerate(offsets):
        chars = [i for i in range(s, e) if not text[i].isspace()]
        if not chars:
            if e > s:  # whitespace: belongs to the word that starts after it
                w = min(bisect_left(starts, s), len(words) - 1)
                token_word.append(w)
                token_region.append(word_region[w])
            else:  # zero-width (e.g. a byte of a multi-byte character): the previous token's word
                token_word.append(token_word[-1] if token_word else word_at(s))
                token_region.append(token_region[-1] if token_region else word_region[token_word[-1]])
            continue
        first, last = word_at(chars[0]), word_at(chars[-1])
        region = region_at(chars[-1])
        if region_at(chars[0]) != region_at(chars[-1]):
            crossing.append(t)
        if by_region:
            first = last = unit_of_region[region]
        if first != last:
            raise AlignmentError(f"{where}: token {text[s:e]!r} spans words {words[first]!r} and {words[last]!r}; "
                                 f"word boundaries must fall between tokens")
        token_word.append(first)
        token_region.append(region)
    _check_covered(text, spans, offsets, set(token_word), where)
    return Alignment(words, spans, token_word, token_region, word_region, tuple(crossing))


def _check_covered(text: str, spans: list[tuple[int, int]], offsets: list[tuple[int, int]], has_token: set[int],
                   where: str) -> None:
    """Every word has a token, or (when a token crossing a region boundary holds it) every character of it
    lies inside some token."""
    covered = bytearray(len(text))
    for s, e in offsets:
        covered[s:e] = b"\x01" * (e - s)
    for w, (s, e) in enumerate(spans):
        if w not in has_token and any(not covered[i] and not text[i].isspace() for i in range(s, e)):
            raise AlignmentError(f"{where}: no token covers word {text[s:e]!r}")
