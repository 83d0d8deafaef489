"""Independent computations that psyling's numbers are tested against: Pimentel & Meister's reference package
``wordsprobability`` (subclassed to run on a local model), minicons, and a plain transformers loop."""
from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import torch

LN2 = math.log(2.0)


def one_bos(tokenizer):
    """A copy of the tokenizer that does not insert BOS itself (Gemma's does: a second one adds ~25 bits)."""
    tok = copy.deepcopy(tokenizer)
    if tok("a")["input_ids"][0] == tok.bos_token_id:
        tok.add_bos_token = False
        assert tok("a")["input_ids"][0] != tok.bos_token_id
    return tok


def wordsprobability_bits(model, tokenizer, sentences: list[str], marker: str) -> list[np.ndarray]:
    """Word surprisal (bits) from ``wordsprobability``'s BaseBOWModel on the given local model."""
    import wordsprobability.main as wp_main
    from wordsprobability.models.bow_lm import BaseBOWModel

    tok = one_bos(tokenizer)  # the reference adds BOS itself

    class Float64Logits(torch.nn.Module):
        """The same weights; logits handed to the reference in float64 (its float32 log-softmax over a large
        vocabulary is biased by ~1e-5 nats per token, which adds up past 1e-4 bits on long words)."""

        def __init__(self):
            super().__init__()
            self.inner = model

        @property
        def device(self):
            return self.inner.device

        def forward(self, input_ids, labels=None):
            out = self.inner(input_ids)
            logits = out["logits"].double()
            out["logits"] = logits
            if labels is not None:  # the reference checks its own sums against the model's mean loss
                out["loss"] = torch.nn.functional.cross_entropy(logits[0, :-1], labels[0, 1:])
            return out

    class LocalModel(BaseBOWModel):
        bow_symbol = marker

        def _initialise_model(self):
            return Float64Logits(), tok

        def _get_n_logits(self):
            return model.get_output_embeddings().weight.shape[0]

    ref = LocalModel()
    frames = []
    for i, sentence in enumerate(sentences):
        results, offsets = ref.get_predictions(sentence)
        frame = pd.DataFrame(results)
        frame["text_id"], frame["offsets"] = i, offsets
        frames.append(frame)
    original = wp_main.get_bow_symbol
    wp_main.get_bow_symbol = lambda _: marker
    try:
        words = wp_main.agg_surprisal_per_word(pd.concat(frames), "local").reset_index()
    finally:
        wp_main.get_bow_symbol = original
    return [words[words.text_id == i].surprisal.to_numpy(dtype=float) / LN2 for i in range(len(sentences))]


def minicons_sums_bits(model, tokenizer, sentences: list[str]) -> np.ndarray:
    """Sentence surprisal (bits) from minicons IncrementalLMScorer with bos_token=True (one BOS only)."""
    from minicons.scorer import IncrementalLMScorer

    tok = one_bos(tokenizer)  # minicons adds BOS itself with bos_token=True
    scorer = IncrementalLMScorer(model, device="cpu", tokenizer=tok)
    sums = scorer.sequence_score(sentences, reduction=lambda x: x.sum(0).item(), bos_token=True)
    return -np.array(sums) / LN2


@torch.no_grad()
def plain_token_bits(model, tokenizer, sentence: str, context_id: int) -> np.ndarray:
    """Token surprisal (bits) from one unbatched forward pass: [context] + tokens."""
    ids = tokenizer(sentence, add_special_tokens=False)["input_ids"]
    logits = model(torch.tensor([[context_id, *ids]])).logits[0].double()
    lsm = torch.log_softmax(logits, -1)
    return -lsm[:-1].gather(1, torch.tensor(ids)[:, None])[:, 0].numpy() / LN2
