"""Surprisal improves a regression model of self-paced reading times on the Natural Stories corpus (Futrell et al.
2021), for GPT-3 (davinci) log-probs released with the corpus and for a model scored by psyling.

Target: mean RT per word over participants (meanItemRT, ms). Baseline: word length, log frequency (wordfreq Zipf),
position in the story, and the length and frequency of the two previous words; tested predictors: surprisal (bits)
of the word and of the two previous words (spillover 2). 10-fold cross-validation with whole stories per fold
(the corpus has 10 stories: leave one story out). ΔLL in nats per word. Surprisal improving the fit of reading
times is the standard result on this corpus (e.g. Wilcox et al. 2020, CogSci; Oh & Schuler 2023, TACL); their
numbers come from per-participant data and other regressions, so the expectation here is ΔLL > 0 with p < .05,
and, as Oh & Schuler report, the smaller model fitting better."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import PsylingError
from ..stats.regression import DeltaLL, add_spillover, baseline_predictors, delta_loglik
from ..stimuli.corpora import load_natural_stories
from .registry import Reproduction, above, below

TARGET = "meanItemRT"
LAGS = (1, 2)
BASELINE = ["word_length", "zipf_freq", "word_position"] + [
    f"{c}_prev{lag}" for c in ("word_length", "zipf_freq") for lag in LAGS]
ALPHA = 0.05
MODEL = "smollm2-135m"  # the embedded model scored for the reproduction


def psyling_surprisal(model: Any, root: Path, batch_size: int = 4) -> pd.DataFrame:
    """Score the corpus with ``model`` (a name or a LanguageModel) through ``psyling.run`` and return the corpus
    words table with ``surprisal``, ``surprisal_raw`` (bits) and ``n_tokens`` joined on (item, word_index)."""
    from .. import api

    corpus = load_natural_stories(root)
    result = api.run(model, stimuli=[corpus.stimuli], progress=False, batch_size=batch_size)
    if result.errors:
        raise PsylingError(f"scoring Natural Stories failed: {result.errors[0]}")
    scored = result.words[["item", "word_index", "word", "surprisal", "surprisal_raw", "n_tokens"]]
    joined = corpus.words.merge(scored, on=["item", "word_index"], how="left", suffixes=("", "_scored"),
                                validate="one_to_one", indicator=True)
    unmatched = int((joined["_merge"] != "both").sum()) + len(scored) - len(corpus.words)
    if unmatched or (joined["word"] != joined["word_scored"]).any():
        raise PsylingError(f"psyling's words do not join 1:1 onto the Natural Stories words ({unmatched} unmatched)")
    return joined.drop(columns=["_merge", "word_scored"])


def naturalstories_delta_ll(words: pd.DataFrame, surprisal: str, folds: int = 10, seed: int = 0) -> DeltaLL:
    """ΔLL per word of ``surprisal`` (and its spillover 1-2) on mean RT over the baseline (see module doc)."""
    data = baseline_predictors(words)
    data = add_spillover(data, [surprisal, "word_length", "zipf_freq"], lags=LAGS)
    predictors = [surprisal] + [f"{surprisal}_prev{lag}" for lag in LAGS]
    return delta_loglik(data, TARGET, BASELINE, predictors, folds=folds, seed=seed)


def _figure_names(label: str) -> tuple[str, str]:
    return f"{label} ΔLL (nats/word)", f"{label} ΔLL p-value"


GAIN = f"{MODEL} ΔLL - GPT-3 davinci ΔLL, in GPT-3 standard errors"


def measure(root: Path) -> dict[str, float]:
    """ΔLL and p of the released GPT-3 surprisal and of the embedded model's, and how far the smaller model is ahead."""
    words = psyling_surprisal(MODEL, root)
    fits = {"GPT-3 davinci": naturalstories_delta_ll(words, "gpt3_surprisal"),
            MODEL: naturalstories_delta_ll(words, "surprisal")}
    measured = {}
    for label, fit in fits.items():
        measured.update(zip(_figure_names(label), (fit.delta_ll, fit.p_value)))
    gpt3 = fits["GPT-3 davinci"]
    measured[GAIN] = (fits[MODEL].delta_ll - gpt3.delta_ll) / gpt3.se
    return measured


def _figures() -> tuple:
    figures = []
    for label in ("GPT-3 davinci", MODEL):
        delta_ll, p_value = _figure_names(label)
        figures += [above(delta_ll, 0.0), below(p_value, ALPHA)]
    return (*figures, above(GAIN, 2.0))


REPRODUCTION = Reproduction(
    name="naturalstories-delta-ll",
    citation="Natural Stories (Futrell et al. 2021) mean SPR times: ΔLL of the released GPT-3 surprisal and of "
             f"{MODEL} scored by psyling; the smaller model fits better (Oh & Schuler 2023, TACL)",
    data="naturalstories", figures=_figures(), measure=measure, minutes=2.0)
