"""Naturalistic reading corpora (Natural Stories, UCL) as stimulus sets plus human word tables.

Expected values are recomputed here from the raw published files, independently of the loaders."""
import csv
import math
import shutil

import numpy as np
import pandas as pd
import pytest

import psyling
from psyling.errors import PsylingError
from psyling.stimuli.corpora import load_natural_stories, load_ucl, naturalstories_gpt3_surprisal
from tiny import byte_bpe_tokenizer, tiny_llama

UCL = "devarda2023_ucl_cloze_n400"
# words per story: the 10,256 zones of naturalstories_RTS/processed_wordinfo.tsv
STORY_WORDS = {"1": 1073, "2": 990, "3": 1040, "4": 1085, "5": 1013, "6": 1099, "7": 999, "8": 980, "9": 1038,
               "10": 939}


@pytest.fixture(scope="module")
def stories(data):
    return load_natural_stories(data)


@pytest.fixture(scope="module")
def ucl(data):
    return load_ucl(data)


def test_natural_stories_items_and_words(stories, data):
    stim = stories.stimuli
    assert [i.id for i in stim.items] == list(STORY_WORDS) and stim.conditions == ("text",) == stim.regions
    assert stim.segmentation == "whitespace" and not stim.predictions
    assert stim.license == "CC BY-NC-SA 4.0" and "Futrell" in stim.citation
    words = stories.words
    assert words.groupby("item", sort=False).size().to_dict() == STORY_WORDS
    for item in stim.items:
        text_words = item.conditions["text"].text.split()
        assert text_words == words.loc[words["item"] == item.id, "word"].tolist()
    info = pd.read_csv(data / "naturalstories" / "naturalstories_RTS" / "processed_wordinfo.tsv", sep="\t",
                       quoting=csv.QUOTE_NONE, keep_default_na=False)
    expected = info.assign(item=info["item"].astype(str), word_index=info["zone"] - 1)
    joined = words.merge(expected, on=["item", "word_index"], suffixes=("", "_raw"))
    assert len(joined) == 10256 and np.allclose(joined["meanItemRT"], joined["meanItemRT_raw"])
    assert (joined["spr_word"] != joined["word"]).sum() == 1  # the SPR experiment's one typo
    assert words["meanItemRT"].mean() == pytest.approx(info["meanItemRT"].mean(), rel=1e-12)


def test_gpt3_surprisal_sums_token_logprobs_per_word(stories, data):
    probs = pd.read_csv(data / "naturalstories" / "probs" / "all_stories_gpt3.csv", keep_default_na=False,
                        na_values=[""])
    gpt3 = naturalstories_gpt3_surprisal(data)
    assert len(gpt3) == 10256
    first = gpt3[gpt3["word_index"] == 0]
    assert first["surprisal"].isna().all() and gpt3["surprisal"].isna().sum() == 10  # one per story
    # the first line of story 1 after "If": " you", logprob -0.7762714 (nats) -> bits
    story1 = gpt3[gpt3["item"] == "1"].set_index("word_index")["surprisal"]
    assert story1[1] == pytest.approx(0.7762714 / math.log(2), abs=1e-6)
    assert story1[4] == pytest.approx(10.098377 / math.log(2), abs=1e-6)  # " journey"
    # every token with a logprob lands in exactly one word: the word totals add up to the token total, less the
    # tokens of each story's first word (offsets before the end of that word), which is left NaN
    first_len = stories.words[stories.words["word_index"] == 0].set_index("item")["word"].str.len()
    starts = probs["offset"] + probs["token"].str.len() - probs["token"].str.lstrip().str.len()
    in_first = starts < (probs["story"] + 1).astype(str).map(first_len)
    bits = -probs["logprob"] / math.log(2)
    assert gpt3["surprisal"].sum() == pytest.approx(bits[~in_first].sum(), rel=1e-12)
    assert stories.words["gpt3_surprisal"].equals(gpt3["surprisal"])


def test_ucl_sentences_and_word_table(ucl, data):
    raw = pd.read_csv(data / UCL / "all_measures.csv", keep_default_na=False, na_values=[""])
    stim, words = ucl.stimuli, ucl.words
    assert len(stim.items) == 205 == raw["sent_id"].nunique() and "Frank" in stim.citation
    assert stim.license.startswith("none stated")
    assert len(words) == sum(len(i.conditions["text"].text.split()) for i in stim.items) == 1726 + 205
    assert words["N400"].notna().sum() == 1726 and words.loc[words["word_index"] == 0, "N400"].isna().all()
    expected = raw.assign(item=raw["sent_id"].astype(str), word_index=raw["context_length"])
    joined = expected.merge(words, on=["item", "word_index"], suffixes=("_raw", ""))
    assert len(joined) == 1726 and (joined["word_raw"] == joined["word"]).all()
    for col in ("N400", "self_paced_reading_time", "RTfirstpass", "cloze_s", "s_GPT2", "s_GPT2_xl"):
        assert np.allclose(joined[col], joined[f"{col}_raw"])
    assert words["s_GPT2"].mean() == pytest.approx(5.700087, abs=1e-6)  # released table, nats
    # cloze_s is -ln(cloze_p): the resource's surprisals are natural-log
    assert np.allclose(words["cloze_s"].dropna(), -np.log(words["cloze_p_smoothed"].dropna()), atol=1e-9)
    assert "None" in set(words["word"])  # a real word, not a missing value


def _ucl_copy(data, tmp_path, edit):
    folder = tmp_path / UCL
    folder.mkdir(parents=True)
    shutil.copy(data / UCL / "SOURCE.md", folder / "SOURCE.md")
    raw = pd.read_csv(data / UCL / "all_measures.csv", keep_default_na=False, na_values=[""])
    edit(raw).to_csv(folder / "all_measures.csv", index=False)
    return tmp_path


def test_ucl_misaligned_rows_name_the_sentence(data, tmp_path):
    def rename(raw):
        raw.loc[raw["sent_id"] == 7, "word"] = "XYZ"
        return raw

    with pytest.raises(PsylingError, match="sentence 7 word"):
        load_ucl(_ucl_copy(data, tmp_path / "renamed", rename))
    with pytest.raises(PsylingError, match="sentence 12 has .* words but"):
        load_ucl(_ucl_copy(data, tmp_path / "dropped", lambda raw: raw.drop(raw.index[raw["sent_id"] == 12][:1])))


def test_missing_corpus_file_is_a_one_line_error(tmp_path):
    with pytest.raises(PsylingError, match="all_measures.csv: file not found"):
        load_ucl(tmp_path)
    with pytest.raises(PsylingError, match="words.tsv: file not found"):
        load_natural_stories(tmp_path)


def test_psyling_scores_the_ucl_sentences_and_joins_one_to_one(ucl):
    result = psyling.run(tiny_llama(byte_bpe_tokenizer()), stimuli=[ucl.stimuli], progress=False)
    assert not result.errors
    scored = result.words
    assert set(scored["set"]) == {"ucl_devarda2023"} and set(scored["condition"]) == {"text"}
    assert set(scored["region"]) == {"text"}
    joined = ucl.words.merge(scored, on=["item", "word_index"], how="outer", suffixes=("", "_scored"),
                             validate="one_to_one", indicator=True)
    assert (joined["_merge"] == "both").all() and len(joined) == len(ucl.words)
    assert (joined["word"] == joined["word_scored"]).all()
    assert np.isfinite(joined["surprisal"]).all() and (joined["surprisal_raw"] > 0).all()
