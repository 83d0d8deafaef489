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
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import AlignmentError, ModelError
from .loading import LanguageModel
from .scoring import ScoreRequest, TokenScores, joined_text, model_identity, text_span
from .store import Output, ScoreStore, through
from .vocab import WordMarkers

VARIANTS = {"pll": "Salazar et al. (2020) pseudo-log-likelihood: each token masked on its own",
            "l2r": "Kauf & Ivanova (2023) PLL-word-l2r: the token and the rest of its word to the right masked "
                   "(minicons PLL_metric='within_word_l2r')"}
CHUNK_PASSES = 8  # forward passes (at the token budget) per cached chunk of texts


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
    ``max_tokens`` bounds rows x length per forward pass; ``batch_size`` is only recorded (for the manifest)."""

    def __init__(self, lm: LanguageModel, *, variant: str = "pll", max_tokens: int = 4096, progress: bool = True,
                 batch_size: int = 32) -> None:
        if variant not in VARIANTS:
            raise ModelError(f"unknown masked-LM scoring variant {variant!r} (choose from {', '.join(VARIANTS)})")
        if max_tokens < 1:
            raise ModelError("max_tokens must be at least 1")
        tok = lm.tokenizer
        if tok.mask_token_id is None:
            raise ModelError(f"the tokenizer of {lm.info.get('id', 'the model')} has no mask token: "
                             "not a masked-LM tokenizer")
        self.lm, self.variant, self.max_tokens, self.progress = lm, variant, max_tokens, progress
        self.batch_size, self.padding_side = batch_size, "right"
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.mask_token_id
        n_logits = lm.info.get("vocab_size") or lm.model.get_output_embeddings().weight.shape[0]
        self.markers = WordMarkers(None, None, torch.zeros(n_logits, dtype=torch.bool), None)
        self.limit = _position_limit(lm)
        probe = tok("a", add_special_tokens=True, return_special_tokens_mask=True)
        tokens, special = tok.convert_ids_to_tokens(probe["input_ids"]), probe["special_tokens_mask"]
        first = special.index(0)  # special tokens before the text, then after it
        self.special_tokens = {"before": tokens[:first],
                               "after": [t for t, m in zip(tokens[first:], special[first:]) if m]}
        self.n_tokens = 0
        self.n_computed = 0  # tokens run through the model: every masked copy in full
        self.seconds = 0.0

    word_correction = False  # no word-boundary tokens
    reuse_prefix = False
    oom_splits = 0

    @property
    def n_sequence_tokens(self) -> int:
        return self.n_computed

    def settings(self) -> dict[str, Any]:
        """What the run manifest records about this scorer."""
        tok = self.lm.tokenizer
        return {"scorer": "masked", "variant": self.variant, "variant_description": VARIANTS[self.variant],
                "max_tokens": self.max_tokens, "batch_size": self.batch_size, "padding_side": self.padding_side,
                "context_token": None, "word_correction": "none (masked LM)",
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

    def score(self, requests: Iterable[ScoreRequest], *, progress: Optional[bool] = None, desc: str = "scoring",
              consumer: Optional[Callable[[list[TokenScores]], None]] = None, max_tokens: Optional[int] = None,
              store: Optional[ScoreStore] = None, **ignored: Any) -> list[TokenScores]:
        """Score requests; returns results in request order. ``max_tokens`` overrides the scorer's bound on
        rows x length per forward pass (1: every masked copy alone). Texts, longest first, are scored in
        chunks of about CHUNK_PASSES forward passes; ``consumer`` receives each chunk's scores as soon as it is
        done, and ``store`` caches (and, when reading, reuses) each chunk's results. Other keywords
        (batch_size, padding_side) are accepted for compatibility with Scorer and ignored."""
        requests = list(requests)
        budget = max_tokens or self.max_tokens
        encoded = [self.encode(r) for r in requests]
        for req, enc in zip(requests, encoded):
            if self.limit and len(enc.ids) > self.limit:
                raise ModelError(f"{req.key}: {len(enc.ids)} tokens (with special tokens) exceed the masked LM's "
                                 f"{self.limit} positions; shorten the stimulus or its prefix")
        order = sorted(range(len(requests)), key=lambda i: -len(encoded[i].ids))
        results: list[Optional[TokenScores]] = [None] * len(requests)
        show = self.progress if progress is None else progress
        started = time.perf_counter()
        with tqdm(total=sum(len(e.targets) for e in encoded), desc=desc, unit="copy", disable=not show) as bar:
            for chunk in _chunks(order, encoded, budget * CHUNK_PASSES):
                seqs = [encoded[i] for i in chunk]
                outs, reused = through(store, lambda: _chunk_digest(seqs, budget),
                                       lambda: self._score_chunk(seqs, budget, bar))
                if reused:
                    bar.update(sum(len(seq.targets) for seq in seqs))
                for i, out in zip(chunk, outs):
                    enc = encoded[i]
                    results[i] = TokenScores(requests[i], [enc.ids[p] for p in enc.targets], enc.offsets,
                                             out["logprob"], out["log_bow"], out["log_nonbow"])
                    self.n_tokens += len(enc.targets)
                if consumer is not None:
                    consumer([results[i] for i in chunk])
        self.seconds += time.perf_counter() - started
        return results  # type: ignore[return-value]

    def _score_chunk(self, seqs: list[_Encoded], budget: int, bar: tqdm) -> list[Output]:
        """log P of every text token of the sequences (longest first), masked copies batched under ``budget``;
        no word-boundary masses (NaN)."""
        copies = [(i, k) for i, seq in enumerate(seqs) for k in range(len(seq.targets))]
        logprobs = [np.empty(len(seq.targets)) for seq in seqs]
        pos = 0
        while pos < len(copies):  # lengths fall along ``copies``: the first row of a batch is its widest
            batch = copies[pos:pos + max(1, budget // len(seqs[copies[pos][0]].ids))]
            values = self._forward([seqs[i] for i, _ in batch], [k for _, k in batch])
            self.n_computed += sum(len(seqs[i].ids) for i, _ in batch)
            for (i, k), value in zip(batch, values):
                logprobs[i][k] = value
            bar.update(len(batch))
            pos += len(batch)
        return [{"logprob": lp, "log_bow": np.full(len(lp) + 1, np.nan), "log_nonbow": float("nan")}
                for lp in logprobs]

    @torch.no_grad()
    def _forward(self, seqs: list[_Encoded], copy_index: list[int]) -> np.ndarray:
        """log P (nats) of the target token of each masked copy, from one forward pass over the copies."""
        width = max(len(s.ids) for s in seqs)
        input_ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, (seq, k) in enumerate(zip(seqs, copy_index)):
            input_ids[row, :len(seq.ids)] = torch.tensor(seq.ids)
            input_ids[row, seq.masks[k]] = self.lm.tokenizer.mask_token_id
            attention[row, :len(seq.ids)] = 1
        positions = torch.tensor([seq.targets[k] for seq, k in zip(seqs, copy_index)], device=self.lm.device)
        targets = torch.tensor([seq.ids[seq.targets[k]] for seq, k in zip(seqs, copy_index)],
                               device=self.lm.device)
        rows = torch.arange(len(seqs), device=self.lm.device)

        def masked_only(module: torch.nn.Module, args: tuple) -> Optional[tuple]:
            """Feed the output layer the masked positions only: logits of [rows, vocab], not [rows, width, vocab]."""
            hidden = args[0]
            return (hidden[rows, positions], *args[1:]) if hidden.dim() == 3 else None

        head = self.lm.model.get_output_embeddings()
        handle = head.register_forward_pre_hook(masked_only) if head is not None else None
        try:
            logits = self.lm.model(input_ids=input_ids.to(self.lm.device),
                                   attention_mask=attention.to(self.lm.device)).logits
        finally:
            if handle is not None:
                handle.remove()
        if logits.dim() == 3:  # an output layer that the hook does not reach
            logits = logits[rows, positions]
        # float64 over the masked positions only: a float32 log-softmax is biased by ~1e-5 nats per token
        lsm = torch.log_softmax(logits.double(), dim=-1)
        return lsm[rows, targets].cpu().numpy()
