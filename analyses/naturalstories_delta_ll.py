"""Reproduction: surprisal improves a regression model of self-paced reading times on Natural Stories, for the
released GPT-3 (davinci) log-probs and for a model scored by psyling (the figures checked are ``psyling reproduce
naturalstories-delta-ll``; see psyling/reproductions/naturalstories.py).

Usage: python3 analyses/naturalstories_delta_ll.py [--data-root PATH] [--model smollm2-135m] [--no-model]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from psyling.errors import PsylingError
from psyling.reproductions.naturalstories import (ALPHA, MODEL, TARGET, naturalstories_delta_ll,
                                                  psyling_surprisal)
from psyling.stats.regression import DeltaLL
from psyling.stimuli.batteries import data_root
from psyling.stimuli.corpora import load_natural_stories


def _row(label: str, fit: DeltaLL) -> str:
    slopes = ", ".join(f"{fit.coefficients[c]:.2f}" for c in fit.predictors)
    ok = fit.delta_ll > 0 and fit.p_value < ALPHA
    return (f"{label:<16} {fit.n:>6} {fit.n_dropped:>4} {fit.delta_ll:>8.4f} {fit.se:>7.4f} {fit.p_value:>8.2g} "
            f"{fit.delta_ll_in_sample:>8.4f}  [{slopes}]  > 0, p < {ALPHA}  {'yes' if ok else 'NO'}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", "--data", type=Path, default=None,
                        help="folder of published datasets (default: PSYLING_DATA or ../shared/data)")
    parser.add_argument("--model", default=MODEL, help=f"model scored by psyling (default {MODEL})")
    parser.add_argument("--no-model", action="store_true", help="only the released GPT-3 surprisal")
    args = parser.parse_args(argv)
    try:
        root = args.data_root or data_root()
        fits = {"GPT-3 davinci": naturalstories_delta_ll(load_natural_stories(root).words, "gpt3_surprisal")}
        if not args.no_model:
            fits[args.model] = naturalstories_delta_ll(psyling_surprisal(args.model, root), "surprisal")
    except PsylingError as exc:
        print(f"naturalstories_delta_ll: error: {exc}", file=sys.stderr)
        return 2
    print(f"Natural Stories: ΔLL per word (nats) on {TARGET}, leave-one-story-out CV, surprisal + spillover 1-2")
    print(f"{'surprisal':<16} {'n':>6} {'drop':>4} {'ΔLL':>8} {'SE':>7} {'p':>8} {'in-samp':>8}  "
          f"[ms/bit lag 0, 1, 2]  expected")
    for label, fit in fits.items():
        print(_row(label, fit))
    return 0 if all(f.delta_ll > 0 and f.p_value < ALPHA for f in fits.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
