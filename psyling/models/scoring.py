"""Batched scoring: per-token log-probabilities over the full vocabulary, plus the word-boundary masses
that the Pimentel & Meister word correction needs, from one forward pass per batch.

By default sequences that share a token prefix (the context token, a prime, the words before a minimal pair's
difference) compute it once: they are merged into a prefix trie packed into rows with a tree attention mask
(``psyling.models.packing``). The padded path (one sequence per row) is the reference; a run re-scores a sample
on it at batch size 1 and records the largest difference."""
from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional, Sequence, Union

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import __version__
from ..errors import AlignmentError, ModelError
from .capture import DTYPES, Capture, CaptureSpec, LensHead, limit_heap_fragmentation, n_layers
from .conventions import Convention, get_convention
from .loading import LanguageModel
from .packing import Batch, packed_plan, padded_plan
from .store import Output, ScoreStore, through
from .vocab import WordMarkers, word_markers

Key = tuple
ROW_TOKENS = 256  # packed row length: attention over a row costs ~4% of the linear layers at this length
STATS_CHUNK = 256  # positions whose log-softmax statistics are computed together
VOCAB_BLOCK = 256  # vocabulary entries summed in float32 before the float64 sum
LOGITS_BUDGET = {"cpu": 2**28, "gpu": 2**31}  # bytes of float32 logits per batch behind the default max_tokens
log = logging.getLogger("psyling")


@dataclass(frozen=True)
class ScoreRequest:
    """A text to score after an optional (unscored) prefix; ``key`` identifies it, e.g. (set, item, condition)."""
    key: Key
    text: str
    prefix: str = ""


@dataclass
class TokenScores:
    """Scores of the tokens of one request. Offsets are character spans in ``request.text``.
    ``logprob`` (nats) per token (NaN for a first token with nothing before it, minicons convention);
    ``log_bow`` (nats, one longer) is log P(next token is word-initial or EOS) before each token and after the
    last; ``log_nonbow_first`` is log P(next token is not word-initial) before the first token."""
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


@dataclass
class Encoded:
    """A request as token ids: ``context`` (never scored) then ``ids`` (the text) with their ``offsets``."""
    context: list[int]
    ids: list[int]
    offsets: list[tuple[int, int]]

    @property
    def sequence(self) -> list[int]:
        return self.context + self.ids


def joined_text(request: ScoreRequest, lead: str = "") -> tuple[str, int]:
    """What is tokenized for a request (prefix, one space, text; or ``lead`` + text) and where the text starts."""
    if request.prefix:
        return f"{request.prefix} {request.text}", len(request.prefix) + 1
    return lead + request.text, len(lead)


def text_span(request: ScoreRequest, full: str, span: tuple[int, int], start: int) -> Optional[tuple[int, int]]:
    """A token's character span within the request's text, or None for a token of the prefix (context)."""
    s, e = span
    if e < start:  # ends before the space that separates prefix and text
        return None
    if s < start - 1:
        raise AlignmentError(f"{request.key}: token {full[s:e]!r} spans the prefix and the sentence")
    return max(s - start, 0), e - start


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


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


class Scorer:
    """Scores texts with one model: shared prefixes computed once (``reuse_prefix``), batches filled up to
    ``max_tokens`` tokens (default: from the vocabulary size and device), explicit attention masks and position
    ids, halving a batch that runs out of GPU memory. ``reuse_prefix`` None takes the convention's default (on
    for psyling's own); ``batch_size`` caps sequences per batch on the padded path (``reuse_prefix=False``).
    The ``store`` given to ``score`` caches each batch's results (``psyling.models.store``).

    Results do not depend on batch size, padding side or prefix reuse (the built-in check measures it)."""

    def __init__(self, lm: LanguageModel, *, context_token: Union[str, int, None] = None, batch_size: int = 32,
                 max_tokens: Optional[int] = None, reuse_prefix: Optional[bool] = None, padding_side: str = "right",
                 progress: bool = True, capture: Optional[CaptureSpec] = None,
                 lens_layers: Optional[Sequence[int]] = None, convention: str = "psyling") -> None:
        if batch_size < 1:
            raise ModelError("batch size must be at least 1")
        if max_tokens is not None and max_tokens < 1:
            raise ModelError("max tokens must be at least 1")
        if padding_side not in ("left", "right"):
            raise ModelError("padding side must be 'left' or 'right'")
        self.lm, self.batch_size, self.padding_side, self.progress = lm, batch_size, padding_side, progress
        self.convention: Convention = get_convention(convention)
        self.reuse_prefix = self.convention.prefix_reuse if reuse_prefix is None else reuse_prefix
        n_logits = lm.info.get("vocab_size") or lm.model.get_output_embeddings().weight.shape[0]
        self.max_tokens = max_tokens or default_max_tokens(n_logits, lm.device)
        self.context_token_id = _context_token_id(lm.tokenizer, context_token)
        self.markers: WordMarkers = word_markers(lm.tokenizer, n_logits)
        bow_eos = self.markers.bow.clone()  # word-initial tokens or EOS: the word-boundary set
        if self.markers.eos_id is not None:
            bow_eos[self.markers.eos_id] = True
        # columns: everything, the word-boundary set, tokens that do not begin a word (EOS included); the
        # whole blocks of VOCAB_BLOCK entries in float32, the remainder in float64
        columns = torch.stack([torch.ones_like(bow_eos), bow_eos, ~self.markers.bow], 1)
        split = n_logits // VOCAB_BLOCK * VOCAB_BLOCK
        self._blocked_columns = columns[:split].float().reshape(split // VOCAB_BLOCK, VOCAB_BLOCK, -1)
        self._tail_columns = columns[split:].double()
        self.capture = capture
        self.sites = capture.sites(n_layers(lm.model)) if capture else []
        self.lens_layers = list(lens_layers or [])
        self._lens = LensHead(lm.model) if self.lens_layers else None
        lens_sites = CaptureSpec(("resid",), tuple(self.lens_layers)).sites(n_layers(lm.model)) if lens_layers else []
        self._hooked = list(dict.fromkeys(self.sites + lens_sites))
        if self._hooked:
            limit_heap_fragmentation()
        self.n_tokens = 0  # text tokens scored
        self.n_computed = 0  # tokens run through the model (shared prefixes once), padding excluded
        self.n_sequence_tokens = 0  # tokens the sequences hold, context included: the cost without reuse
        self.oom_splits = 0
        self.seconds = 0.0

    @property
    def word_correction(self) -> bool:
        return self.convention.word_correction and self.markers.family is not None

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
        return {**model_identity(self.lm), "convention": self.convention.name,
                "context_token": self.context_token_id, "word_markers": self.markers.family,
                "capture_sites": self.sites, "capture_dtype": self.capture.dtype if self.capture else None,
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

    def plan(self, encoded: list[Encoded], *, batch_size: Optional[int] = None,
             reuse_prefix: Optional[bool] = None) -> list[Batch]:
        """The forward batches for these sequences."""
        seqs = [e.sequence for e in encoded]
        if self.reuse_prefix if reuse_prefix is None else reuse_prefix:
            return packed_plan(seqs, min(ROW_TOKENS, self.max_tokens), self.max_tokens)
        return padded_plan(seqs, self.max_tokens, batch_size or self.batch_size)

    def score(self, requests: Iterable[ScoreRequest], *, batch_size: Optional[int] = None,
              padding_side: Optional[str] = None, reuse_prefix: Optional[bool] = None,
              progress: Optional[bool] = None, desc: str = "scoring",
              consumer: Optional[Callable[[list[TokenScores]], None]] = None,
              store: Optional[ScoreStore] = None) -> list[TokenScores]:
        """Score requests; returns results in request order. With activation capture, each batch's results
        (with ``activations``) go to ``consumer`` as soon as they are computed, and the activations are then
        dropped, so memory does not grow with the number of requests. ``store`` caches (and, when reading,
        reuses) each batch's results."""
        requests = list(requests)
        encoded = [self.encode(r) for r in requests]
        limit = self.lm.max_positions
        for req, enc in zip(requests, encoded):
            if limit and len(enc.sequence) > limit:
                raise ModelError(f"{req.key}: {len(enc.sequence)} tokens exceed the model's context of "
                                 f"{limit}; shorten the stimulus or its prefix")
        plan = self.plan(encoded, batch_size=batch_size, reuse_prefix=reuse_prefix)
        padding_side = padding_side or self.padding_side
        results: list[Optional[TokenScores]] = [None] * len(requests)
        show = self.progress if progress is None else progress
        bar = tqdm(total=sum(b.n_tokens for b in plan), desc=desc, unit="tok", unit_scale=True,
                   disable=not show or len(plan) < 2)
        started = time.perf_counter()
        for batch in plan:
            order = batch.order
            outs, _ = through(store, batch.digest, lambda: self._run(batch, encoded, padding_side))
            for i, out in zip(order, outs):
                results[i] = TokenScores(requests[i], encoded[i].ids, encoded[i].offsets, out["logprob"],
                                         out["log_bow"], out["log_nonbow"], out.get("activations"), out.get("lens"))
                self.n_tokens += len(encoded[i].ids)
                self.n_sequence_tokens += len(encoded[i].sequence)
            self.n_computed += batch.n_tokens
            if consumer is not None:
                consumer([results[i] for i in order])
            for i in order:
                results[i].activations = None
            bar.update(batch.n_tokens)
        bar.close()
        self.seconds += time.perf_counter() - started
        return results  # type: ignore[return-value]

    def _run(self, batch: Batch, encoded: list[Encoded], padding_side: str) -> list[Output]:
        """Outputs of a batch's sequences (in ``batch.order``; ``encoded``: every request's encoding); on running
        out of memory, its halves one after the other."""
        try:
            return self._forward(batch, [encoded[i] for i in batch.order], padding_side)
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if not _is_oom(exc):
                raise
            if len(batch.rows) == 1:
                raise ModelError(f"out of memory on a single row of {len(batch.rows[0])} tokens; lower "
                                 f"--max-tokens or use a smaller dtype") from None
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            self.oom_splits += 1
            log.warning("out of memory on a batch of %d rows x %d tokens: splitting it", len(batch.rows),
                        batch.width)
            half = len(batch.rows) // 2
            return (self._run(Batch(batch.rows[:half], batch.tree), encoded, padding_side)
                    + self._run(Batch(batch.rows[half:], batch.tree), encoded, padding_side))

    @torch.no_grad()
    def _forward(self, batch: Batch, encoded: list[Encoded], padding_side: str) -> list[Output]:
        """One forward pass; ``encoded`` holds the batch's sequences in ``batch.order``."""
        width, device = batch.width, self.lm.device
        n_rows = len(batch.rows)
        input_ids = torch.zeros((n_rows, width), dtype=torch.long)
        positions = torch.zeros((n_rows, width), dtype=torch.long)
        starts = []
        for r, row in enumerate(batch.rows):
            start = width - len(row) if padding_side == "left" and not batch.tree else 0
            starts.append(start)
            input_ids[r, start:start + len(row)] = torch.tensor(row.tokens)
            positions[r, start:start + len(row)] = torch.tensor(row.positions)
        if batch.tree:
            mask = torch.from_numpy(np.stack([row.ancestor_mask(width) for row in batch.rows]))[:, None]
        else:
            mask = torch.zeros((n_rows, width), dtype=torch.long)
            for r, row in enumerate(batch.rows):
                mask[r, starts[r]:starts[r] + len(row)] = 1
        with Capture(self.lm.model, self._hooked) as captured:
            logits = self.lm.model(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                                   position_ids=positions.to(device), use_cache=False).logits
        flat = n_rows * width
        columns = [[r * width + starts[r] + j for j in row.paths[i]] for r, row in enumerate(batch.rows)
                   for i in sorted(row.paths)]  # each sequence's flat positions (batch.order), context included
        if self.sites:
            dtype = DTYPES[self.capture.dtype]
            text = [torch.tensor(cols[len(enc.context):], device=device) for cols, enc in zip(columns, encoded)]
            values = {site: captured.values[site].reshape(flat, -1) for site in self.sites}
        lens_inputs = {layer: captured.values[f"resid.{layer}"].reshape(flat, -1) for layer in self.lens_layers}
        outs = self._token_outputs(logits.reshape(flat, -1), None, columns, encoded)
        del logits
        if self.sites:
            for out, positions in zip(outs, text):
                out["activations"] = {site: v[positions].to(dtype).cpu().numpy() for site, v in values.items()}
        if lens_inputs:  # the lens reads only the positions the outputs use, one layer at a time
            needed = sorted({c for cols, enc in zip(columns, encoded) for c in cols[max(len(enc.context) - 1, 0):]})
            index = torch.tensor(needed, device=device)
            for layer, hidden in lens_inputs.items():
                lens = self._token_outputs(self._lens.logits(hidden[index]), needed, columns, encoded)
                for out, lens_out in zip(outs, lens):
                    out.setdefault("lens", {})[layer] = (lens_out["logprob"], lens_out["log_bow"],
                                                         lens_out["log_nonbow"])
        return outs

    def _token_outputs(self, logits: torch.Tensor, needed: Optional[list[int]], columns: list[list[int]],
                       encoded: list[Encoded]) -> list[Output]:
        """Per sequence: log P of each text token (nats), the word-boundary masses and the first-word term.
        ``logits`` is [positions, vocab]: every flat position of the batch (``needed`` None), or the rows of
        the flat positions in ``needed``. It is overwritten."""
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
        log_z, log_bow, log_nonbow = self._log_masses(logits)
        missing = idx < 0
        logprob = np.where(missing, np.nan, target_logits - log_z[idx.clip(0)])
        bow = np.where(missing, np.nan, log_bow[idx.clip(0)])
        nonbow = np.where(missing, np.nan, log_nonbow[idx.clip(0)])
        return [{"logprob": logprob[a:b - 1], "log_bow": bow[a:b], "log_nonbow": float(nonbow[a])}
                for a, b in zip(bounds[:-1], bounds[1:])]

    def _log_masses(self, logits: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """log Z, log P(word boundary) and log P(not word-initial) at every row of ``logits`` (overwritten), in
        float64. Exponentials in float32 after subtracting the row maximum; sums over blocks of 256 vocabulary
        entries in float32, then over blocks in float64: within 1e-6 of a float64 log-softmax (a plain float32
        one over a large vocabulary is biased by ~1e-5 nats per token). Conventions that normalise in the
        logits' dtype (lm-eval: log_softmax, minicons: logsumexp) get their log Z instead."""
        blocked = self._blocked_columns.to(logits.device)
        tail = self._tail_columns.to(logits.device)
        n_blocks = blocked.shape[0]
        split = n_blocks * VOCAB_BLOCK
        parts = []
        for x in logits.split(STATS_CHUNK):
            log_z = {"float64": lambda: None,
                     "log_softmax": lambda: x.max(dim=1).values.double() - torch.log_softmax(x, dim=-1).max(dim=1)
                     .values.double(),
                     "logsumexp": lambda: torch.logsumexp(x, dim=-1).double()}[self.convention.normaliser]()
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


def model_identity(lm: LanguageModel) -> dict[str, Any]:
    """The part of a score-cache key that names the model: weights (file digest, revision, or a digest of the
    parameters of an in-memory model), tokenizer vocabulary, dtype, device type, psyling version."""
    info = lm.info
    vocab = hashlib.sha256(repr(sorted(lm.tokenizer.get_vocab().items())).encode()).hexdigest()
    weights = info.get("sha256") or info.get("revision") or _parameter_digest(lm.model)
    return {"psyling_version": __version__, "model": {"id": info.get("id"), "weights": weights,
                                                      "class": info.get("class")},
            "tokenizer_vocab": vocab, "dtype": str(next(lm.model.parameters()).dtype),
            "device_type": lm.device.type}


def _parameter_digest(model: Any) -> str:
    """A digest of a model's parameters, for in-memory models with no file digest or revision."""
    digest = hashlib.sha256()
    for name, param in sorted(model.state_dict().items()):
        digest.update(name.encode() + param.detach().cpu().float().numpy().tobytes())
    return digest.hexdigest()
