"""What every scorer shares: requests, per-token results, per-call statistics and the ``Scorer`` protocol that the
causal (``psyling.models.scoring``) and masked (``psyling.models.masked``) scorers implement."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from typing import Any, Callable, Iterable, Iterator, Optional, Protocol, Sequence, runtime_checkable

import numpy as np

from .. import __version__
from ..errors import AlignmentError
from .loading import LanguageModel
from .options import ScoringOptions
from .store import ScoreStore
from .vocab import WordMarkers
from ..stimuli.schema import StimulusSet

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
        """These scores as the logit lens reads them at ``layer`` (needs a scorer with lens layers)."""
        logprob, log_bow, log_nonbow = self.lens[layer]
        return TokenScores(self.request, self.token_ids, self.offsets, logprob, log_bow, log_nonbow)


@dataclass
class ScoreStats:
    """The work of one ``score`` call: text tokens scored, tokens the plan runs through the model (shared
    prefixes once, padding excluded; masked LMs: every copy; batches read from the score cache included),
    tokens the sequences hold (the cost without prefix reuse), out-of-memory splits, seconds."""
    n_tokens: int = 0
    n_computed: int = 0
    n_sequence_tokens: int = 0
    oom_splits: int = 0
    seconds: float = 0.0

    def __add__(self, other: "ScoreStats") -> "ScoreStats":
        return ScoreStats(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


@dataclass
class ScoreResult(Sequence[TokenScores]):
    """The scores of a ``score`` call in request order (a sequence of TokenScores), with its statistics."""
    scores: list[TokenScores]
    stats: ScoreStats

    def __getitem__(self, index):  # type: ignore[override]
        return self.scores[index]

    def __len__(self) -> int:
        return len(self.scores)

    def __iter__(self) -> Iterator[TokenScores]:
        return iter(self.scores)


Consumer = Callable[[list[TokenScores]], None]


def set_requests(stim: StimulusSet) -> list[ScoreRequest]:
    """One scoring request per item x condition of a set, keyed (set, item, condition)."""
    return [ScoreRequest((stim.name, item.id, c), item.conditions[c].text, item.conditions[c].prefix)
            for item in stim.items for c in stim.conditions]


@runtime_checkable
class Scorer(Protocol):
    """A scorer turns requests into per-token log-probabilities (and word-boundary masses) with one model.
    ``score`` returns results in request order, gives each finished batch to ``consumer`` (with activations,
    dropped afterwards) and caches batches in ``store``; ``reference`` is the same scorer one sequence at a
    time (the invariance check's reference) with a description of the path it is compared with."""
    lm: LanguageModel
    options: ScoringOptions
    markers: WordMarkers
    word_correction: bool
    max_tokens: int
    reuse_prefix: bool
    sites: list[str]
    lens_layers: list[int]

    def score(self, requests: Iterable[ScoreRequest], *, desc: str = "scoring", consumer: Optional[Consumer] = None,
              store: Optional[ScoreStore] = None, progress: Optional[bool] = None) -> ScoreResult: ...

    def with_options(self, **changes: Any) -> "Scorer": ...

    def reference(self) -> tuple["Scorer", str]: ...

    def settings(self) -> dict[str, Any]: ...

    def fingerprint(self) -> dict[str, Any]: ...


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
