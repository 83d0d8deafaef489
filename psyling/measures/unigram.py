"""Unigram surprisal of a text from ``wordfreq`` word frequencies: the baseline SLOR subtracts (Lau, Clark &
Lappin 2017, "Grammaticality, acceptability, and probability", Cognitive Science 41).

A text is split into words by ``wordfreq.tokenize`` in the set's language (lower-cased, Unicode-normalised,
punctuation dropped). Scripts written without spaces need wordfreq's optional segmenters (jieba for Chinese,
MeCab for Japanese and Korean: ``pip install 'wordfreq[cjk]'``, not psyling dependencies); without them such a
set's slor is a one-line error. The unigram surprisal is ``-Σ log2 max(word_frequency(w, lang, "best"), FLOOR)``
bits: a word wordfreq does not list gets ``FLOOR`` (1e-8, Zipf 1: the lowest frequency of wordfreq's large lists
and the floor its documentation suggests), as rare as the rarest listed word rather than infinitely surprising.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import version

from ..errors import PsylingError

FLOOR = 1e-8
WORDLIST = "best"


class UnigramError(PsylingError):
    """wordfreq has no word frequencies (or no word segmenter) for a language."""


@dataclass(frozen=True)
class UnigramSurprisal:
    """A text's unigram surprisal in bits, its number of wordfreq words and how many of them got ``FLOOR``."""
    bits: float
    n_words: int
    n_floored: int


def _word_frequency(word: str, language: str) -> float:
    from wordfreq import word_frequency  # imported lazily: only SLOR needs it
    return word_frequency(word, language, WORDLIST)


def _words(text: str, language: str) -> tuple[str, ...]:
    """wordfreq's words of ``text``; UnigramError when wordfreq cannot segment or look up ``language``."""
    from wordfreq import tokenize
    if not isinstance(language, str) or not language.strip():
        raise UnigramError("no language given (a code such as en, de, zh)")
    try:
        _word_frequency("a", language)  # LookupError for a language without a word list, ValueError for a non-code
        return tuple(tokenize(text, language))
    except (LookupError, ValueError):
        raise UnigramError(f"wordfreq has no word frequencies for language {language!r} "
                           "(it needs a code such as en, de, zh)") from None
    except ImportError as exc:
        raise UnigramError(f"wordfreq cannot split {language!r} text into words without the {exc.name} package "
                           "(pip install 'wordfreq[cjk]')") from None


@lru_cache(maxsize=1 << 16)
def unigram_surprisal(text: str, language: str) -> UnigramSurprisal:
    """The unigram surprisal (bits) of ``text`` under wordfreq's frequencies for ``language``."""
    frequencies = [_word_frequency(word, language) for word in _words(text, language)]
    bits = -sum(math.log2(max(f, FLOOR)) for f in frequencies)
    return UnigramSurprisal(bits, len(frequencies), sum(f < FLOOR for f in frequencies))


def unigram_settings() -> dict:
    """What the manifest records of the unigram model."""
    return {"source": "wordfreq", "version": version("wordfreq"), "wordlist": WORDLIST, "floor": FLOOR,
            "unit": "wordfreq words (wordfreq.tokenize: lower-cased, punctuation dropped)"}
