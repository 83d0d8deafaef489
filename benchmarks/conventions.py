"""Benchmark: how much the scoring convention changes BLiMP pair decisions.

    python3 benchmarks/conventions.py [--model smollm2-135m] [--pairs 500]

Scores the same BLiMP pairs (as throughput.py draws them) under each convention (psyling, lm-eval, minicons,
syntaxgym) and prints the accuracy (good sentence more probable than bad, by the sentence's summed log-prob)
and how many pair decisions differ from psyling's. All conventions are compared on token sums (psyling's own
predictions use word-corrected surprisal, which adds the end-of-sentence term). Prints figures; not a test.
"""
from __future__ import annotations

import argparse

import numpy as np

from psyling.models import CausalScorer, ScoreRequest, load_model
from psyling.models.conventions import CONVENTIONS
from throughput import blimp_sentences


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--pairs", type=int, default=500)
    args = parser.parse_args()
    lm = load_model(args.model)
    sentences = blimp_sentences(args.pairs)
    requests = [ScoreRequest((i,), s) for i, s in enumerate(sentences)]
    decisions = {}
    for name in CONVENTIONS:
        scored = CausalScorer(lm, convention=name, progress=False).score(requests)
        totals = np.array([np.nansum(s.logprob) for s in scored])  # an unscored first token counts 0
        decisions[name] = totals[0::2] > totals[1::2]
    print(f"model {args.model}; {args.pairs} BLiMP pairs; decision: log P(good) > log P(bad), token sums")
    print(f"{'convention':<11} {'accuracy':>9} {'decisions differing from psyling':>33}")
    for name, won in decisions.items():
        print(f"{name:<11} {won.mean():>9.1%} {int((won != decisions['psyling']).sum()):>33}")


if __name__ == "__main__":
    main()
