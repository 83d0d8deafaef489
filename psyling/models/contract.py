"""The contract every scorer keeps, as one check (in the spirit of scikit-learn's ``check_estimator``): results in
request order, numbers independent of batch size, padding side, prefix reuse and token budget, a score-cache
round trip that gives back the same arrays, and a streaming consumer that sees every request once."""
from __future__ import annotations

import math
import random
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from .scorer import ScoreRequest, ScoreResult, Scorer
from .store import ScoreStore

VARIANTS = ({"batch_size": 1, "reuse_prefix": False}, {"batch_size": 3, "padding_side": "left", "reuse_prefix": False},
            {"batch_size": 64, "reuse_prefix": False}, {"reuse_prefix": True}, {"max_tokens": 24})


def _fail(check: str, detail: str) -> None:
    raise AssertionError(f"scorer contract, {check}: {detail}")


def _largest_gap_bits(a: ScoreResult, b: ScoreResult) -> float:
    gaps = [np.nanmax(np.abs(x.logprob - y.logprob), initial=0.0) for x, y in zip(a, b)]
    return float(max(gaps)) / math.log(2)


def check_order(scorer: Scorer, requests: Sequence[ScoreRequest]) -> ScoreResult:
    """Results come back in request order, whatever order the scorer computes in; token counts add up."""
    shuffled = list(requests)
    random.Random(0).shuffle(shuffled)
    result = scorer.score(shuffled, progress=False)
    if [r.request for r in result] != shuffled:
        _fail("order", "results are not in request order")
    if result.stats.n_tokens != sum(len(r.token_ids) for r in result):
        _fail("statistics", f"n_tokens {result.stats.n_tokens} is not the number of scored tokens")
    return result


def check_invariance(scorer: Scorer, requests: Sequence[ScoreRequest], tolerance_bits: float = 1e-4) -> float:
    """Every batching variant gives the reference's numbers within ``tolerance_bits``; returns the largest gap."""
    reference, _ = scorer.reference()
    base = reference.score(requests, progress=False)
    worst = 0.0
    for changes in VARIANTS:
        other = scorer.with_options(**changes).score(requests, progress=False)
        if [r.token_ids for r in other] != [r.token_ids for r in base]:
            _fail("invariance", f"{changes} changes the tokens")
        gap = _largest_gap_bits(other, base)
        if gap > tolerance_bits:
            _fail("invariance", f"{changes} changes log-probabilities by {gap:.2e} bits (> {tolerance_bits:g})")
        worst = max(worst, gap)
    return worst


def check_cache_round_trip(scorer: Scorer, requests: Sequence[ScoreRequest]) -> None:
    """What a run writes to the score cache, a resumed run reads back bitwise, without recomputing."""
    with tempfile.TemporaryDirectory() as root:
        writing = ScoreStore(scorer.fingerprint(), read=False, root=Path(root))
        first = scorer.score(requests, store=writing, progress=False)
        reading = ScoreStore(scorer.fingerprint(), read=True, root=Path(root))
        second = scorer.score(requests, store=reading, progress=False)
    if writing.writes == 0 or reading.hits != writing.writes or reading.writes:
        _fail("cache", f"{writing.writes} batches written, {reading.hits} read back, {reading.writes} recomputed")
    for a, b in zip(first, second):
        if not (np.array_equal(a.logprob, b.logprob, equal_nan=True)
                and np.array_equal(a.log_bow, b.log_bow, equal_nan=True)):
            _fail("cache", f"{a.request.key}: the cached scores differ from the computed ones")


def check_streaming(scorer: Scorer, requests: Sequence[ScoreRequest]) -> None:
    """The consumer sees each request exactly once, with its activations where the scorer captures any, and
    the returned results no longer hold them."""
    seen: list[ScoreRequest] = []

    def consume(batch: list) -> None:
        for scored in batch:
            seen.append(scored.request)
            if scorer.sites and set(scored.activations or {}) != set(scorer.sites):
                _fail("streaming", f"{scored.request.key}: activations missing in the consumer")

    result = scorer.score(requests, consumer=consume, progress=False)
    if sorted(map(repr, seen)) != sorted(map(repr, requests)):
        _fail("streaming", "the consumer did not see every request exactly once")
    if any(r.activations is not None for r in result):
        _fail("streaming", "activations were kept after the consumer ran")


def check_scorer(scorer: Scorer, requests: Sequence[ScoreRequest], tolerance_bits: float = 1e-4) -> float:
    """Run every check of the contract (AssertionError naming the failed one); returns the largest
    invariance gap in bits."""
    if not isinstance(scorer, Scorer):
        _fail("protocol", f"{type(scorer).__name__} does not implement psyling.models.Scorer")
    check_order(scorer, requests)
    worst = check_invariance(scorer, requests, tolerance_bits)
    check_cache_round_trip(scorer, requests)
    check_streaming(scorer, requests)
    return worst
