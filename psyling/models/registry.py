"""Which scorer a model gets (a registry keyed by the model's objective), and the invariance check every run
records: a sample re-scored by the scorer's reference path (one sequence at a time)."""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from .loading import LanguageModel
from .masked import MaskedScorer, is_masked_lm
from .options import ScoringOptions
from .scorer import ScoreRequest, Scorer, TokenScores
from .scoring import CausalScorer

SCORERS: dict[str, Callable[..., Scorer]] = {"causal": CausalScorer, "masked": MaskedScorer}
INVARIANCE_SAMPLE = 8
INVARIANCE_TOLERANCE_BITS = 1e-4


def objective(lm: LanguageModel) -> str:
    """"masked" for a masked LM (BERT, RoBERTa), else "causal"."""
    return "masked" if is_masked_lm(lm.model) else "causal"


def make_scorer(lm: LanguageModel, options: ScoringOptions = ScoringOptions(), progress: bool = True) -> Scorer:
    """The scorer registered for the model's objective, with these options."""
    return SCORERS[objective(lm)](lm, options, progress=progress)


def invariance_check(scorer: Scorer, requests: list[ScoreRequest], scores: dict[Any, TokenScores]) -> dict[str, Any]:
    """Re-score a sample on the scorer's reference path (one sequence at a time) and report the largest
    token-level difference from ``scores`` (key -> the run's scores) in bits, with the log-probability of that
    token. The sample is the shortest requests: the most padded in their batches, and cheap for long texts."""
    sample = sorted(requests, key=lambda r: len(r.prefix) + len(r.text))[:INVARIANCE_SAMPLE]
    reference, run_path = scorer.reference()
    alone = reference.score(sample, progress=False)
    diff, logprob = 0.0, float("nan")
    for a in alone:
        gaps = np.abs(a.logprob - scores[a.request.key].logprob)
        if np.isfinite(gaps).any() and np.nanmax(gaps) > diff:
            diff, logprob = float(np.nanmax(gaps)), float(a.logprob[np.nanargmax(gaps)])
    bits = diff / math.log(2)
    return {"n_sequences": len(sample), "compared": f"{run_path} vs one sequence at a time",
            "max_abs_diff_bits": bits, "at_token_logprob_nats": logprob,
            "passed": bits <= INVARIANCE_TOLERANCE_BITS}
