"""Reproductions on reading corpora beyond their registered figures (those are checked by tests/test_reproduce.py):
GPT-2 surprisal on the UCL N400 and SPR (de Varda et al. 2023), and surprisal on Natural Stories reading times
(released GPT-3 log-probs and a model scored by psyling)."""
import math

import numpy as np
import pytest

from psyling.reproductions import naturalstories, ucl
from psyling.stimuli.corpora import load_natural_stories
from tiny import byte_bpe_tokenizer, tiny_llama


@pytest.fixture(scope="module")
def ucl_table(data):
    return ucl.ucl_delta_ll(data)


def test_gpt2_surprisal_improves_the_fit_of_n400_spr_and_gaze(ucl_table):
    assert (ucl_table["delta_ll"] > 0).all() and (ucl_table["n"] == 1291).all()
    n400 = ucl_table[ucl_table["target"] == "N400"]
    spr = ucl_table[ucl_table["target"] == "self_paced_reading_time"]
    # N400: reliably above zero for every size (> 2.5 SE), more negative amplitude with more surprisal
    assert (n400["delta_ll"] > 2.5 * n400["se"]).all() and (n400["p"] < 0.01).all()
    assert (n400["slope"] < 0).all()
    # SPR (item means): positive for every size but only ~1-2 SE; slower reading after surprising words
    assert (spr["delta_ll"] > 0.5 * spr["se"]).all() and (spr["slope"] > 0).all() and (spr["slope_prev1"] > 0).all()
    # eye-tracking (first-pass / gaze duration): above zero for every size (p < 0.01), slower after surprisal
    gaze = ucl_table[ucl_table["target"] == "RTfirstpass"]
    assert len(gaze) == 4 and (gaze["p"] < 0.01).all() and (gaze["slope"] > 0).all()


def test_larger_gpt2_does_not_fit_worse_on_ucl(ucl_table):
    # The ordering on this corpus (205 sentences, item means): bigger is not worse. On SPR ΔLL rises with size,
    # on the N400 xl is best and medium worst; the xl - small difference is reliable for SPR only.
    assert ucl.size_ordering(ucl_table, "self_paced_reading_time") == [
        "s_GPT2", "s_GPT2_medium", "s_GPT2_large", "s_GPT2_xl"]
    assert ucl.size_ordering(ucl_table, "N400") == ["s_GPT2_medium", "s_GPT2_large", "s_GPT2", "s_GPT2_xl"]
    diff, se = ucl.largest_minus_smallest(ucl_table, "self_paced_reading_time")
    assert diff > 2 * se
    diff, se = ucl.largest_minus_smallest(ucl_table, "N400")
    assert abs(diff) < se


def test_de_varda_setup_fits_their_words(data):
    check = ucl.devarda_setup(data)
    assert len(check) == 8 and (check["n"] == ucl.DEVARDA_N_WORDS).all()
    # their N400 ΔLL (converted) is 0.014-0.017 nats per word
    assert check.loc[check["target"] == "N400", "published"].tolist() == pytest.approx(
        [4.47 * 5 / 1466, 4.017 * 5 / 1466, 4.734 * 5 / 1466, 4.894 * 5 / 1466])


def test_gpt3_natural_stories_fit_leaves_one_story_out(data):
    corpus = load_natural_stories(data)
    fit = naturalstories.naturalstories_delta_ll(corpus.words, "gpt3_surprisal")
    assert fit.n_groups == 10 and fit.folds == 10  # leave one story out
    assert fit.n_dropped == 30  # the first two words of each story (spillover) and the unscored first word
    assert fit.delta_ll_in_sample > fit.delta_ll
    slopes = [fit.coefficients[c] for c in fit.predictors]
    assert all(s > 0 for s in slopes) and slopes[0] > slopes[1] > slopes[2]  # ms per bit, decaying spillover


def test_psyling_surprisal_joins_the_whole_corpus(data):
    lm = tiny_llama(byte_bpe_tokenizer())
    lm.model.config.max_position_embeddings = 8192  # RoPE has no learned positions; a story is ~3k tiny tokens
    words = naturalstories.psyling_surprisal(lm, data)
    corpus = load_natural_stories(data)
    assert len(words) == len(corpus.words) == 10256
    assert (words[["item", "word_index", "word"]].to_numpy() == corpus.words[["item", "word_index", "word"]]
            .to_numpy()).all()
    assert np.isfinite(words["surprisal"]).all() and (words["n_tokens"] >= 1).all()
    fit = naturalstories.naturalstories_delta_ll(words, "surprisal", folds=10)
    assert fit.n_dropped == 20 and math.isfinite(fit.delta_ll)  # psyling scores the first word too
