"""Reproduction: GPT-2 surprisal and the N400, self-paced reading and gaze durations on the UCL corpus (de Varda et
al. 2023's released surprisal): psyling's cross-validated analysis with the size ordering, and de Varda et al.'s
setup beside their published ΔLL (the figures checked are ``psyling reproduce ucl-delta-ll``; see
psyling/reproductions/ucl.py).

Usage: python3 analyses/ucl_delta_ll.py [--data-root PATH]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from psyling.errors import PsylingError
from psyling.reproductions.ucl import (MODELS, TARGETS, devarda_setup, largest_minus_smallest, size_ordering,
                                       ucl_delta_ll)
from psyling.stimuli.batteries import data_root


def print_psyling_analysis(table) -> None:
    print("UCL corpus: ΔLL per word (nats), 10-fold CV by sentence, surprisal + spillover 1 over "
          "length/frequency/position (+ spillover)")
    print(f"{'target':<10} {'model':<13} {'n':>5} {'ΔLL':>8} {'SE':>7} {'p':>8} {'b0/bit':>7} {'b1/bit':>7}  expected")
    for r in table.itertuples():
        print(f"{TARGETS[r.target][:10]:<10} {r.label:<13} {r.n:>5} {r.delta_ll:>8.4f} {r.se:>7.4f} {r.p:>8.2g} "
              f"{r.slope:>7.3f} {r.slope_prev1:>7.3f}  > 0")
    print(f"({table['n_excluded'].iloc[0]} words excluded: period, comma or apostrophe; "
          f"{table['n_dropped'].iloc[0]} rows without data for the word or the previous word)")
    for target in TARGETS:
        order = " < ".join(MODELS[m] for m in size_ordering(table, target))
        diff, se = largest_minus_smallest(table, target)
        print(f"{TARGETS[target]}: {order}; xl - small = {diff:+.4f} ± {se:.4f} (paired SE over words)")


def print_devarda_setup(check) -> None:
    print("\nde Varda et al. (2023) setup (5-fold CV over words, SUBTLEX + length + position, no spillover)")
    print(f"{'target':<10} {'model':<13} {'ΔLL':>8} {'SE':>7} {'published':>9} {'tol':>6}  within")
    for r in check.itertuples():
        print(f"{TARGETS[r.target][:10]:<10} {r.label:<13} {r.delta_ll:>8.4f} {r.se:>7.4f} {r.published:>9.4f} "
              f"{r.tolerance:>6.3f}  {'yes' if r.within else 'NO'}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", "--data", type=Path, default=None,
                        help="folder of published datasets (default: PSYLING_DATA or ../shared/data)")
    args = parser.parse_args(argv)
    try:
        root = args.data_root or data_root()
        table, check = ucl_delta_ll(root), devarda_setup(root)
    except PsylingError as exc:
        print(f"ucl_delta_ll: error: {exc}", file=sys.stderr)
        return 2
    print_psyling_analysis(table)
    print_devarda_setup(check)
    return 0 if bool((table["delta_ll"] > 0).all() and check["within"].all()) else 1


if __name__ == "__main__":
    sys.exit(main())
