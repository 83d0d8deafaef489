"""Reproduction: surprisal improves a regression model of self-paced reading times on the Natural Stories corpus
(Futrell et al. 2021), for GPT-3 (davinci) log-probs released with the corpus and for a model scored by psyling.

Target: mean RT per word over participants (meanItemRT, ms). Baseline: word length, log frequency (wordfreq Zipf),
position in the story, and the length and frequency of the two previous words; tested predictors: surprisal (bits)
of the word and of the two previous words (spillover 2). 10-fold cross-validation with whole stories per fold
(the corpus has 10 stories: leave one story out). ΔLL in nats per word. Surprisal improving the fit of reading
times is the standard result on this corpus (e.g. Wilcox et al. 2020, CogSci; Oh & Schuler 2023, TACL); their
numbers come from per-participant data and other regressions, so the expectation here is ΔLL > 0 with p < .05.

Usage: python3 analyses/naturalstories_delta_ll.py [--data-root PATH] [--model smollm2-135m] [--no-model]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import pandas as pd

import psyling
from psyling.errors import PsylingError
from psyling.stats.regression import DeltaLL, add_spillover, baseline_predictors, delta_loglik
from psyling.stimuli.batteries import data_root
from psyling.stimuli.corpora import load_natural_stories

TARGET = "meanItemRT"
LAGS = (1, 2)
BASELINE = ["word_length", "zipf_freq", "word_position"] + [
    f"{c}_prev{lag}" for c in ("word_length", "zipf_freq") for lag in LAGS]
ALPHA = 0.05


def psyling_surprisal(model: Any, root: Path, batch_size: int = 4) -> pd.DataFrame:
    """Score the corpus with ``model`` (a name or a LanguageModel) through ``psyling.run`` and return the corpus
    words table with ``surprisal``, ``surprisal_raw`` (bits) and ``n_tokens`` joined on (item, word_index)."""
    corpus = load_natural_stories(root)
    result = psyling.run(model, stimuli=[corpus.stimuli], progress=False, batch_size=batch_size)
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


def _row(label: str, fit: DeltaLL) -> str:
    slopes = ", ".join(f"{fit.coefficients[c]:.2f}" for c in fit.predictors)
    ok = fit.delta_ll > 0 and fit.p_value < ALPHA
    return (f"{label:<16} {fit.n:>6} {fit.n_dropped:>4} {fit.delta_ll:>8.4f} {fit.se:>7.4f} {fit.p_value:>8.2g} "
            f"{fit.delta_ll_in_sample:>8.4f}  [{slopes}]  > 0, p < {ALPHA}  {'yes' if ok else 'NO'}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", "--data", type=Path, default=None,
                        help="folder of published datasets (default: PSYLING_DATA or ../shared/data)")
    parser.add_argument("--model", default="smollm2-135m", help="model scored by psyling (default smollm2-135m)")
    parser.add_argument("--no-model", action="store_true", help="only the released GPT-3 surprisal")
    args = parser.parse_args(argv)
    root = args.data_root or data_root()
    fits = {"GPT-3 davinci": naturalstories_delta_ll(load_natural_stories(root).words, "gpt3_surprisal")}
    if not args.no_model:
        fits[args.model] = naturalstories_delta_ll(psyling_surprisal(args.model, root), "surprisal")
    print(f"Natural Stories: ΔLL per word (nats) on {TARGET}, leave-one-story-out CV, surprisal + spillover 1-2")
    print(f"{'surprisal':<16} {'n':>6} {'drop':>4} {'ΔLL':>8} {'SE':>7} {'p':>8} {'in-samp':>8}  "
          f"[ms/bit lag 0, 1, 2]  expected")
    for label, fit in fits.items():
        print(_row(label, fit))
    return 0 if all(f.delta_ll > 0 and f.p_value < ALPHA for f in fits.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
