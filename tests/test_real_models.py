"""The embedded pretrained models (SmolLM2, Ġ; Gemma-3, ▁) against the reference implementations.

These load real weights (converted once into the cache: ~50 s for SmolLM2, ~2 min for Gemma) and run in CI."""
from pathlib import Path

import numpy as np
import pytest

import psyling
from psyling.stimuli import Condition
from psyling.measures import align, word_surprisals
from psyling.measures.surprisal import LN2
from psyling.models import CausalScorer, ScoreRequest, load_model
from references import minicons_sums_bits, wordsprobability_bits

pytestmark = pytest.mark.slow
SENTENCES = Path(__file__).with_name("data").joinpath("sentences.txt").read_text().splitlines()
MODELS = {"smollm2-135m": "Ġ", "gemma3-270m": "▁"}


@pytest.fixture(scope="module", params=list(MODELS))
def real(request):
    lm = load_model(request.param)
    return request.param, lm, CausalScorer(lm, batch_size=16, progress=False)


def test_at_least_fifty_varied_sentences():
    assert len(SENTENCES) >= 50
    assert any(any(c in s for c in "\"();:!?-") for s in SENTENCES) and any(s.isupper() for s in SENTENCES)


def test_word_surprisal_equals_wordsprobability(real):
    alias, lm, scorer = real
    assert scorer.markers.marker == MODELS[alias]
    ref = wordsprobability_bits(lm.model, lm.tokenizer, SENTENCES, MODELS[alias])
    # like for like: the reference runs one sentence at a time, so does this comparison (batched float32 moves a
    # 14-token, 44-bit word of Gemma's by 1.05e-4 bits; batching is held to 1e-4 bits per token below)
    alone = scorer.with_options(batch_size=1, reuse_prefix=False)
    scores = alone.score([ScoreRequest((i,), s) for i, s in enumerate(SENTENCES)])
    worst, multi_token_words = 0.0, 0
    for sc, expected in zip(scores, ref):
        al = align(Condition("c", (sc.request.text,)), sc.offsets, ("s",), alias)
        corrected, _ = word_surprisals(sc, al.token_word, len(al.words), scorer.markers, alias)
        assert len(corrected) == len(expected)
        worst = max(worst, float(np.max(np.abs(corrected - expected))))
        multi_token_words += int((np.bincount(al.token_word) > 1).sum())
    assert worst <= 1e-4, worst
    assert multi_token_words >= 20


def test_raw_sentence_sums_equal_minicons(real):
    alias, lm, scorer = real
    scores = scorer.score([ScoreRequest((i,), s) for i, s in enumerate(SENTENCES)])
    ours = np.array([-sc.logprob.sum() / LN2 for sc in scores])
    np.testing.assert_allclose(ours, minicons_sums_bits(lm.model, lm.tokenizer, SENTENCES), atol=1e-4, rtol=0)


def test_batch_size_and_padding_invariance(real):
    alias, lm, scorer = real
    requests = [ScoreRequest((i,), s) for i, s in enumerate(SENTENCES[:30])]
    base = scorer.with_options(batch_size=1).score(requests)
    worst = 0.0
    for batch_size in (7, 64):
        for side in ("left", "right"):
            for a, b in zip(base, scorer.with_options(batch_size=batch_size, padding_side=side).score(requests)):
                worst = max(worst, float(np.max(np.abs(a.logprob - b.logprob))),
                            float(np.max(np.abs(a.log_bow - b.log_bow))))
    assert worst / LN2 <= 1e-4, worst / LN2


def test_exactly_one_context_token(real):
    alias, lm, scorer = real
    assert scorer.context_token_id == lm.tokenizer.bos_token_id
    sc = scorer.score([ScoreRequest((0,), "The cat sleeps.")])[0]
    assert lm.tokenizer.bos_token_id not in sc.token_ids  # Gemma's tokenizer would insert <bos> itself


def test_core_battery_run_writes_all_outputs(real, tmp_path):
    alias, lm, _ = real
    result = psyling.run(lm, battery="core", out=tmp_path, batch_size=32, progress=False, max_items=6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "predictions.parquet",
                                                          "regions.parquet", "summary.csv", "tokens.parquet",
                                                          "words.parquet"]
    assert result.errors == [] and len(result.summary) >= 24 and (result.summary.n_items == 6).all()
    assert result.manifest["stimuli"]["max_items"] == 6
    assert result.manifest["invariance_check"]["passed"]
    assert result.manifest["model"]["sha256"] and result.manifest["model"]["id"] == alias


def test_published_stimuli_align_with_the_tokenizer(real, data):
    """Every SyntaxGym 2020 suite and every BLiMP paradigm (first 200 pairs each) maps onto words and regions
    with this tokenizer, and every word after the first starts with a word-initial token (so the correction
    is defined)."""
    from psyling.stimuli import load_stimuli

    alias, lm, scorer = real
    loaded = load_stimuli([data / "syntaxgym_hu2020" / "test_suites" / "json", data / "blimp" / "data"])
    assert loaded.errors == [] and len(loaded.sets) == 34 + 67
    n = 0
    for stim in loaded.sets:
        stim.items = stim.items[:200]
        for item in stim.items:
            for cond in item.conditions.values():
                enc = scorer.encode(ScoreRequest((stim.name, item.id), cond.text))
                ids, offsets = enc.ids, enc.offsets
                al = align(cond, offsets, stim.regions, f"{stim.name} {item.id}", stim.segmentation)
                starts = [ids[al.token_word.index(w)] for w in range(1, len(al.words))]
                assert bool(scorer.markers.bow[starts].all()), (stim.name, item.id, cond.name)
                n += 1
    assert n == sum(len(s.items) * len(s.conditions) for s in loaded.sets)


# a classifier (measure word) manipulation written without spaces; the numeral and the classifier are separate
# regions, so a tokenizer that merges them into one token (Gemma: '一家') crosses the region boundary
CLASSIFIER_ITEMS = [("他在一", "家", "本", "商店工作。"), ("她买了一", "本", "家", "书。"),
                    ("我看见了三", "个", "本", "学生。"), ("这是一", "家", "本", "很好的餐厅。")]


def _classifier_set():
    from psyling.stimuli import Item, StimulusSet
    from psyling.stimuli.schema import parse_predictions

    items = [Item(str(k), {c: Condition(c, (pre, clf, post), separator="") for c, clf in (("good", good), ("bad", bad))})
             for k, (pre, good, bad, post) in enumerate(CLASSIFIER_ITEMS, start=1)]
    return StimulusSet(name="classifier_zh", regions=("pre", "classifier", "noun"), conditions=("good", "bad"),
                       items=items, predictions=parse_predictions(["(classifier;%good%) < (classifier;%bad%)"], "t"),
                       source="test", language="zh", segmentation="none").validate()


def test_unspaced_multi_region_set_scores_with_nothing_skipped(real):
    """Regions of a script without spaces: no set or item is skipped on either tokenizer, each token is counted
    once (regions add up to the sentence), and tokens crossing a region boundary are counted in the manifest."""
    alias, lm, _ = real
    result = psyling.run(lm, [_classifier_set()], batch_size=8, progress=False)
    assert result.errors == [] and len(result.predictions) == len(CLASSIFIER_ITEMS)
    regions, tokens = result.regions, result.tokens
    per_sentence = regions.groupby(["item", "condition"])["surprisal"].sum()
    np.testing.assert_allclose(per_sentence, tokens.groupby(["item", "condition"])["surprisal"].sum(), atol=1e-9)
    entry = result.manifest["stimuli"]["sets"][0]
    assert entry["segmentation"] == "none" and entry["words"].startswith("no words")
    assert entry["tokens_crossing_regions"] == int(tokens["crosses_region"].sum())
    crossing = tokens[tokens["crosses_region"]]
    if alias == "gemma3-270m":  # Gemma merges numeral + classifier ('一家') and classifier + noun ('本书')
        where = dict(zip(crossing["token"], crossing["region"]))
        assert where["一家"] == "classifier" and where["本书"] == "noun" and len(crossing) >= 4
        absorbed = regions[regions["n_tokens"] == 0]  # '本' of item 2 lies wholly inside '本书'
        assert absorbed["surprisal"].isna().all() and ("2", "good", "classifier") in set(
            zip(absorbed["item"], absorbed["condition"], absorbed["region"]))
        summary = result.summary.iloc[0]  # that item's prediction has no value: left out, not failed
        assert summary["n_unevaluable"] >= 1 and summary["n_items"] + summary["n_unevaluable"] == 4
    else:  # SmolLM2 splits Chinese into single characters or bytes: nothing crosses
        assert crossing.empty and regions["surprisal"].notna().all()
        assert result.summary.iloc[0]["n_items"] == 4 and result.summary.iloc[0]["n_unevaluable"] == 0
