"""Batched scoring: per-token log-probabilities over the full vocabulary, plus the word-boundary masses
that the Pimentel & Meister word correction needs, from one forward pass per batch."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional, Sequence, Union

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import AlignmentError, ModelError
from .capture import DTYPES, Capture, CaptureSpec, LensHead, limit_heap_fragmentation, n_layers
from .loading import LanguageModel
from .vocab import WordMarkers, word_markers

Key = tuple


@dataclass(frozen=True)
class ScoreRequest:
    """A text to score after an optional (unscored) prefix; ``key`` identifies it, e.g. (set, item, condition)."""
    key: Key
    text: str
    prefix: str = ""


@dataclass
class TokenScores:
    """Scores of the tokens of one request. Offsets are character spans in ``request.text``.
    ``logprob`` (nats) per token; ``log_bow`` (nats, one longer) is log P(next token is word-initial or EOS)
    before each token and after the last; ``log_nonbow_first`` is log P(next token is not word-initial)
    before the first token."""
    request: ScoreRequest
    token_ids: list[int]
    offsets: list[tuple[int, int]]
    logprob: np.ndarray
    log_bow: np.ndarray
    log_nonbow_first: float
    activations: Optional[dict[str, np.ndarray]] = None  # site -> [n_tokens, d], only while a consumer runs
    lens: Optional[dict[int, tuple[np.ndarray, np.ndarray, float]]] = None  # layer -> (logprob, log_bow, nonbow)

    def at_layer(self, layer: int) -> "TokenScores":
        """These scores as the logit lens reads them at ``layer`` (needs a Scorer with ``lens_layers``)."""
        logprob, log_bow, log_nonbow = self.lens[layer]
        return TokenScores(self.request, self.token_ids, self.offsets, logprob, log_bow, log_nonbow)


def _context_token_id(tokenizer: Any, choice: Union[str, int, None]) -> int:
    if choice is None or choice == "auto":
        for name in ("bos", "eos"):
            tok_id = getattr(tokenizer, f"{name}_token_id")
            if tok_id is not None:
                return int(tok_id)
        raise ModelError("the tokenizer defines neither BOS nor EOS: pass a context token (e.g. --context-token ID)")
    if isinstance(choice, int) or str(choice).isdigit():
        return int(choice)
    if choice in ("bos", "eos"):
        tok_id = getattr(tokenizer, f"{choice}_token_id")
        if tok_id is None:
            raise ModelError(f"the tokenizer defines no {choice.upper()} token")
        return int(tok_id)
    tok_id = tokenizer.convert_tokens_to_ids(choice)
    if tok_id is None or tok_id == tokenizer.unk_token_id:
        raise ModelError(f"context token {choice!r} is not in the vocabulary")
    return int(tok_id)


class Scorer:
    """Scores texts with one model: length-sorted batches, explicit attention masks and position ids.

    Results do not depend on batch size or padding side (the built-in check measures it)."""

    def __init__(self, lm: LanguageModel, *, context_token: Union[str, int, None] = None, batch_size: int = 32,
                 padding_side: str = "right", progress: bool = True, capture: Optional[CaptureSpec] = None,
                 lens_layers: Optional[Sequence[int]] = None) -> None:
        if batch_size < 1:
            raise ModelError("batch size must be at least 1")
        if padding_side not in ("left", "right"):
            raise ModelError("padding side must be 'left' or 'right'")
        self.lm, self.batch_size, self.padding_side, self.progress = lm, batch_size, padding_side, progress
        self.context_token_id = _context_token_id(lm.tokenizer, context_token)
        self.markers: WordMarkers = word_markers(lm.tokenizer, lm.info.get("vocab_size") or
                                                 lm.model.get_output_embeddings().weight.shape[0])
        self._bow_eos = self.markers.bow.clone()  # word-initial tokens or EOS: the word-boundary set
        if self.markers.eos_id is not None:
            self._bow_eos[self.markers.eos_id] = True
        self.capture = capture
        self.sites = capture.sites(n_layers(lm.model)) if capture else []
        self.lens_layers = list(lens_layers or [])
        self._lens = LensHead(lm.model) if self.lens_layers else None
        lens_sites = CaptureSpec(("resid",), tuple(self.lens_layers)).sites(n_layers(lm.model)) if lens_layers else []
        self._hooked = list(dict.fromkeys(self.sites + lens_sites))
        if self._hooked:
            limit_heap_fragmentation()
        self.n_tokens = 0
        self.seconds = 0.0

    def settings(self) -> dict[str, Any]:
        tok = self.lm.tokenizer
        return {"context_token": {"id": self.context_token_id,
                                  "token": tok.convert_ids_to_tokens(self.context_token_id)},
                "batch_size": self.batch_size, "padding_side": self.padding_side,
                "tokenizer": {"class": type(tok).__name__, "family": self.markers.family,
                              "marker": self.markers.marker, "n_word_initial_tokens": int(self.markers.bow.sum()),
                              "eos_id": self.markers.eos_id, "bos_id": tok.bos_token_id}}

    def encode(self, request: ScoreRequest) -> tuple[list[int], list[int], list[tuple[int, int]]]:
        """Token ids of the prefix (context) and of the text, with text offsets; one tokenizer call."""
        start = len(request.prefix) + 1 if request.prefix else 0
        full = f"{request.prefix} {request.text}" if request.prefix else request.text
        enc = self.lm.tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
        context, ids, offsets = [], [], []
        for tok_id, (s, e) in zip(enc["input_ids"], enc["offset_mapping"]):
            if e < start:  # ends before the space that separates prefix and text
                context.append(tok_id)
                continue
            if s < start - 1:
                raise AlignmentError(f"{request.key}: token {full[s:e]!r} spans the prefix and the sentence")
            ids.append(tok_id)
            offsets.append((max(s - start, 0), e - start))
        if not ids:
            raise AlignmentError(f"{request.key}: the text produced no tokens")
        return context, ids, offsets

    def score(self, requests: Iterable[ScoreRequest], *, batch_size: Optional[int] = None,
              padding_side: Optional[str] = None, progress: Optional[bool] = None, desc: str = "scoring",
              consumer: Optional[Callable[[list[TokenScores]], None]] = None) -> list[TokenScores]:
        """Score requests; returns results in request order. With activation capture, each batch's results
        (with ``activations``) go to ``consumer`` as soon as they are computed, and the activations are then
        dropped, so memory does not grow with the number of requests."""
        requests = list(requests)
        batch_size = batch_size or self.batch_size
        padding_side = padding_side or self.padding_side
        encoded = [self.encode(r) for r in requests]
        limit = self.lm.max_positions
        for req, (ctx, ids, _) in zip(requests, encoded):
            if limit and 1 + len(ctx) + len(ids) > limit:
                raise ModelError(f"{req.key}: {1 + len(ctx) + len(ids)} tokens exceed the model's context of "
                                 f"{limit}; shorten the stimulus or its prefix")
        order = sorted(range(len(requests)), key=lambda i: -(len(encoded[i][0]) + len(encoded[i][1])))
        results: list[Optional[TokenScores]] = [None] * len(requests)
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        show = self.progress if progress is None else progress
        started = time.perf_counter()
        for batch in tqdm(batches, desc=desc, unit="batch", disable=not show or len(batches) < 2):
            seqs = [[self.context_token_id, *encoded[i][0], *encoded[i][1]] for i in batch]
            firsts = [len(encoded[i][0]) for i in batch]  # positions whose logits predict the first text token
            for i, first, out in zip(batch, firsts, self._forward(seqs, firsts, padding_side)):
                ids, offsets = encoded[i][1], encoded[i][2]
                results[i] = TokenScores(requests[i], ids, offsets, out["logprob"][first:],
                                         out["log_bow"][first:], out["log_nonbow"], out.get("activations"),
                                         {layer: (o["logprob"][first:], o["log_bow"][first:], o["log_nonbow"])
                                          for layer, o in out.get("lens", {}).items()} or None)
                self.n_tokens += len(ids)
            if consumer is not None:
                consumer([results[i] for i in batch])
            for i in batch:
                results[i].activations = None
        self.seconds += time.perf_counter() - started
        return results  # type: ignore[return-value]

    @torch.no_grad()
    def _forward(self, seqs: list[list[int]], firsts: list[int], padding_side: str) -> list[dict[str, Any]]:
        width = max(len(s) for s in seqs)
        device = self.lm.device
        input_ids = torch.zeros((len(seqs), width), dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        positions = torch.zeros((len(seqs), width), dtype=torch.long)
        starts = []
        for row, seq in enumerate(seqs):
            start = width - len(seq) if padding_side == "left" else 0
            starts.append(start)
            input_ids[row, start:start + len(seq)] = torch.tensor(seq)
            mask[row, start:start + len(seq)] = 1
            positions[row, start:start + len(seq)] = torch.arange(len(seq))
        with Capture(self.lm.model, self._hooked) as captured:
            logits = self.lm.model(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                                   position_ids=positions.to(device), use_cache=False).logits
        outs = self._token_outputs(logits, seqs, firsts, starts)
        for row, (seq, first) in enumerate(zip(seqs, firsts)):
            span = slice(starts[row] + 1 + first, starts[row] + len(seq))  # the text's tokens
            if self.sites:
                dtype = DTYPES[self.capture.dtype]
                outs[row]["activations"] = {site: captured.values[site][row, span].to(dtype).cpu().numpy()
                                            for site in self.sites}
        for layer in self.lens_layers:  # one layer at a time: memory stays at one batch of logits
            lens = self._lens.logits(captured.values[f"resid.{layer}"])
            for row, out in enumerate(self._token_outputs(lens, seqs, firsts, starts)):
                outs[row].setdefault("lens", {})[layer] = out
        return outs

    def _token_outputs(self, logits: torch.Tensor, seqs: list[list[int]], firsts: list[int],
                       starts: list[int]) -> list[dict[str, Any]]:
        """Per sequence: log P of each next token (nats), the word-boundary masses and the first-word term."""
        bow, bow_eos = self.markers.bow.to(logits.device), self._bow_eos.to(logits.device)
        outs = []
        for row, (seq, first) in enumerate(zip(seqs, firsts)):
            start = starts[row]
            # float64: a float32 log-softmax over a large vocabulary is biased by ~1e-5 nats per token
            lsm = torch.log_softmax(logits[row, start:start + len(seq)].double(), dim=-1)
            target = torch.tensor(seq[1:], device=lsm.device)
            logprob = lsm[:-1].gather(1, target[:, None])[:, 0]
            log_bow = torch.logsumexp(lsm.masked_fill(~bow_eos, float("-inf")), dim=-1)
            log_nonbow = torch.logsumexp(lsm[first].masked_fill(bow, float("-inf")), dim=-1)
            outs.append({"logprob": logprob.double().cpu().numpy(), "log_bow": log_bow.double().cpu().numpy(),
                         "log_nonbow": float(log_nonbow)})
        return outs
