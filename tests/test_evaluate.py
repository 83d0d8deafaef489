"""Bring your own surprisal: predictions evaluated on a table computed elsewhere."""
import math

import pytest

import psyling
from psyling.cli import main
from psyling.errors import AlignmentError
from psyling.measures.imported import token_spans

from test_malformed import manifest


@pytest.fixture(scope="module")
def reference(bpe_llama, tmp_path_factory):
    folder = tmp_path_factory.mktemp("stim")
    path = manifest(folder)
    return path, psyling.run(bpe_llama, [path], progress=False, measure="surprisal_raw")


def test_token_table_reproduces_raw_region_surprisal(reference, tmp_path):
    path, run = reference
    table = run.tokens[["item", "condition", "token", "surprisal"]]
    table.to_csv(tmp_path / "tokens.csv", index=False)
    result = psyling.evaluate(tmp_path / "tokens.csv", [path], out=tmp_path / "out")
    merged = result.regions.merge(run.regions, on=["set", "item", "condition", "region"])
    assert merged.surprisal_x.to_numpy() == pytest.approx(merged.surprisal_raw_y.to_numpy(), abs=1e-9)
    assert list(result.predictions.passed) == list(run.predictions.passed)
    assert (tmp_path / "out" / "predictions.parquet").is_file()


def test_word_table_in_nats_and_lmzoo_form(reference, tmp_path):
    path, run = reference
    words = run.words.assign(surprisal=run.words.surprisal * math.log(2))[["item", "condition", "word",
                                                                          "surprisal"]]
    words.to_csv(tmp_path / "words.tsv", sep="\t", index=False)
    by_words = psyling.evaluate(tmp_path / "words.tsv", [path], units="nats")
    assert by_words.regions.surprisal.to_numpy() == pytest.approx(
        run.regions.surprisal.to_numpy(), abs=1e-9)
    tokens = run.tokens.copy()
    tokens["sentence_id"] = tokens.groupby(["item", "condition"], sort=False).ngroup() + 1
    tokens["token_id"] = tokens.token_index + 1
    tokens[["sentence_id", "token_id", "token", "surprisal"]].to_csv(tmp_path / "surp.txt", sep="\t", index=False)
    assert main(["evaluate", "--surprisal", str(tmp_path / "surp.txt"), "--stimuli", str(path)]) == 0
    lmzoo = psyling.evaluate(tmp_path / "surp.txt", [path])
    assert lmzoo.regions.surprisal.to_numpy() == pytest.approx(run.regions.surprisal_raw.to_numpy(), abs=1e-9)


def test_token_spans_handle_markers_specials_and_unknown_words():
    text = "The zyzzyva ate."
    # the unknown word covers the text up to the next token (its word's characters and the space)
    assert token_spans(text, ["The", "<unk>", "Ġate", ".", "<eos>"], "t") == \
        [(0, 3), (3, 12), (12, 15), (15, 16), (16, 16)]
    assert token_spans("a b", ["a", "Ġ", "b"], "t") == [(0, 1), (1, 2), (2, 3)]
    with pytest.raises(AlignmentError, match="token 'dog' not found"):
        token_spans(text, ["The", "dog"], "t")


def test_missing_rows_and_bad_numbers_are_one_line_errors(reference, tmp_path, capsys):
    path, run = reference
    run.tokens[run.tokens["item"] == "1"][["item", "condition", "token", "surprisal"]].to_csv(
        tmp_path / "t.csv", index=False)
    assert main(["evaluate", "--surprisal", str(tmp_path / "t.csv"), "--stimuli", str(path)]) == 2
    assert "item=2 condition=match: no rows in the surprisal table" in capsys.readouterr().err
    bad = run.tokens[["item", "condition", "token", "surprisal"]].astype({"surprisal": str})
    bad.loc[0, "surprisal"] = "abc"
    bad.to_csv(tmp_path / "b.csv", index=False)
    assert main(["evaluate", "--surprisal", str(tmp_path / "b.csv"), "--stimuli", str(path)]) == 2
    assert "surprisal is not a number in row 1: 'abc'" in capsys.readouterr().err
