"""Causal-LM scoring: per-token log-probabilities over the full vocabulary, plus the word-boundary masses that
the Pimentel & Meister word correction needs, from one forward pass per batch (through the forward runner).

By default sequences that share a token prefix (the context token, a prime, the words before a minimal pair's
difference) compute it once: they are merged into a prefix trie packed into rows with a tree attention mask
(``psyling.models.packing``). The padded path (one sequence per row) is the reference; a run re-scores a sample
on it at batch size 1 and records the largest difference."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np
import torch

from ..errors import AlignmentError, ModelError
from ..progress import scoring_bar
from .architecture import LensHead, n_layers
from .conventions import Convention, get_convention
from .forward import ForwardPass, ForwardRunner, limit_heap_fragmentation
from .hooks import DTYPES, CaptureSpec, Intervention
from .loading import LanguageModel
from .logit_stats import TokenStatistics
from .options import ScoringOptions
from .packing import Batch, packed_plan, padded_plan
from .scorer import Consumer, ScoreRequest, ScoreResult, ScoreStats, TokenScores, joined_text, model_identity, text_span
from .store import Output, ScoreStore, through
from .vocab import WordMarkers, word_markers

ROW_TOKENS = 256  # packed row length: attention over a row costs ~4% of the linear layers at this length
LOGITS_BUDGET = {"cpu": 2**28, "gpu": 2**31}  # bytes of float32 logits per batch behind the default max_tokens
log = logging.getLogger("psyling")


@dataclass
class Encoded:
    """A request as token ids: ``context`` (never scored) then ``ids`` (the text) with their ``offsets``."""
    context: list[int]
    ids: list[int]
    offsets: list[tuple[int, int]]

    @property
    def sequence(self) -> list[int]:
        return self.context + self.ids


@dataclass(frozen=True)
class _Kept:
    """An encoding kept from ``count_tokens`` for the ``score`` call that follows, in arrays (compact)."""
    context: np.ndarray
    ids: np.ndarray
    offsets: np.ndarray

    @classmethod
    def of(cls, enc: Encoded) -> "_Kept":
        return cls(np.array(enc.context, np.int64), np.array(enc.ids, np.int64),
                   np.array(enc.offsets, np.int64).reshape(-1, 2))

    def encoded(self) -> Encoded:
        return Encoded(self.context.tolist(), self.ids.tolist(), [(s, e) for s, e in self.offsets.tolist()])


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


def default_max_tokens(vocab_size: int, device: torch.device) -> int:
    """Tokens per batch such that the batch's float32 logits take about 256 MB on a CPU, 2 GB on a GPU."""
    budget = LOGITS_BUDGET["cpu" if device.type == "cpu" else "gpu"]
    return int(max(256, min(32768, budget // (4 * vocab_size))))


def _by_depth(positions: object) -> bool:
    """Whether intervention positions depend on a token's depth in its sequence only (safe in packed rows)."""
    if positions is None:
        return True
    return isinstance(positions, slice) and all(v is None or v >= 0 for v in (positions.start, positions.stop)) \
        and (positions.step is None or positions.step > 0)


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()




class CausalScorer:
    """Scores texts with a causal LM under ``ScoringOptions``: shared prefixes computed once (``reuse_prefix``),
    batches filled up to ``max_tokens`` tokens (default: from the vocabulary size and device), explicit
    attention masks and position ids, halving a batch that runs out of GPU memory; ``capture`` sites and the
    logit lens at ``lens_layers`` come from the same pass. Keyword ``changes`` override fields of ``options``.
    ``interventions`` (every sequence's, ``Intervention.sequence`` None) are applied in every forward pass, e.g.
    an SAE reconstruction spliced in at a site; such scores are not cached, and interventions at chosen
    positions turn prefix reuse off, since packed rows share the positions of common prefixes, unless they are
    chosen by depth alone (all positions, or a slice with non-negative bounds, e.g. all but the context token).

    Results do not depend on batch size, padding side or prefix reuse (the built-in check measures it)."""

    def __init__(self, lm: LanguageModel, options: Optional[ScoringOptions] = None, *, progress: bool = True,
                 interventions: Sequence[Intervention] = (), **changes: Any) -> None:
        self.options = replace(options or ScoringOptions(), **changes)
        self.lm, self.progress = lm, progress
        if any(iv.sequence is not None for iv in interventions):
            raise ModelError("a scorer's interventions apply to every sequence (Intervention.sequence None)")
        self.interventions = tuple(interventions)
        self.convention: Convention = get_convention(self.options.convention)
        reuse = self.convention.prefix_reuse if self.options.reuse_prefix is None else self.options.reuse_prefix
        self.reuse_prefix = reuse and all(_by_depth(iv.positions) for iv in self.interventions)
        n_logits = lm.info.get("vocab_size") or lm.model.get_output_embeddings().weight.shape[0]
        self.max_tokens = self.options.max_tokens or default_max_tokens(n_logits, lm.device)
        self.context_token_id = _context_token_id(lm.tokenizer, self.options.context_token)
        self.markers: WordMarkers = word_markers(lm.tokenizer, n_logits)
        self.statistics = TokenStatistics(self.markers, n_logits, self.convention)
        self.runner = ForwardRunner(lm)
        capture: Optional[CaptureSpec] = self.options.capture
        layers = n_layers(lm.model) if capture or self.options.lens_layers else 0
        self.sites = capture.sites(layers) if capture else []
        lens = self.options.lens_layers
        self.lens_layers = list(range(layers + 1)) if lens == "all" else list(lens or [])
        self._lens = LensHead(lm.model) if self.lens_layers else None
        lens_sites = CaptureSpec(("resid",), tuple(self.lens_layers)).sites(layers) if self.lens_layers else []
        self._recorded = list(dict.fromkeys(self.sites + lens_sites))
        if self._recorded:
            limit_heap_fragmentation()
        self._kept: dict[ScoreRequest, _Kept] = {}

    @property
    def batch_size(self) -> int:
        return self.options.batch_size

    @property
    def padding_side(self) -> str:
        return self.options.padding_side

    @property
    def word_correction(self) -> bool:
        return self.convention.word_correction and self.markers.family is not None

    def with_options(self, **changes: Any) -> "CausalScorer":
        """This scorer with some options changed (e.g. ``batch_size=1``)."""
        return CausalScorer(self.lm, replace(self.options, **changes), progress=self.progress,
                            interventions=self.interventions)

    def with_interventions(self, interventions: Sequence[Intervention]) -> "CausalScorer":
        """This scorer with these interventions applied in every forward pass."""
        return CausalScorer(self.lm, self.options, progress=self.progress, interventions=interventions)

    def reference(self) -> tuple["CausalScorer", str]:
        """One sequence at a time, padded; and what this scorer's path is."""
        path = "prefix reuse (packed rows)" if self.reuse_prefix else f"batch size {self.batch_size}"
        return self.with_options(batch_size=1, reuse_prefix=False), path

    def settings(self) -> dict[str, Any]:
        tok = self.lm.tokenizer
        return {"context_token": {"id": self.context_token_id,
                                  "token": tok.convert_ids_to_tokens(self.context_token_id)}
                if self.convention.context == "model" else "the tokenizer's own special tokens (minicons)",
                "batch_size": self.batch_size, "max_tokens": self.max_tokens, "padding_side": self.padding_side,
                "prefix_reuse": self.reuse_prefix, "word_correction": self._word_correction_description(),
                "convention": {"name": self.convention.name, "description": self.convention.description},
                "tokenizer": {"class": type(tok).__name__, "family": self.markers.family,
                              "marker": self.markers.marker, "n_word_initial_tokens": int(self.markers.bow.sum()),
                              "eos_id": self.markers.eos_id, "bos_id": tok.bos_token_id}}

    def _word_correction_description(self) -> str:
        if self.word_correction:
            return "pimentel-meister-2024"
        if self.markers.family is None:
            return "none (no word-boundary tokens)"
        return f"none ({self.convention.name} convention: surprisal is the token sum)"

    def fingerprint(self) -> dict[str, Any]:
        """What, besides the tokens of a batch, determines its numbers: the key of the score cache."""
        capture = self.options.capture
        return {**model_identity(self.lm), "convention": self.convention.name,
                "context_token": self.context_token_id, "word_markers": self.markers.family,
                "capture_sites": self.sites, "capture_dtype": capture.dtype if capture else None,
                "lens_layers": self.lens_layers}

    def encode(self, request: ScoreRequest) -> Encoded:
        """Token ids of the context (context token, prefix) and of the text, with text offsets."""
        full, start = joined_text(request, " " if self.convention.leading_space else "")
        specials = self.convention.context == "tokenizer"
        enc = self.lm.tokenizer(full, add_special_tokens=specials, return_offsets_mapping=True)
        special_ids = set(self.lm.tokenizer.all_special_ids) if specials else set()
        context = [] if specials else [self.context_token_id]
        ids, offsets = [], []
        for tok_id, span in zip(enc["input_ids"], enc["offset_mapping"]):
            if tok_id in special_ids:
                if not ids:  # what the tokenizer puts first is context; what it appends is not scored
                    context.append(tok_id)
                continue
            in_text = text_span(request, full, span, start)
            if in_text is None:
                context.append(tok_id)
                continue
            ids.append(tok_id)
            offsets.append(in_text)
        if not ids:
            raise AlignmentError(f"{request.key}: the text produced no tokens")
        return Encoded(context, ids, offsets)

    def plan(self, encoded: list[Encoded]) -> list[Batch]:
        """The forward batches for these sequences."""
        seqs = [e.sequence for e in encoded]
        if self.reuse_prefix:
            return packed_plan(seqs, min(ROW_TOKENS, self.max_tokens), self.max_tokens)
        return padded_plan(seqs, self.max_tokens, self.batch_size)

    def encode_all(self, requests: list[ScoreRequest]) -> list[Encoded]:
        """Every request encoded (or taken from ``count_tokens``); a sequence longer than the model's context is an
        error naming it."""
        kept = [self._kept.pop(r, None) for r in requests]
        encoded = [self.encode(r) if k is None else k.encoded() for r, k in zip(requests, kept)]
        limit = self.lm.max_positions
        for req, enc in zip(requests, encoded):
            if limit and len(enc.sequence) > limit:
                raise ModelError(f"{req.key}: {len(enc.sequence)} tokens exceed the model's context of "
                                 f"{limit}; shorten the stimulus or its prefix")
        return encoded

    def count_tokens(self, requests: Iterable[ScoreRequest]) -> int:
        """The text tokens ``score`` will score for these requests (what a run's progress display counts); their
        encodings are kept for that call, so that each text is tokenized once."""
        requests = list(requests)
        encoded = self.encode_all(requests)
        self._kept.update((r, _Kept.of(e)) for r, e in zip(requests, encoded))
        return sum(len(e.ids) for e in encoded)

    def score(self, requests: Iterable[ScoreRequest], *, desc: str = "scoring", consumer: Optional[Consumer] = None,
              store: Optional[ScoreStore] = None, progress: Optional[bool] = None) -> ScoreResult:
        """Score requests; returns results in request order. With activation capture, each batch's results
        (with ``activations``) go to ``consumer`` as soon as they are computed, and the activations are then
        dropped, so memory does not grow with the number of requests. ``store`` caches (and, when reading,
        reuses) each batch's results."""
        requests = list(requests)
        encoded = self.encode_all(requests)
        plan = self.plan(encoded)
        results: list[Optional[TokenScores]] = [None] * len(requests)
        stats = ScoreStats()
        show = self.progress if progress is None else progress
        bar = scoring_bar(desc, sum(len(e.ids) for e in encoded), show, standalone=len(plan) > 1)
        started = time.perf_counter()
        for batch in plan:
            order = batch.order
            outs, _ = through(None if self.interventions else store, batch.digest,
                              lambda: self._run(batch, encoded, stats))
            for i, out in zip(order, outs):
                results[i] = TokenScores(requests[i], encoded[i].ids, encoded[i].offsets, out["logprob"],
                                         out["log_bow"], out["log_nonbow"], out.get("activations"), out.get("lens"))
                stats.n_tokens += len(encoded[i].ids)
                stats.n_sequence_tokens += len(encoded[i].sequence)
            stats.n_computed += batch.n_tokens
            if consumer is not None:
                consumer([results[i] for i in order])
            for i in order:
                results[i].activations = None
            bar.advance(sum(len(encoded[i].ids) for i in order), desc)
        bar.close()
        stats.seconds = time.perf_counter() - started
        return ScoreResult(results, stats)  # type: ignore[arg-type]

    def _run(self, batch: Batch, encoded: list[Encoded], stats: ScoreStats) -> list[Output]:
        """Outputs of a batch's sequences (in ``batch.order``; ``encoded``: every request's encoding); on running
        out of memory, its halves one after the other (counted in ``stats``)."""
        try:
            return self._outputs(batch, [encoded[i] for i in batch.order])
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if not _is_oom(exc):
                raise
            if len(batch.rows) == 1:
                raise ModelError(f"out of memory on a single row of {len(batch.rows[0])} tokens; lower "
                                 f"--max-tokens or use a smaller dtype") from None
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            stats.oom_splits += 1
            log.warning("out of memory on a batch of %d rows x %d tokens: splitting it", len(batch.rows),
                        batch.width)
            half = len(batch.rows) // 2
            return (self._run(Batch(batch.rows[:half], batch.tree), encoded, stats)
                    + self._run(Batch(batch.rows[half:], batch.tree), encoded, stats))

    def _outputs(self, batch: Batch, encoded: list[Encoded]) -> list[Output]:
        """One forward pass; ``encoded`` holds the batch's sequences in ``batch.order``."""
        forward = self.runner.run(batch, padding_side=self.padding_side, record=self._recorded,
                                  interventions=self.interventions)
        outs = self.statistics.outputs(forward.logits, None, forward.columns, encoded)
        forward.logits = None
        if self.sites:
            dtype = DTYPES[self.options.capture.dtype]
            for k, (out, enc) in enumerate(zip(outs, encoded)):
                out["activations"] = {site: forward.at(site, k)[len(enc.context):].to(dtype).cpu().numpy()
                                      for site in self.sites}
        if self.lens_layers:
            self._add_lens(forward, encoded, outs)
        return outs

    def _add_lens(self, forward: ForwardPass, encoded: list[Encoded], outs: list[Output]) -> None:
        """The logit lens at each lens layer, read only at the positions the outputs use, one layer at a time."""
        needed = sorted({c for cols, enc in zip(forward.columns, encoded) for c in cols[max(len(enc.context) - 1, 0):]})
        index = torch.tensor(needed, device=self.lm.device)
        for layer in self.lens_layers:
            hidden = forward.recorded[f"resid.{layer}"]
            with torch.no_grad():
                lens = self.statistics.outputs(self._lens.logits(hidden[index]), needed, forward.columns, encoded)
            for out, lens_out in zip(outs, lens):
                out.setdefault("lens", {})[layer] = (lens_out["logprob"], lens_out["log_bow"], lens_out["log_nonbow"])
