"""Masked-LM pseudo-log-likelihood scoring on a tiny random BERT, checked against minicons and plain transformers."""
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from psyling.models.scorer import set_requests
from psyling.errors import ModelError
from psyling.measures.surprisal import LN2, surprisal_tables
from psyling.models.masked import MaskedScorer, is_masked_lm
from psyling.models.scoring import ScoreRequest
from psyling.stimuli import Condition, Item, Prediction, StimulusSet
from tiny import CORPUS, byte_bpe_tokenizer, forward_shapes, tiny_bert, tiny_llama

SENTENCES = list(dict.fromkeys(CORPUS)) + ["Antidisestablishmentarianism bathed the cabinets.",
                                           "The LAZY chef's keys: visited (finally)."]
METRICS = {"pll": "original", "l2r": "within_word_l2r"}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Many small forward passes: on a busy 2-core machine, two torch threads make each ~20x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def bert():
    return tiny_bert()


def requests(sentences):
    return [ScoreRequest((i,), s) for i, s in enumerate(sentences)]


def minicons_tokens(lm, sentences, variant):
    """Per-token log P (nats) from minicons MaskedLMScorer. minicons 0.3.39 calls the tokenizer's
    batch_encode_plus, gone in transformers 5, so it gets the same call's BatchEncoding (which it accepts)."""
    from minicons.scorer import MaskedLMScorer

    scorer = MaskedLMScorer(lm.model, tokenizer=lm.tokenizer, device="cpu")
    enc = lm.tokenizer(sentences, padding="longest", return_attention_mask=True)
    sums = scorer.sequence_score(enc, PLL_metric=METRICS[variant], reduction=lambda x: x.sum(0).item())
    tokens = scorer.token_score(enc, PLL_metric=METRICS[variant])
    return np.array(sums), tokens


@pytest.mark.parametrize("variant", ["pll", "l2r"])
def test_sentence_and_token_scores_equal_minicons(bert, variant):
    ours = MaskedScorer(bert, masked_variant=variant, progress=False).score(requests(SENTENCES))
    sums, tokens = minicons_tokens(bert, SENTENCES, variant)
    assert any(len(bert.tokenizer.tokenize(w)) > 3 for s in SENTENCES for w in s.split())  # multi-token words
    np.testing.assert_allclose([s.logprob.sum() for s in ours], sums, atol=1e-4, rtol=0)
    for scored, ref in zip(ours, tokens):
        assert bert.tokenizer.convert_ids_to_tokens(scored.token_ids) == [t for t, _ in ref]
        np.testing.assert_allclose(scored.logprob, [v for _, v in ref], atol=1e-5, rtol=0)


def test_l2r_differs_from_pll_only_before_the_end_of_a_word(bert):
    pll = MaskedScorer(bert, masked_variant="pll", progress=False).score(requests(SENTENCES))
    l2r = MaskedScorer(bert, masked_variant="l2r", progress=False).score(requests(SENTENCES))
    inner_diffs = []
    for a, b in zip(pll, l2r):
        tokens = bert.tokenizer.convert_ids_to_tokens(a.token_ids)
        inner = np.array([nxt.startswith("##") for nxt in tokens[1:]] + [False])  # the word goes on to the right
        inner_diffs += np.abs(a.logprob[inner] - b.logprob[inner]).tolist()
        np.testing.assert_allclose(a.logprob[~inner], b.logprob[~inner], atol=1e-5, rtol=0)
    # masking the rest of the word changes the others (a random model may barely react to one): fp32 noise ~1e-6
    assert len(inner_diffs) > 20 and np.mean(np.array(inner_diffs) > 1e-4) > 0.8


@torch.no_grad()
def test_prefix_is_context_only_and_matches_a_plain_masked_loop(bert):
    prefix, text = "The keys to the cabinet.", "Dogs bark, cats meow."
    scored = MaskedScorer(bert, masked_variant="pll", progress=False).score([ScoreRequest(("k",), text, prefix)])[0]
    enc = bert.tokenizer(f"{prefix} {text}", return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    start = len(prefix) + 1
    positions = [p for p, (s, e) in enumerate(offsets) if s >= start]
    expected = []
    for p in positions:  # [CLS] prefix text [SEP], one token masked at a time
        masked = torch.tensor([ids])
        masked[0, p] = bert.tokenizer.mask_token_id
        logits = bert.model(input_ids=masked).logits[0, p].double()
        expected.append(torch.log_softmax(logits, -1)[ids[p]].item())
    assert scored.token_ids == [ids[p] for p in positions]
    assert scored.offsets == [(offsets[p][0] - start, offsets[p][1] - start) for p in positions]
    np.testing.assert_allclose(scored.logprob, expected, atol=1e-5, rtol=0)  # batched copies: float32 rounding ~1e-6
    alone = MaskedScorer(bert, progress=False).score([ScoreRequest(("k",), text)])[0]
    assert alone.token_ids == scored.token_ids
    assert np.max(np.abs(alone.logprob - scored.logprob)) > 1e-3  # the prefix is seen as context


@pytest.mark.parametrize("variant", ["pll", "l2r"])
def test_scores_do_not_depend_on_max_tokens(bert, variant):
    big = MaskedScorer(bert, masked_variant=variant, max_tokens=4096, progress=False).score(requests(SENTENCES))
    for max_tokens in (16, 1):
        small = MaskedScorer(bert, masked_variant=variant, max_tokens=max_tokens, progress=False).score(requests(SENTENCES))
        for a, b in zip(big, small):
            np.testing.assert_allclose(a.logprob, b.logprob, atol=1e-5, rtol=0)


def test_words_and_regions_sum_wordpiece_tokens(bert):
    regions = ("subject", "verb", "end")
    items = [Item("1", {"a": Condition("a", ("The LAZY Antidisestablishmentarianism", "bathed", "the cabinets.")),
                        "b": Condition("b", ("NASA's rocket", "launched", "at 9:30 a.m."))})]
    stim = StimulusSet("toy", regions, ("a", "b"), items, [Prediction.parse("(verb; %a%) > (verb; %b%)")], "toy")
    scorer = MaskedScorer(bert, masked_variant="l2r", progress=False)
    reqs = [ScoreRequest(("toy", "1", c), items[0].conditions[c].text) for c in ("a", "b")]
    scores = {s.request.key: s for s in scorer.score(reqs)}
    tokens, words, region_table = surprisal_tables(stim, scores, scorer.markers, bert.tokenizer)
    for cname, cond in items[0].conditions.items():
        sc = scores[("toy", "1", cname)]
        text = cond.text
        for (s, e), tok in zip(sc.offsets, bert.tokenizer.convert_ids_to_tokens(sc.token_ids)):
            assert text[s:e].lower() == tok.removeprefix("##")  # offsets point into the original (cased) text
        spans = [m.span() for m in re.finditer(r"\S+", text)]
        expected = [-sum(lp for (s, _), lp in zip(sc.offsets, sc.logprob) if a <= s < b) / LN2 for a, b in spans]
        got = words[words.condition == cname]
        assert list(got.word) == text.split()
        np.testing.assert_allclose(got.surprisal, expected, atol=1e-9)
        np.testing.assert_allclose(got.surprisal_raw, expected, atol=1e-9)  # no word correction
        reg = region_table[region_table.condition == cname]
        n_words = [len(r.split()) for r in cond.regions]
        bounds = np.cumsum([0] + n_words)
        np.testing.assert_allclose(reg.surprisal, [sum(expected[a:b]) for a, b in zip(bounds[:-1], bounds[1:])],
                                   atol=1e-9)
        assert got.n_tokens.sum() == len(sc.token_ids) == (tokens.condition == cname).sum()
    assert words.loc[words.word == "Antidisestablishmentarianism", "n_tokens"].item() > 5


def test_batches_stay_within_max_tokens_on_a_long_text():
    lm = tiny_bert(max_positions=512)
    vocab = [w for w in " ".join(dict.fromkeys(CORPUS)).split() if len(lm.tokenizer.tokenize(w)) == 1]
    text = " ".join((vocab * 20)[:300])
    with forward_shapes(lm.model) as shapes:
        reference = MaskedScorer(lm, max_tokens=10**6, progress=False).score([ScoreRequest(("long",), text)])[0]
    n = len(reference.token_ids)
    assert n >= 300 and shapes == [(n, n + 2)]  # every copy in one batch
    seen = []
    with forward_shapes(lm.model) as shapes:
        bounded = MaskedScorer(lm, max_tokens=1000, progress=False).score([ScoreRequest(("long",), text)],
                                                                         consumer=seen.extend)[0]
    assert max(rows * width for rows, width in shapes) <= 1000
    assert sum(rows for rows, _ in shapes) == n and seen == [bounded]
    np.testing.assert_allclose(bounded.logprob, reference.logprob, atol=1e-5, rtol=0)
    with forward_shapes(lm.model) as shapes:
        MaskedScorer(lm, max_tokens=100, progress=False).score([ScoreRequest(("long",), text)])
    assert {rows for rows, _ in shapes} == {1}  # longer than max_tokens: one copy per forward pass


def test_settings_and_errors(bert):
    llama = tiny_llama(byte_bpe_tokenizer())
    assert is_masked_lm(bert.model) and not is_masked_lm(llama.model)
    with pytest.raises(ModelError, match="tiny-llama has no mask token"):
        MaskedScorer(llama)
    scorer = MaskedScorer(bert, masked_variant="l2r", max_tokens=512, progress=False)
    settings = scorer.settings()
    assert settings["word_correction"] == "none (masked LM)" and scorer.markers.family is None
    assert settings["tokenizer"]["special_tokens"] == {"before": ["[CLS]"], "after": ["[SEP]"]}
    assert (settings["variant"], settings["max_tokens"]) == ("l2r", 512)
    with pytest.raises(ModelError, match=r"^\('set', 'item-7', 'c'\): \d+ tokens .* 128 positions"):
        scorer.score([ScoreRequest(("set", "item-7", "c"), " ".join(["dogs"] * 130))])
    with pytest.raises(ModelError, match="unknown masked-LM scoring variant 'l2l'"):
        MaskedScorer(bert, masked_variant="l2l")


def test_a_run_with_a_masked_lm(bert, tmp_path):
    """psyling.run picks the masked scorer for a masked LM and records how it scored."""
    import psyling
    from psyling.stimuli import load_set

    stim = load_set(Path(__file__).resolve().parents[1] / "stimuli" / "sets" / "agreement_simple.yaml")
    result = psyling.run(bert, [stim], out=tmp_path, progress=False, max_items=4, masked_variant="l2r")
    settings = result.manifest["settings"]
    assert settings["masked_lm"]["variant"] == "l2r" and settings["word_correction"] == "none (masked LM)"
    assert result.manifest["invariance_check"]["max_abs_diff_bits"] < 1e-4
    assert np.allclose(result.words.surprisal, result.words.surprisal_raw)
    direct = MaskedScorer(bert, masked_variant="l2r", progress=False).score(
        [ScoreRequest(k, stim.items[0].conditions[k[2]].text) for k in [(stim.name, stim.items[0].id, c)
                                                                        for c in stim.conditions]])
    first = result.regions[result.regions.item == stim.items[0].id].groupby("condition").surprisal.sum()
    for scored in direct:
        # other batch companions change float32 rounding: ~1e-6 bits on a 250-bit sentence
        assert abs(first[scored.request.key[2]] + scored.logprob.sum() / np.log(2)) < 1e-5
    with pytest.raises(psyling.errors.PsylingError, match="causal"):
        psyling.run(bert, [stim], progress=False, max_items=1, lens_layers=[1])


def test_masked_run_resumes_from_the_score_cache(bert, tmp_path, monkeypatch):
    """Masked-LM chunks go to the score cache; --resume reuses them, recomputes a damaged one, same outputs."""
    import psyling
    from psyling.models.store import list_entries
    from psyling.stimuli import load_set

    monkeypatch.setenv("PSYLING_SCORE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("psyling.models.masked.CHUNK_PASSES", 2)
    stim = load_set(Path(__file__).resolve().parents[1] / "stimuli" / "sets" / "agreement_simple.yaml")
    first = psyling.run(bert, [stim], out=tmp_path / "a", progress=False, max_items=6, max_tokens=64)
    written = first.manifest["settings"]["cache"]["batches_written"]
    assert written > 2 and first.manifest["settings"]["cache"]["batches_reused"] == 0
    files = sorted(Path(first.manifest["settings"]["cache"]["folder"]).glob("*.npz"))
    files[0].write_bytes(b"not an npz")
    again = psyling.run(bert, [stim], out=tmp_path / "b", progress=False, max_items=6, max_tokens=64, resume=True)
    assert again.manifest["settings"]["cache"]["batches_reused"] == written - 1
    pd.testing.assert_frame_equal(first.tokens, again.tokens)
    pd.testing.assert_frame_equal(first.regions, again.regions)
    (entry,) = list_entries(tmp_path / "cache")
    assert (entry["convention"], entry["batches"]) == ("masked pll", written)
    direct = MaskedScorer(bert, progress=False, max_tokens=64).score(set_requests(stim)[:4])
    for scored in direct:  # chunking does not change a text's numbers beyond float32 rounding of its batch
        row = again.tokens[(again.tokens.item == scored.request.key[1])
                           & (again.tokens.condition == scored.request.key[2])]
        assert np.abs(row.surprisal.to_numpy() + scored.logprob / np.log(2)).max() < 1e-5
