"""The patching metric, read off a forward pass's logits at the critical region.

M(context) = S(bad continuation | context) - S(good continuation | context): the critical region's surprisal
in bits, word-corrected exactly as scoring computes it (``psyling.measures.surprisal.token_contributions``),
so M > 0 when the model prefers the good continuation. Beside it: the first-token logit difference
logit(good's first token) - logit(bad's first token) at the last context position (the TransformerLens / EAP
metric; same sign as M), and the next-token distribution there, for the KL divergence to the clean run."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..measures.surprisal import token_contributions
from ..models.logit_stats import TokenStatistics
from ..models.scorer import TokenScores
from ..models.vocab import WordMarkers
from .pair_sequences import CONTINUATIONS, ItemSequences, Key

LN2 = math.log(2.0)


@dataclass(frozen=True)
class MetricReader:
    """What turns logits into surprisal as the set is scored: the vocabulary's statistics and word markers,
    and whether the word correction applies (the scorer's convention and the set's segmentation)."""
    statistics: TokenStatistics
    markers: WordMarkers
    correct: bool


@dataclass(frozen=True)
class ReadLogits:
    """A sequence's logits at its ``read_positions``, with log Z and log P(word boundary) at each (float64)."""
    logits: torch.Tensor
    log_z: np.ndarray
    log_bow: np.ndarray


@dataclass
class MetricValues:
    """One context's values: M (bits), the first-token logit difference, log P(next token) at the last
    context position (float64, [vocab]) for the KL divergence."""
    m: float
    logit_diff: float
    log_next: np.ndarray


def read_positions(seqs: ItemSequences, key: Key) -> list[int]:
    """The sequence positions whose logits the metric reads: before each critical token and after the last."""
    n_ctx = len(seqs.encoded[key].context)
    span = seqs.critical[key]
    return list(range(n_ctx + span.start - 1, n_ctx + span.stop))


def region_surprisal(read: ReadLogits, seqs: ItemSequences, key: Key, reader: MetricReader) -> float:
    """The critical region's surprisal (bits) in one sequence from the logits at ``read_positions`` (in order)."""
    enc = seqs.encoded[key]
    span = seqs.critical[key]
    device = read.logits.device
    targets = torch.tensor(enc.ids[span.start:span.stop], device=device)
    picked = read.logits[torch.arange(len(span), device=device), targets].double().cpu().numpy()
    logprob = np.full(len(enc.ids), np.nan)
    logprob[span.start:span.stop] = picked - read.log_z[:len(span)]
    bow = np.full(len(enc.ids) + 1, np.nan)
    bow[span.start:span.stop + 1] = read.log_bow
    scores = TokenScores(seqs.requests[key], enc.ids, enc.offsets, logprob, bow, math.nan)
    where = f"item={seqs.item} sequence={'+'.join(key)}"
    corrected, _ = token_contributions(scores, seqs.words[key], reader.markers, where, reader.correct)
    return float(corrected[span.start:span.stop].sum())


def context_metric(logits: dict[str, ReadLogits], seqs: ItemSequences, context: str,
                   reader: MetricReader) -> MetricValues:
    """M, the logit difference and the next-token distribution of one context, from each continuation's logits
    at its ``read_positions`` (``logits["good"]``, ``logits["bad"]``)."""
    s = {cont: region_surprisal(logits[cont], seqs, (context, cont), reader)
         for cont in CONTINUATIONS}
    first = {cont: seqs.encoded[(context, cont)].ids[seqs.critical[(context, cont)].start] for cont in CONTINUATIONS}
    good = logits["good"]
    row = good.logits[0].double().cpu().numpy()
    return MetricValues(s["bad"] - s["good"], float(row[first["good"]] - row[first["bad"]]), row - good.log_z[0])


def kl_bits(reference: np.ndarray, other: np.ndarray) -> float:
    """KL(reference || other) of two next-token distributions given as log-probabilities, in bits."""
    return float(np.sum(np.exp(reference) * (reference - other)) / LN2)
