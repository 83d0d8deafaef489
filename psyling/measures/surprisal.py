"""Token, word and region surprisal tables (bits) from token scores.

Word surprisal follows Pimentel & Meister (2024): for a word whose first token is word-initial (in the BOW
set), add log P(BOW or EOS) before it; for the first word of a text (no leading space), add log P(not BOW)
before it; always subtract log P(BOW or EOS) after its last token. ``surprisal_raw`` is the plain sum of token
surprisals. Regions sum their words. A token crossing a region boundary counts in one region (alignment's
``BOUNDARY_POLICY``; ``crosses_region`` in the tokens table); a region or word left without a token of its own
has NaN surprisal, an empty region 0."""
from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pandas as pd

from ..errors import AlignmentError
from ..models.scoring import TokenScores
from ..models.vocab import WordMarkers
from ..stimuli.schema import StimulusSet
from .alignment import align

LN2 = math.log(2.0)
TOKEN_COLUMNS = ["set", "item", "condition", "token_index", "token_id", "token", "char_start", "char_end",
                 "word_index", "region", "crosses_region", "logprob", "surprisal"]
WORD_COLUMNS = ["set", "item", "condition", "word_index", "word", "region", "surprisal", "surprisal_raw",
                "n_tokens"]
REGION_COLUMNS = ["set", "item", "condition", "region_number", "region", "text", "surprisal", "surprisal_raw",
                  "n_tokens"]


def token_contributions(scores: TokenScores, token_word: list[int], markers: WordMarkers, where: str,
                        correct: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(corrected, raw) surprisal in bits carried by each token. Raw is the token's own surprisal; the
    corrected value adds the word-start term to a word's first token and the word-end term to its last, so
    that summing over a word gives its corrected surprisal and summing over a region splits words that
    span regions at their tokens. ``correct=False`` (or a tokenizer without word-boundary tokens) gives raw.
    A token with no score (NaN: a first token with nothing before it, minicons convention) contributes 0."""
    raw = np.nan_to_num(-scores.logprob / LN2, nan=0.0)
    if markers.family is None or not correct:  # the correction is undefined without word boundaries
        return raw.copy(), raw
    corrected = -scores.logprob.copy()
    first_tok = {w: t for t, w in reversed(list(enumerate(token_word)))}
    last_tok = {w: t for t, w in enumerate(token_word)}
    for w, t0 in first_tok.items():
        if bool(markers.bow[scores.token_ids[t0]]):
            corrected[t0] += scores.log_bow[t0]
        elif t0 == 0 and not scores.request.prefix:
            corrected[t0] += scores.log_nonbow_first
        else:
            raise AlignmentError(f"{where}: word {w} begins with a token that is not word-initial "
                                 f"({scores.token_ids[t0]}); the word correction is undefined here")
        corrected[last_tok[w]] -= scores.log_bow[last_tok[w] + 1]
    return corrected / LN2, raw


def word_surprisals(scores: TokenScores, token_word: list[int], n_words: int, markers: WordMarkers,
                    where: str, correct: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(corrected, raw) surprisal in bits per word."""
    corrected, raw = token_contributions(scores, token_word, markers, where, correct)
    return (np.bincount(token_word, weights=corrected, minlength=n_words),
            np.bincount(token_word, weights=raw, minlength=n_words))


def _absorbed_as_nan(values: np.ndarray, n_tokens: np.ndarray) -> list[float]:
    """Per-unit values; NaN for a unit without a token of its own (held by a token crossing a region boundary)."""
    return np.where(n_tokens > 0, values, np.nan).tolist()


def surprisal_tables(stim: StimulusSet, scores: dict[tuple, TokenScores], markers: WordMarkers,
                     tokenizer, correct: bool = True) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Tidy tokens, words and regions tables for one set; ``scores`` is keyed by (set, item, condition).
    ``correct=False``: no word correction (``surprisal`` equals ``surprisal_raw``)."""
    tok, wrd, reg = defaultdict(list), defaultdict(list), defaultdict(list)
    for item in stim.items:
        for cname in stim.conditions:
            cond = item.conditions[cname]
            sc = scores[(stim.name, item.id, cname)]
            where = f"set={stim.name} item={item.id} condition={cname}"
            al = align(cond, sc.offsets, stim.regions, where, stim.segmentation)
            tok_corrected, tok_raw = token_contributions(sc, al.token_word, markers, where,
                                                         correct=correct and stim.segmentation == "whitespace")
            n_words = len(al.words)
            corrected = np.bincount(al.token_word, weights=tok_corrected, minlength=n_words)
            raw = np.bincount(al.token_word, weights=tok_raw, minlength=n_words)
            key = {"set": stim.name, "item": item.id, "condition": cname}
            n = len(sc.token_ids)
            for col, val in key.items():
                tok[col].extend([val] * n)
            tok["token_index"].extend(range(n))
            tok["token_id"].extend(sc.token_ids)
            tok["token"].extend(tokenizer.convert_ids_to_tokens(sc.token_ids))
            tok["char_start"].extend(s for s, _ in sc.offsets)
            tok["char_end"].extend(e for _, e in sc.offsets)
            tok["word_index"].extend(al.token_word)
            tok["region"].extend(stim.regions[r] for r in al.token_region)
            tok["crosses_region"].extend(t in al.crossing for t in range(n))
            tok["logprob"].extend(sc.logprob.tolist())
            tok["surprisal"].extend((-sc.logprob / LN2).tolist())
            n_tokens = np.bincount(al.token_word, minlength=n_words)
            for col, val in key.items():
                wrd[col].extend([val] * len(al.words))
            wrd["word_index"].extend(range(len(al.words)))
            wrd["word"].extend(al.words)
            wrd["region"].extend(stim.regions[r] for r in al.word_region)
            wrd["surprisal"].extend(_absorbed_as_nan(corrected, n_tokens))
            wrd["surprisal_raw"].extend(_absorbed_as_nan(raw, n_tokens))
            wrd["n_tokens"].extend(n_tokens.tolist())
            n_regions = len(stim.regions)
            region_corrected = np.bincount(al.token_region, weights=tok_corrected, minlength=n_regions)
            region_raw = np.bincount(al.token_region, weights=tok_raw, minlength=n_regions)
            region_tokens = np.bincount(al.token_region, minlength=n_regions)
            for r, (name, text) in enumerate(zip(stim.regions, cond.regions)):
                for col, val in key.items():
                    reg[col].append(val)
                reg["region_number"].append(r + 1)
                reg["region"].append(name)
                reg["text"].append(text)
                absorbed = bool(text) and not region_tokens[r]  # its characters went to a crossing token
                reg["surprisal"].append(math.nan if absorbed else float(region_corrected[r]))
                reg["surprisal_raw"].append(math.nan if absorbed else float(region_raw[r]))
                reg["n_tokens"].append(int(region_tokens[r]))
    return (pd.DataFrame(tok, columns=TOKEN_COLUMNS), pd.DataFrame(wrd, columns=WORD_COLUMNS),
            pd.DataFrame(reg, columns=REGION_COLUMNS))
