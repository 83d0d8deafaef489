"""Masked-LM scoring (BERT, RoBERTa, ...): pseudo-log-likelihood per token, with the same interface as Scorer.

Each text token is scored in its own masked copy of the sequence ([CLS] prefix text [SEP]):
- "pll": Salazar et al. (2020): only the token itself is masked;
- "l2r": Kauf & Ivanova (2023), PLL-word-l2r: the tokens of the same word to its right are masked as well.
  Words are the tokenizer's pre-tokenized words (``Encoding.word_ids``), as minicons' ``within_word_l2r``
  uses them: for WordPiece, a "##" token continues the previous word and punctuation is a word of its own.

Copies of one or several texts are mini-batched so that rows x padded length <= ``max_tokens``, and the output
head is applied to the masked positions only, so memory does not grow with the length of a text squared times
the vocabulary. There are no word-boundary tokens, so the Pimentel & Meister word correction is off: word and
region surprisal are plain sums of token surprisals. Texts are scored in chunks of about ``CHUNK_PASSES``
forward passes; the score cache stores one file per chunk, so ``--resume`` works as for causal LMs."""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, replace
from typing import Any, Iterable, Optional

import numpy as np
import torch

from ..errors import AlignmentError, ModelError
from ..progress import scoring_bar
from .forward import ForwardRunner, ModelInputs
from .loading import LanguageModel
from .options import ScoringOptions
from .scorer import Consumer, ScoreRequest, ScoreResult, ScoreStats, TokenScores, joined_text, model_identity, text_span
from .store import Output, ScoreStore, through
from .vocab import WordMarkers

VARIANTS = {"pll": "Salazar et al. (2020) pseudo-log-likelihood: each token masked on its own",
            "l2r": "Kauf & Ivanova (2023) PLL-word-l2r: the token and the rest of its word to the right masked "
                   "(minicons PLL_metric='within_word_l2r')"}
CHUNK_PASSES = 8  # forward passes (at the token budget) per cached chunk of texts
DEFAULT_MAX_TOKENS = 4096  # rows x length per forward pass


@dataclass(frozen=True)
class _Encoded:
    """A request's full sequence (special tokens included), the positions of its text tokens in it, their
    character offsets in the text, and for each text token the positions masked when it is scored."""
    ids: list[int]
    targets: list[int]
    offsets: list[tuple[int, int]]
    masks: list[list[int]]


def _chunks(order: list[int], encoded: list[_Encoded], chunk_tokens: int) -> list[list[int]]:
    """Consecutive texts (in ``order``) whose masked copies add up to about ``chunk_tokens`` tokens."""
    chunks: list[list[int]] = [[]]
    size = 0
    for i in order:
        if chunks[-1] and size >= chunk_tokens:
            chunks.append([])
            size = 0
        chunks[-1].append(i)
        size += len(encoded[i].targets) * len(encoded[i].ids)
    return chunks if chunks[0] else []


def _chunk_digest(seqs: list[_Encoded], budget: int) -> str:
    """A content address of a chunk's computation: the budget, then each sequence and its masked positions."""
    h = hashlib.sha256(f"masked|{budget}".encode())
    for seq in seqs:
        h.update(np.asarray(seq.ids, dtype=np.int64).tobytes() + b"|")
        for mask in seq.masks:
            h.update(np.asarray(mask, dtype=np.int64).tobytes() + b";")
    return h.hexdigest()


def is_masked_lm(model: Any) -> bool:
    """Whether a loaded model is a masked LM (e.g. BertForMaskedLM, RobertaForMaskedLM) rather than a causal LM."""
    return "MaskedLM" in type(model).__name__


def _position_limit(lm: LanguageModel) -> Optional[int]:
    """Usable positions: RoBERTa-style embeddings reserve the first padding_idx + 1 position ids."""
    limit = lm.max_positions
    padding_idx = getattr(getattr(lm.model.base_model, "embeddings", None), "padding_idx", None)
    if limit and padding_idx is not None:
        limit -= padding_idx + 1
    return limit


class MaskedScorer:
    """Scores texts with a masked LM as pseudo-log-likelihoods (nats per token); see the module docstring.
    ``options.max_tokens`` bounds rows x length per forward pass (default 4096); ``options.masked_variant``
    chooses PLL or l2r. Conventions, activation capture and the logit lens are causal-LM settings: a one-line
    error here. Keyword ``changes`` override fields of ``options``."""

    word_correction = False  # no word-boundary tokens
    reuse_prefix = False
    sites: list[str] = []
    lens_layers: list[int] = []

    def __init__(self, lm: LanguageModel, options: Optional[ScoringOptions] = None, *, progress: bool = True,
                 **changes: Any) -> None:
        self.options = replace(options or ScoringOptions(), **changes)
        if self.options.capture is not None or self.options.lens_layers:
            raise ModelError("activation capture and the logit lens need a causal LM")
        if self.options.convention != "psyling":
            raise ModelError("scoring conventions apply to causal LMs; a masked LM is scored by --masked-variant")
        tok = lm.tokenizer
        if tok.mask_token_id is None:
            raise ModelError(f"the tokenizer of {lm.info.get('id', 'the model')} has no mask token: "
                             "not a masked-LM tokenizer")
        self.lm, self.progress = lm, progress
        self.variant = self.options.masked_variant
        self.max_tokens = self.options.max_tokens or DEFAULT_MAX_TOKENS
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.mask_token_id
        n_logits = lm.info.get("vocab_size") or lm.model.get_output_embeddings().weight.shape[0]
        self.markers = WordMarkers(None, None, torch.zeros(n_logits, dtype=torch.bool), None)
        self.limit = _position_limit(lm)
        self.runner = ForwardRunner(lm)
        probe = tok("a", add_special_tokens=True, return_special_tokens_mask=True)
        tokens, special = tok.convert_ids_to_tokens(probe["input_ids"]), probe["special_tokens_mask"]
        first = special.index(0)  # special tokens before the text, then after it
        self.special_tokens = {"before": tokens[:first],
                               "after": [t for t, m in zip(tokens[first:], special[first:]) if m]}

    def with_options(self, **changes: Any) -> "MaskedScorer":
        """This scorer with some options changed (e.g. ``max_tokens=1``)."""
        return MaskedScorer(self.lm, replace(self.options, **changes), progress=self.progress)

    def reference(self) -> tuple["MaskedScorer", str]:
        """Every masked copy in a forward pass of its own; and what this scorer's path is."""
        return self.with_options(max_tokens=1), f"masked copies batched under {self.max_tokens} tokens"

    def settings(self) -> dict[str, Any]:
        """What the run manifest records about this scorer."""
        tok = self.lm.tokenizer
        return {"scorer": "masked", "variant": self.variant, "variant_description": VARIANTS[self.variant],
                "max_tokens": self.max_tokens, "batch_size": self.options.batch_size, "padding_side": "right",
                "prefix_reuse": False, "context_token": None, "word_correction": "none (masked LM)",
                "convention": None,
                "tokenizer": {"class": type(tok).__name__, "family": None, "special_tokens": self.special_tokens,
                              "mask_token": {"id": tok.mask_token_id, "token": tok.mask_token},
                              "pad_id": self.pad_id}}

    def encode(self, request: ScoreRequest) -> _Encoded:
        """The sequence with special tokens around prefix + text, and the masked positions of each copy."""
        full, start = joined_text(request)
        enc = self.lm.tokenizer(full, add_special_tokens=True, return_offsets_mapping=True,
                                return_special_tokens_mask=True)
        word_ids = enc.word_ids()
        targets, offsets = [], []
        for pos, (span, special) in enumerate(zip(enc["offset_mapping"], enc["special_tokens_mask"])):
            in_text = None if special else text_span(request, full, span, start)
            if in_text is None:  # special tokens and the prefix (context) are never masked or scored
                continue
            targets.append(pos)
            offsets.append(in_text)
        if not targets:
            raise AlignmentError(f"{request.key}: the text produced no tokens")
        if self.variant == "pll":
            masks = [[pos] for pos in targets]
        else:  # minicons get_masked_tensors, PLL_metric="within_word_l2r"
            masks = [[pos] + [j for j in range(pos + 1, targets[-1] + 1) if word_ids[j] == word_ids[pos]]
                     if word_ids[pos] is not None else [pos] for pos in targets]
        return _Encoded(list(enc["input_ids"]), targets, offsets, masks)

    def fingerprint(self) -> dict[str, Any]:
        """What, besides the tokens of a chunk, determines its numbers: the key of the score cache."""
        return {**model_identity(self.lm), "scorer": "masked", "variant": self.variant}

    def _encode_all(self, requests: list[ScoreRequest]) -> list[_Encoded]:
        """Every request encoded; a sequence longer than the model's positions is an error naming it."""
        encoded = [self.encode(r) for r in requests]
        for req, enc in zip(requests, encoded):
            if self.limit and len(enc.ids) > self.limit:
                raise ModelError(f"{req.key}: {len(enc.ids)} tokens (with special tokens) exceed the masked LM's "
                                 f"{self.limit} positions; shorten the stimulus or its prefix")
        return encoded

    def count_tokens(self, requests: Iterable[ScoreRequest]) -> int:
        """The text tokens (masked copies) ``score`` will score for these requests: a run's progress total."""
        return sum(len(e.targets) for e in self._encode_all(list(requests)))

    def score(self, requests: Iterable[ScoreRequest], *, desc: str = "scoring", consumer: Optional[Consumer] = None,
              store: Optional[ScoreStore] = None, progress: Optional[bool] = None) -> ScoreResult:
        """Score requests; returns results in request order. Texts, longest first, are scored in chunks of about
        CHUNK_PASSES forward passes; ``consumer`` receives each chunk's scores as soon as it is done, and
        ``store`` caches (and, when reading, reuses) each chunk's results."""
        requests = list(requests)
        encoded = self._encode_all(requests)
        order = sorted(range(len(requests)), key=lambda i: -len(encoded[i].ids))
        results: list[Optional[TokenScores]] = [None] * len(requests)
        stats = ScoreStats()
        show = self.progress if progress is None else progress
        started = time.perf_counter()
        bar = scoring_bar(desc, sum(len(e.targets) for e in encoded), show)
        try:
            for chunk in _chunks(order, encoded, self.max_tokens * CHUNK_PASSES):
                seqs = [encoded[i] for i in chunk]
                outs, reused = through(store, lambda: _chunk_digest(seqs, self.max_tokens),
                                       lambda: self._score_chunk(seqs, bar, desc))
                stats.n_computed += sum(len(seq.targets) * len(seq.ids) for seq in seqs)
                if reused:
                    bar.advance(sum(len(seq.targets) for seq in seqs), desc)
                for i, out in zip(chunk, outs):
                    enc = encoded[i]
                    results[i] = TokenScores(requests[i], [enc.ids[p] for p in enc.targets], enc.offsets,
                                             out["logprob"], out["log_bow"], out["log_nonbow"])
                    stats.n_tokens += len(enc.targets)
                if consumer is not None:
                    consumer([results[i] for i in chunk])
        finally:
            bar.close()
        stats.seconds = time.perf_counter() - started
        stats.n_sequence_tokens = stats.n_computed
        return ScoreResult(results, stats)  # type: ignore[arg-type]

    def _score_chunk(self, seqs: list[_Encoded], bar: Any, desc: str) -> list[Output]:
        """log P of every text token of the sequences (longest first), masked copies batched under
        ``max_tokens``; no word-boundary masses (NaN)."""
        copies = [(i, k) for i, seq in enumerate(seqs) for k in range(len(seq.targets))]
        logprobs = [np.empty(len(seq.targets)) for seq in seqs]
        pos = 0
        while pos < len(copies):  # lengths fall along ``copies``: the first row of a batch is its widest
            batch = copies[pos:pos + max(1, self.max_tokens // len(seqs[copies[pos][0]].ids))]
            values = self._forward([seqs[i] for i, _ in batch], [k for _, k in batch])
            for (i, k), value in zip(batch, values):
                logprobs[i][k] = value
            bar.advance(len(batch), desc)
            pos += len(batch)
        return [{"logprob": lp, "log_bow": np.full(len(lp) + 1, np.nan), "log_nonbow": float("nan")}
                for lp in logprobs]

    def _forward(self, seqs: list[_Encoded], copy_index: list[int]) -> np.ndarray:
        """log P (nats) of the target token of each masked copy, from one forward pass over the copies; the
        output layer sees the masked positions only ([rows, vocab] logits, not [rows, width, vocab])."""
        width = max(len(s.ids) for s in seqs)
        input_ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, (seq, k) in enumerate(zip(seqs, copy_index)):
            input_ids[row, :len(seq.ids)] = torch.tensor(seq.ids)
            input_ids[row, seq.masks[k]] = self.lm.tokenizer.mask_token_id
            attention[row, :len(seq.ids)] = 1
        columns = [[row * width + p for p in range(len(seq.ids))] for row, seq in enumerate(seqs)]
        read = torch.tensor([row * width + seq.targets[k] for row, (seq, k) in enumerate(zip(seqs, copy_index))])
        targets = torch.tensor([seq.ids[seq.targets[k]] for seq, k in zip(seqs, copy_index)], device=self.lm.device)
        logits = self.runner.run_inputs(ModelInputs(input_ids, attention, None, columns), read=read).logits
        # float64 over the masked positions only: a float32 log-softmax is biased by ~1e-5 nats per token
        lsm = torch.log_softmax(logits.double(), dim=-1)
        return lsm[torch.arange(len(seqs), device=lsm.device), targets].cpu().numpy()
