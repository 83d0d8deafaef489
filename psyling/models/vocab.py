"""What a tokenizer says about word boundaries: its marker and the set of word-initial tokens."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from ..errors import ModelError

FAMILIES = {"Ġ": "byte-level BPE (Ġ marker)", "▁": "SentencePiece (▁ marker)"}


@dataclass(frozen=True)
class WordMarkers:
    """``bow``: boolean mask over the output vocabulary of tokens that begin a new word (the BOW set of
    Pimentel & Meister 2024), plus EOS. ``marker`` is the prefix character, or None where whitespace is
    its own token; ``family`` is None where the tokenizer marks no word boundaries at all."""
    family: Optional[str]
    marker: Optional[str]
    bow: torch.Tensor
    eos_id: Optional[int]


def _detect_marker(tokenizer: Any) -> Optional[str]:
    enc = tokenizer("a b", add_special_tokens=False, return_offsets_mapping=True)
    for tok_id, (start, end) in zip(enc["input_ids"], enc["offset_mapping"]):
        if start <= 2 < end or (start == end == 2):
            raw = tokenizer.convert_ids_to_tokens(tok_id)
            if len(raw) == 2 and raw[1] == "b":  # the marker is what stands for the space
                return raw[0]
    return None


def word_markers(tokenizer: Any, n_logits: int) -> WordMarkers:
    """Find the word-boundary tokens of a tokenizer over ``n_logits`` output ids."""
    bow = torch.zeros(n_logits, dtype=torch.bool)
    marker = _detect_marker(tokenizer)
    if marker is not None:
        for token, idx in tokenizer.get_vocab().items():
            if token and token[0] == marker and idx < n_logits:
                bow[idx] = True
        family = FAMILIES.get(marker, f"marker {marker!r}")
    else:  # no marker: tokens that decode to text starting with whitespace (e.g. a separate space token)
        for idx in range(min(len(tokenizer), n_logits)):
            text = tokenizer.decode([idx])
            if text[:1].isspace():
                bow[idx] = True
        family = "whitespace tokens" if bool(bow.any()) else None
    eos = tokenizer.eos_token_id
    if eos is not None and eos >= n_logits:
        raise ModelError(f"EOS id {eos} is outside the model's {n_logits} output logits")
    return WordMarkers(family, marker, bow, eos)
