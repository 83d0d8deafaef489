"""Scoring conventions: how other tools turn a sentence into scored tokens, as named modes, so that numbers
published with those tools can be matched. The default is psyling's own (DESIGN.md, "Scoring conventions")."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ModelError


@dataclass(frozen=True)
class Convention:
    """``context``: "model" puts the context token (BOS, else EOS, or the one chosen) before every text;
    "tokenizer" uses only what the tokenizer itself inserts (add_special_tokens=True) and, where it inserts
    nothing, leaves the first token unscored. ``leading_space``: a text with no prefix is scored as " " + text
    (lm-eval-harness's target delimiter), which re-tokenizes its first word. ``word_correction``: Pimentel &
    Meister's word-probability correction; without it ``surprisal`` is the plain token sum, like
    ``surprisal_raw``. ``normaliser``: how log Z is computed: "float64" sums (psyling), or in the logits' own
    dtype as lm-eval-harness ("log_softmax") and minicons ("logsumexp") do; in float32 these differ by up to
    ~3e-4 nats per sentence on a 49k vocabulary. ``prefix_reuse``: the default for prefix reuse; the conventions that
    reproduce other tools' sentence sums run padded, since packed rows shift float32 logits by up to ~2e-4 nats
    per sentence (per token well within psyling's 1e-4 bits)."""
    name: str
    context: str
    leading_space: bool
    word_correction: bool
    normaliser: str
    prefix_reuse: bool
    description: str


CONVENTIONS = {c.name: c for c in (
    Convention("psyling", "model", False, True, "float64", True,
               "context token (BOS, else EOS) before each text; Pimentel & Meister word correction"),
    Convention("lm-eval", "model", True, False, "log_softmax", False,
               "lm-eval-harness loglikelihood with an empty context: BOS (else EOS) then ' ' + text; token sums"),
    Convention("minicons", "tokenizer", False, False, "logsumexp", False,
               "minicons sequence_score without bos_token: the tokenizer's own special tokens only; where it adds "
               "none the first token is unscored (NaN, counted as 0 in sums); token sums"),
    Convention("syntaxgym", "model", False, False, "float64", True,
               "SyntaxGym / Hu et al. 2020: context token, region surprisal as the plain sum of token surprisals"),
)}


def get_convention(name: str) -> Convention:
    """The named convention, or a one-line ModelError listing the known ones."""
    try:
        return CONVENTIONS[name]
    except KeyError:
        raise ModelError(f"unknown scoring convention {name!r} (choose from {', '.join(CONVENTIONS)})") from None
