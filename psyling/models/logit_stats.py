"""From logits to what the word-level measures need: log P of each text token (nats), the word-boundary masses
of the Pimentel & Meister word correction, and the first-word term, in float64 without a float64 copy of the
logits. Scoring and the logit lens read their outputs through ``TokenStatistics``."""
from __future__ import annotations

from typing import Optional, Protocol, Sequence

import numpy as np
import torch

from .conventions import Convention
from .store import Output
from .vocab import WordMarkers

STATS_CHUNK = 256  # positions whose log-softmax statistics are computed together
VOCAB_BLOCK = 256  # vocabulary entries summed in float32 before the float64 sum


class Encoding(Protocol):
    """A request as token ids: ``context`` (never scored) then ``ids`` (the text)."""
    context: list[int]
    ids: list[int]


class TokenStatistics:
    """Per-token outputs of logits for one vocabulary's word markers and one convention's normaliser."""

    def __init__(self, markers: WordMarkers, n_logits: int, convention: Convention) -> None:
        bow_eos = markers.bow.clone()  # word-initial tokens or EOS: the word-boundary set
        if markers.eos_id is not None:
            bow_eos[markers.eos_id] = True
        # columns: everything, the word-boundary set, tokens that do not begin a word (EOS included); the
        # whole blocks of VOCAB_BLOCK entries in float32, the remainder in float64
        columns = torch.stack([torch.ones_like(bow_eos), bow_eos, ~markers.bow], 1)
        split = n_logits // VOCAB_BLOCK * VOCAB_BLOCK
        self._blocked = columns[:split].float().reshape(split // VOCAB_BLOCK, VOCAB_BLOCK, -1)
        self._tail = columns[split:].double()
        self.normaliser = convention.normaliser

    def outputs(self, logits: torch.Tensor, needed: Optional[list[int]], columns: Sequence[list[int]],
                encoded: Sequence[Encoding]) -> list[Output]:
        """Per sequence: log P of each text token (nats), the word-boundary masses and the first-word term.
        ``logits`` is [positions, vocab]: every flat position of the batch (``needed`` None), or the rows of
        the flat positions in ``needed``; ``columns[i]`` are sequence i's flat positions. It is overwritten."""
        where = None if needed is None else {c: k for k, c in enumerate(needed)}
        before, targets, bounds = [], [], [0]
        for cols, enc in zip(columns, encoded):  # the position before each text token (-1: none), and the last
            n_ctx = len(enc.context)
            before += [cols[n_ctx - 1 + k] if n_ctx - 1 + k >= 0 else -1 for k in range(len(enc.ids))] + [cols[-1]]
            targets += enc.ids + [0]
            bounds.append(len(before))
        idx = np.array(before if where is None else [where[c] if c >= 0 else -1 for c in before])
        device = logits.device
        target_logits = logits[torch.from_numpy(idx.clip(0)).to(device),
                               torch.tensor(targets, device=device)].double().cpu().numpy()
        log_z, log_bow, log_nonbow = self.log_masses(logits)
        missing = idx < 0
        logprob = np.where(missing, np.nan, target_logits - log_z[idx.clip(0)])
        bow = np.where(missing, np.nan, log_bow[idx.clip(0)])
        nonbow = np.where(missing, np.nan, log_nonbow[idx.clip(0)])
        return [{"logprob": logprob[a:b - 1], "log_bow": bow[a:b], "log_nonbow": float(nonbow[a])}
                for a, b in zip(bounds[:-1], bounds[1:])]

    def log_masses(self, logits: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """log Z, log P(word boundary) and log P(not word-initial) at every row of ``logits`` (overwritten), in
        float64. Exponentials in float32 after subtracting the row maximum; sums over blocks of 256 vocabulary
        entries in float32, then over blocks in float64: within 1e-6 of a float64 log-softmax (a plain float32
        one over a large vocabulary is biased by ~1e-5 nats per token). Conventions that normalise in the
        logits' dtype (lm-eval: log_softmax, minicons: logsumexp) get their log Z instead."""
        blocked = self._blocked.to(logits.device)
        tail = self._tail.to(logits.device)
        n_blocks = blocked.shape[0]
        split = n_blocks * VOCAB_BLOCK
        parts = []
        for x in logits.split(STATS_CHUNK):
            log_z = _dtype_log_z(x, self.normaliser)
            x = x.float()
            top = x.max(dim=1, keepdim=True).values
            e = x.sub_(top).exp_()
            masses = torch.bmm(e[:, :split].reshape(-1, n_blocks, VOCAB_BLOCK).transpose(0, 1), blocked)
            masses = masses.double().sum(0) + e[:, split:].double() @ tail
            masses = masses.log()
            if log_z is not None:
                masses[:, 0] = log_z - top[:, 0].double()
            parts.append(torch.cat([top.double(), masses], 1))
        stats = torch.cat(parts).cpu().numpy()
        log_z = stats[:, 0] + stats[:, 1]
        return log_z, stats[:, 2] - stats[:, 1], stats[:, 3] - stats[:, 1]


def _dtype_log_z(x: torch.Tensor, normaliser: str) -> Optional[torch.Tensor]:
    """log Z in the logits' own dtype for the lm-eval and minicons conventions; None for psyling's float64."""
    if normaliser == "log_softmax":
        return x.max(dim=1).values.double() - torch.log_softmax(x, dim=-1).max(dim=1).values.double()
    if normaliser == "logsumexp":
        return torch.logsumexp(x, dim=-1).double()
    return None
