"""Benchmark: tokens that prefix reuse saves, on BLiMP (all 67 paradigms) and on the SyntaxGym 2020 suites.

    python3 benchmarks/prefix_reuse.py [--model smollm2-135m] [--max-tokens N]

Counts only (no forward pass): each set is planned as ``psyling.run`` plans it, one scorer call per set. "without"
is every sequence's tokens, context token included (what the padded path computes, padding excluded); "with" is
what the packed rows compute (each shared prefix once, plus the prefix paths repeated where a trie is split
across rows). Prints figures; not a test.
"""
from __future__ import annotations

import argparse

from psyling.api import set_requests
from psyling.models import CausalScorer, load_model
from psyling.stimuli import battery_files, data_root, load_blimp, load_stimuli


def count(scorer: CausalScorer, sets) -> tuple[int, int, int, int]:
    """(sets, sequences, tokens without reuse, tokens with reuse)."""
    n_seq = without = with_reuse = 0
    for stim in sets:
        encoded = [scorer.encode(r) for r in set_requests(stim)]
        n_seq += len(encoded)
        without += sum(len(e.sequence) for e in encoded)
        with_reuse += sum(b.n_tokens for b in scorer.plan(encoded))
    return len(sets), n_seq, without, with_reuse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--max-tokens", type=int)
    args = parser.parse_args()
    lm = load_model(args.model)
    scorer = CausalScorer(lm, max_tokens=args.max_tokens, reuse_prefix=True, progress=False)
    blimp = [load_blimp(p) for p in sorted((data_root() / "blimp" / "data").glob("*.jsonl"))]
    syntaxgym = load_stimuli(battery_files("syntaxgym2020")).sets
    print(f"model {args.model}; max_tokens {scorer.max_tokens}; one plan per set, as psyling run does")
    print(f"{'dataset':<16} {'sets':>5} {'sequences':>10} {'tokens without':>15} {'with reuse':>11} {'saved':>7}")
    for name, sets in (("BLiMP", blimp), ("SyntaxGym 2020", syntaxgym)):
        n_sets, n_seq, without, with_reuse = count(scorer, sets)
        print(f"{name:<16} {n_sets:>5} {n_seq:>10} {without:>15} {with_reuse:>11} {1 - with_reuse / without:>7.1%}")


if __name__ == "__main__":
    main()
