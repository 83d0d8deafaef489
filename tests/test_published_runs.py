"""Published stimulus collections run end to end: a stratified BLiMP subset on SmolLM2, a CLiMP subset on
Gemma-3 (character alignment, ▁ tokenizer), and all SyntaxGym 2020 suites through the pipeline."""
import pytest

import psyling
from psyling.models import load_model
from tiny import byte_bpe_tokenizer, tiny_llama

pytestmark = pytest.mark.slow


def test_stratified_blimp_subset_on_smollm2(data):
    """10 pairs from each of the 67 paradigms (670 pairs)."""
    result = psyling.run(load_model("smollm2-135m"), [data / "blimp" / "data"], batch_size=64, progress=False,
                         max_items=10)
    assert result.errors == [] and len(result.summary) == 67
    assert result.summary.n_items.sum() == 670
    overall = result.predictions.passed.mean()
    assert 0.6 < overall < 0.95  # a pretrained LM is well above chance on BLiMP, below human 0.886
    assert result.manifest["invariance_check"]["passed"]


def test_climp_subset_on_gemma(data):
    result = psyling.run(load_model("gemma3-270m"), [data / "climp_chinese" / "CLiMP_corpus"], batch_size=32,
                         progress=False, max_items=4)
    assert result.errors == [] and len(result.summary) == 16 and result.summary.n_items.sum() == 64
    words = result.words
    assert (words.surprisal == words.surprisal_raw).all()  # no word segmentation: no correction
    assert (result.regions.n_tokens > 0).all()
    joined = result.tokens.groupby(["set", "item", "condition"]).char_end.max()
    texts = result.regions.set_index(["set", "item", "condition"]).text.str.len()
    assert (joined.sort_index() == texts.sort_index()).all()  # tokens cover each sentence to its last character


def test_all_syntaxgym_suites_run(data):
    lm = tiny_llama(byte_bpe_tokenizer())
    result = psyling.run(lm, [data / "syntaxgym_hu2020" / "test_suites" / "json"], batch_size=64,
                         progress=False, measure="surprisal_raw")
    assert result.errors == [] and len(result.summary) == 34 and result.summary.n_items.sum() == 842
    n_predictions = {"mvrr": 1, "fgd_hierarchy": 2, "nn-nv-rpl": 2}
    counts = result.predictions.groupby("set").size()
    for name, per_item in n_predictions.items():
        assert counts[name] == per_item * result.summary.set_index("set").loc[name, "n_items"]
