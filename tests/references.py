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


def _kept_intact(tokenizer):
    """The tokenizer itself if lm-eval and minicons would leave it as it is (it has a pad token and pads on the
    right), else a copy for them to set those on (a deep copy takes ~0.1 s, which would count in timings)."""
    if tokenizer.pad_token is not None and tokenizer.padding_side == "right":
        return tokenizer
    return copy.deepcopy(tokenizer)


def lmeval_blimp_loglik(model, tokenizer, sentences: list[str], batch_size: int = 64) -> np.ndarray:
    """Sentence log-likelihood (nats) as lm-evaluation-harness's BLiMP task computes it: ``HFLM.loglikelihood``
    with context "" and continuation " " + sentence (doc_to_text "", target_delimiter " ").

    With an empty context, lm-eval conditions on one token, ``HFLM.prefix_token_id``: the tokenizer's BOS id, else
    its EOS id (for smollm2-135m: BOS ``<|im_start|>``, id 1). The continuation is tokenized with its leading space
    and no special tokens; if it starts with the prefix token itself, that token becomes the context instead."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=_kept_intact(tokenizer), batch_size=batch_size)
    requests = [Instance(request_type="loglikelihood", doc={}, arguments=("", " " + s), idx=i)
                for i, s in enumerate(sentences)]
    return np.array([loglik for loglik, _ in lm.loglikelihood(requests, disable_tqdm=True)], dtype=float)


def minicons_sequence_loglik(model, tokenizer, sentences: list[str], batch_size: int = 64) -> np.ndarray:
    """Sentence log-probability (nats) from minicons ``IncrementalLMScorer.sequence_score`` with its default BOS
    handling (bos_token=False: the tokenizer's own special tokens only, so the first token is not scored).
    minicons pads and runs whatever list it is given as one batch, so the sentences go in chunks of batch_size,
    in their given order."""
    from minicons.scorer import IncrementalLMScorer

    scorer = IncrementalLMScorer(model, device=str(model.device), tokenizer=_kept_intact(tokenizer))
    sums: list[float] = []
    for i in range(0, len(sentences), batch_size):
        sums += scorer.sequence_score(sentences[i:i + batch_size], reduction=lambda x: x.sum(0).item())
    return np.array(sums, dtype=float)
