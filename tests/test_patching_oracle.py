"""Residual-stream denoising on smollm2-135m against an independent oracle: the same patch done with nnsight
(``nnsight_reference.nnsight_resid_patch``, one unbatched sequence per call), its metric computed here.

What is independent of psyling: the forward passes (nnsight on a fresh copy of the Hugging Face model, full
forward, one sequence, no tree batch, no start layer, no copies), the token ids (the tokenizer called on the
text), the patched positions (derived here from the regions' token counts by the alignment rule: the whole
region where the counts match, else its last token) and the metric (float64 log-softmax of the nnsight logits,
the verb word's surprisal with the Pimentel & Meister correction over the BOW set = tokens that start with the
Ġ marker, plus EOS, as psyling documents it). What is shared: nothing but the model's weights and tokenizer.

nnsight_resid_patch deep-copies the model on every call (~1 s on a CPU), so the grid is a Latin square: the 6
items x 4 layers, each (item, layer) at one of the 3 regions, so that every layer x region cell is checked on
two items (48 nnsight calls); psyling's rows for the whole grid also satisfy R = 1 for region "all" (the six
subjects have the same token count in both numbers).

Precision: the model runs in float64 (its float32 weights, widened). In float32 the same patch differs between
a single-sequence forward and a batched one by up to ~2e-5 bits (matrix shapes and thread counts change the
rounding), which is the size of the 1e-5 tolerance itself; in float64 what remains is the oracle's float32
logits (nnsight_resid_patch returns them so), ~1e-6 bits. Both layouts are checked: one item a pass in padded
rows, and the default (six items a pass, tree rows: where a continuation that is a token prefix of the other
shares its positions)."""
from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from nnsight_reference import nnsight_resid_patch
from psyling.api import load
from psyling.interp.patch_runs import Layout
from psyling.interp.patching import PatchConfig, patch_set
from psyling.models.options import ModelSpec
from psyling.stimuli.io import load_set

pytestmark = pytest.mark.slow
SET = Path(__file__).resolve().parents[1] / "stimuli" / "sets" / "agreement_simple.yaml"
LAYERS = (0, 5, 15, 30)
REGIONS = ("subject", "verb", "all")
N_ITEMS = 6
LN2 = math.log(2.0)


@pytest.fixture(scope="module")
def lm():
    """smollm2-135m in float64, so that the comparison sees the patch and not float32 rounding."""
    model = load(ModelSpec("smollm2-135m"))
    model.model.to(torch.float64)
    return model


@pytest.fixture(scope="module")
def stim():
    full = load_set(SET)
    return replace(full, items=full.items[:N_ITEMS])


def _rows(lm, stim, **layout):
    config = PatchConfig(layers=LAYERS, regions=REGIONS, directions=("denoise",), **layout)
    return patch_set(lm, stim, config, progress=False).rows


@pytest.fixture(scope="module")
def rows(lm, stim):
    """One item a pass, one padded row a sequence (no position shared between sequences)."""
    return _rows(lm, stim, items_per_batch=1, layout=Layout(tree=False))


@pytest.fixture(scope="module")
def batched_rows(lm, stim):
    """The default: all 6 items in one pass, tree rows (each item's context computed once)."""
    return _rows(lm, stim)


class Oracle:
    """Token ids, positions and the word-corrected verb surprisal of one model, computed without psyling."""

    def __init__(self, lm) -> None:
        self.lm, self.tok = lm, lm.tokenizer
        n_logits = lm.model.get_output_embeddings().weight.shape[0]
        bow = torch.zeros(n_logits, dtype=torch.bool)
        for token, idx in self.tok.get_vocab().items():
            if token.startswith("Ġ") and idx < n_logits:
                bow[idx] = True
        bow[self.tok.eos_token_id] = True
        self.bow = bow

    def encode(self, subject: str, verb: str) -> tuple[list[int], range, range]:
        """[BOS] + the text's ids, the subject's positions and the verb's positions (BOS is position 0)."""
        ids = self.tok(f"{subject} {verb}", add_special_tokens=False)["input_ids"]
        n_subject = len(self.tok(subject, add_special_tokens=False)["input_ids"])
        assert ids[:n_subject] == self.tok(subject, add_special_tokens=False)["input_ids"]
        return [self.tok.bos_token_id] + ids, range(1, 1 + n_subject), range(1 + n_subject, 1 + len(ids))

    def verb_surprisal(self, logits: torch.Tensor, ids: list[int], verb: range) -> float:
        """S(verb) in bits = -log P(its tokens) + log P(BOW before it) - log P(BOW after it)."""
        logp = torch.log_softmax(logits.double(), dim=-1)
        assert bool(self.bow[ids[verb.start]])  # the verb is one word that starts with Ġ
        tokens = -sum(float(logp[p - 1, ids[p]]) for p in verb)
        log_bow = torch.logsumexp(logp[:, self.bow], dim=-1)
        return (tokens + float(log_bow[verb.start - 1]) - float(log_bow[verb.stop - 1])) / LN2

    def plain_logits(self, ids: list[int]) -> torch.Tensor:
        with torch.no_grad():
            return self.lm.model(torch.tensor([ids])).logits[0].float()


def _region_pairs(region: str, clean: tuple, corrupt: tuple) -> list[tuple[int, int]]:
    """(clean, corrupt) positions of a region ("all": every region and BOS) by the alignment rule."""
    (_, subj_c, verb_c), (_, subj_k, verb_k) = clean, corrupt
    subject = list(zip(subj_c, subj_k)) if len(subj_c) == len(subj_k) else [(subj_c[-1], subj_k[-1])]
    verb = list(zip(verb_c, verb_k))
    return {"subject": [subject[-1]], "verb": [verb[-1]], "all": [(0, 0)] + subject + verb}[region]


def _conditions(item) -> dict[str, tuple[str, str]]:
    """(clean subject, corrupt subject) and the good and bad verbs of the set's design pair."""
    cond = item.conditions
    subject = {c: cond[c].regions[0] for c in ("sg_match", "pl_match")}
    return {"clean": subject["sg_match"], "corrupt": subject["pl_match"],
            "good": cond["sg_match"].regions[1], "bad": cond["sg_mismatch"].regions[1]}


def _oracle_m(oracle: Oracle, item, layer: int, region: str) -> float:
    """M of the corrupted context with the clean residual stream at ``layer`` patched in, through nnsight."""
    text = _conditions(item)
    surprisal = {}
    for cont in ("good", "bad"):
        clean, corrupt = oracle.encode(text["clean"], text[cont]), oracle.encode(text["corrupt"], text[cont])
        pairs = _region_pairs(region, clean, corrupt)
        logits = nnsight_resid_patch(oracle.lm.model, oracle.tok, corrupt[0], clean[0], layer,
                                     [b for _, b in pairs], [a for a, _ in pairs])
        surprisal[cont] = oracle.verb_surprisal(logits, corrupt[0], corrupt[2])
    return surprisal["bad"] - surprisal["good"]


def _unpatched_m(oracle: Oracle, item, context: str) -> float:
    text = _conditions(item)
    s = {}
    for cont in ("good", "bad"):
        ids, _, verb = oracle.encode(text[context], text[cont])
        s[cont] = oracle.verb_surprisal(oracle.plain_logits(ids), ids, verb)
    return s["bad"] - s["good"]


def _row(rows, item: str, layer: int, region: str) -> dict:
    (row,) = rows[(rows["item"] == item) & (rows["layer"] == layer) & (rows["region"] == region)].to_dict("records")
    return row


def test_clean_and_corrupt_metrics_match_a_plain_forward(lm, stim, rows, batched_rows):
    oracle = Oracle(lm)
    for item in stim.items:
        row, batched = _row(rows, item.id, LAYERS[0], "subject"), _row(batched_rows, item.id, LAYERS[0], "subject")
        for context in ("clean", "corrupt"):
            expected = _unpatched_m(oracle, item, context)
            assert abs(row[f"m_{context}"] - expected) < 1e-5
            assert abs(batched[f"m_{context}"] - expected) < 1e-5
    gaps = rows["m_clean"] - rows["m_corrupt"]
    assert (gaps > 0.1).mean() > 0.5  # the model mostly agrees: a contrast to patch


@pytest.fixture(scope="module")
def oracle_values(lm, stim) -> dict[tuple[str, int, str], float]:
    """The nnsight M_patched of the Latin square: item i, layer j at region (i + j) mod 3."""
    oracle = Oracle(lm)
    return {(item.id, layer, REGIONS[(i + j) % len(REGIONS)]): _oracle_m(oracle, item, layer,
                                                                        REGIONS[(i + j) % len(REGIONS)])
            for i, item in enumerate(stim.items) for j, layer in enumerate(LAYERS)}


def test_resid_denoising_equals_the_nnsight_patch(rows, oracle_values):
    assert len(rows) == N_ITEMS * len(LAYERS) * len(REGIONS) and rows["computed"].all()
    checked = {}
    for (item, layer, region), expected in oracle_values.items():
        got = _row(rows, item, layer, region)["m_patched"]
        assert abs(got - expected) < 1e-5, (item, layer, region, got, expected)
        checked[(layer, region)] = checked.get((layer, region), 0) + 1
    assert checked == {(layer, region): 2 for layer in LAYERS for region in REGIONS}
    everything = rows[rows["region"] == "all"]
    np.testing.assert_allclose(everything["m_patched"], everything["m_clean"], rtol=0, atol=1e-5)


def test_the_default_layout_equals_the_nnsight_patch(batched_rows, oracle_values):
    """The default layout (six items a pass, tree rows) against the same oracle values."""
    for key, value in oracle_values.items():
        got = _row(batched_rows, *key)["m_patched"]
        assert abs(got - value) < 1e-5, (*key, got, value)
