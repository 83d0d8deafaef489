"""Length-normalised prediction measures (issue 14, point 9): mean per-token surprisal and SLOR, as ``--measure``
and as functions in the formula grammar; recorded in the manifest."""
import json
import math

import pandas as pd
import pytest
from wordfreq import word_frequency

import psyling
from psyling.cli import main
from psyling.config import RunConfig
from psyling.errors import PsylingError, StimulusError
from psyling.measures.unigram import FLOOR, unigram_surprisal
from psyling.stats.predictions import cell_lookup, evaluate_predictions
from psyling.stimuli.formula import FormulaError, Term, parse_formula, terms
from psyling.stimuli.schema import Condition, Item, Prediction, StimulusSet

from test_malformed import GOOD_YAML, manifest, write

# one item, regions (subj, rest); the good sentence is the longer one
TEXTS = {"good": ("The old dogs", "slept soundly all night."), "bad": ("The dogs", "sleeps.")}
SURPRISAL = {"good": (9.0, 11.0), "bad": (7.0, 8.0)}  # totals: good 20 bits, bad 15 bits
N_TOKENS = {"good": (3, 5), "bad": (2, 2)}  # good 8 tokens (2.5 bits each), bad 4 (3.75 bits each)


def make_set(predictions=("(*;%good%) < (*;%bad%)",), language="en"):
    item = Item("1", {c: Condition(c, TEXTS[c]) for c in TEXTS})
    return StimulusSet("lengths", ("subj", "rest"), ("good", "bad"), [item],
                       [Prediction.parse(p) for p in predictions], source="lengths.yaml", language=language)


def make_regions(**drop):
    rows = [("lengths", "1", c, r + 1, ("subj", "rest")[r], TEXTS[c][r], SURPRISAL[c][r], SURPRISAL[c][r],
             N_TOKENS[c][r]) for c in TEXTS for r in range(2)]
    table = pd.DataFrame(rows, columns=["set", "item", "condition", "region_number", "region", "text", "surprisal",
                                        "surprisal_raw", "n_tokens"])
    return table.drop(columns=list(drop))


def unigram_bits(*words):
    """-Σ log2 of wordfreq's English frequency of words listed by hand (the floor for an unknown one)."""
    return -sum(math.log2(max(word_frequency(w, "en"), 1e-8)) for w in words)


def lookup(measure, region, condition, stim=None, regions=None):
    return cell_lookup(stim or make_set(), make_regions() if regions is None else regions, measure)(
        "1", Term(region, condition))


def test_mean_of_a_cell_and_of_the_whole_sentence():
    assert lookup("mean", "subj", "good") == pytest.approx(3.0, abs=1e-9)
    assert lookup("mean", "2", "good") == pytest.approx(11.0 / 5, abs=1e-9)
    # the sentence's mean: total surprisal over total tokens, not the sum or mean of the region means
    assert lookup("mean", "*", "good") == pytest.approx(20.0 / 8, abs=1e-9)
    assert lookup("mean", "*", "bad") == pytest.approx(15.0 / 4, abs=1e-9)
    assert lookup("surprisal", "*", "good") == pytest.approx(20.0, abs=1e-9)


def test_slor_is_negative_slor_in_bits_per_token():
    subj = unigram_bits("the", "old", "dogs")
    rest = unigram_bits("slept", "soundly", "all", "night")  # wordfreq drops the full stop
    assert lookup("slor", "subj", "good") == pytest.approx((9.0 - subj) / 3, abs=1e-9)
    assert lookup("slor", "rest", "good") == pytest.approx((11.0 - rest) / 5, abs=1e-9)
    assert lookup("slor", "*", "good") == pytest.approx((20.0 - subj - rest) / 8, abs=1e-9)
    bad = unigram_bits("the", "dogs", "sleeps")
    assert lookup("slor", "*", "bad") == pytest.approx((15.0 - bad) / 4, abs=1e-9)


def test_unknown_words_get_the_floor():
    found = unigram_surprisal("The blorfington dogs", "en")
    assert FLOOR == 1e-8 and found.n_words == 3 and found.n_floored == 1
    assert found.bits == pytest.approx(unigram_bits("the", "dogs") - math.log2(1e-8), abs=1e-9)


def test_sum_and_mean_decide_oppositely_on_a_longer_good_sentence():
    stim, regions = make_set(), make_regions()
    assert list(evaluate_predictions(stim, regions, "surprisal").passed) == [False]  # 20 bits vs 15
    assert list(evaluate_predictions(stim, regions, "mean").passed) == [True]  # 2.5 vs 3.75 bits per token
    # a function in the formula fixes the criterion whatever the run's measure
    declared = make_set(["mean(*;%good%) < mean(*;%bad%)"])
    assert list(evaluate_predictions(declared, regions, "surprisal").passed) == [True]
    summed = make_set(["surprisal(*;%good%) < surprisal(*;%bad%)"])
    assert list(evaluate_predictions(summed, regions, "mean").passed) == [False]


def test_formula_functions_parse_and_mix_with_bare_terms():
    tree = parse_formula("slor(rest; %good%) - (rest;%bad%) < mean (*;%bad%)")
    assert terms(tree) == [Term("rest", "good", "slor"), Term("rest", "bad"), Term("*", "bad", "mean")]
    assert terms(parse_formula("[surprisal_raw(1;%a%) > 2] & [(1;%a%) < 9]"))[0].measure == "surprisal_raw"


@pytest.mark.parametrize("formula,message", [
    ("avg(*;%good%) < avg(*;%bad%)", r"unknown function 'avg' \(measure functions: surprisal, surprisal_raw, mean, "
                                     r"slor\) at character 1 of"),
    ("(*;%good%) < Mean(*;%bad%)", "unknown function 'Mean'"),
    ("mean((1;%a%) + (2;%a%)) < 1", r"mean\(...\) takes one \(region;%condition%\) term"),
    ("mean(slor(1;%a%)) < 1", r"mean\(...\) takes one"),
    ("mean < 1", "expected a \\(region;%condition%\\) term, a measure function"),
])
def test_bad_functions_are_one_line_formula_errors(formula, message):
    with pytest.raises(FormulaError, match=message) as caught:
        parse_formula(formula)
    assert "\n" not in str(caught.value)


def test_validate_names_file_and_field_for_a_bad_function(tmp_path, capsys):
    path = manifest(tmp_path, GOOD_YAML.replace('"(verb;%mismatch%) > (verb;%match%)"',
                                                '"avg(verb;%mismatch%) > (verb;%match%)"'))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "s.yaml" in err and "field=predictions" in err and "unknown function 'avg'" in err


def test_empty_cells_have_no_mean_and_missing_counts_are_one_line_errors():
    regions = make_regions()
    regions.loc[0, ["text", "surprisal", "n_tokens"]] = ["", 0.0, 0]
    assert math.isnan(lookup("mean", "subj", "good", regions=regions))
    assert lookup("mean", "*", "good", regions=regions) == pytest.approx(11.0 / 5, abs=1e-9)
    with pytest.raises(PsylingError, match="the mean measure needs .* no n_tokens column") as caught:
        evaluate_predictions(make_set(), make_regions(n_tokens=True), "mean")
    assert "\n" not in str(caught.value)
    with pytest.raises(PsylingError, match="unknown prediction measure 'median'"):
        evaluate_predictions(make_set(), make_regions(), "median")


@pytest.mark.parametrize("language,reason", [("xx", "no word frequencies for language 'xx'"),
                                             ("", "no language given"),
                                             ("English", "no word frequencies for language 'English'")])
def test_slor_without_frequencies_for_the_language_names_set_and_field(language, reason):
    stim = make_set(["slor(*;%good%) < slor(*;%bad%)"], language=language)
    with pytest.raises(StimulusError, match=reason) as caught:
        evaluate_predictions(stim, make_regions(), "surprisal")
    message = str(caught.value)
    assert message.startswith("field=language: set 'lengths': the slor measure") and "\n" not in message


def test_config_accepts_the_new_measures():
    assert RunConfig(measure="slor").measure == "slor"
    with pytest.raises(PsylingError, match="choose from surprisal, surprisal_raw, mean, slor"):
        RunConfig(measure="avg")


def _own_slor(row):
    """(surprisal - unigram bits of the region's words) / tokens, with wordfreq called here directly."""
    from wordfreq import tokenize
    return (row.surprisal - unigram_bits(*tokenize(row.text, "en"))) / row.n_tokens


def test_cli_run_with_slor_end_to_end(tiny_model_dir, tmp_path, capsys):
    folder = tiny_model_dir
    stim = manifest(tmp_path, name="pairs")
    code = main(["run", "--model", str(folder), "--stimuli", str(stim), "--out", str(tmp_path / "out"),
                 "--measure", "slor", "--quiet"])
    assert code == 0, capsys.readouterr()
    regions = pd.read_parquet(tmp_path / "out" / "regions.parquet")
    verb = regions[regions.region == "verb"].set_index(["item", "condition"])
    expected = [_own_slor(verb.loc[(i, "mismatch")]) > _own_slor(verb.loc[(i, "match")]) for i in ("1", "2")]
    predictions = pd.read_parquet(tmp_path / "out" / "predictions.parquet")
    assert list(predictions.passed) == expected
    written = json.loads((tmp_path / "out" / "manifest.json").read_text())
    settings = written["settings"]
    assert settings["prediction_measure"] == "slor" and written["config"]["measure"] == "slor"
    slor = settings["measures"]["slor"]
    assert slor["length_unit"] == "model tokens" and slor["definition"].startswith("NEGATIVE SLOR")
    assert slor["unigram"]["source"] == "wordfreq" and slor["unigram"]["floor"] == 1e-8
    assert slor["unigram"]["version"] == __import__("importlib.metadata").metadata.version("wordfreq")
    # verb texts sleeps/sleep/run/runs, subject The cat/The dogs, rest all day./far.: 2 cells per region
    assert slor["unigram"]["sets"]["pairs"] == {"language": "en", "words": 2 * (2 + 1 + 2) + 2 * (2 + 1 + 1),
                                                "words_at_floor": 0}
    assert RunConfig.from_manifest(written).measure == "slor"


def test_run_skips_a_slor_set_in_an_unknown_language_before_scoring(bpe_llama, tmp_path):
    paths = [manifest(tmp_path, GOOD_YAML + "language: xx\n", name="foreign"), manifest(tmp_path, name="english")]
    result = psyling.run(bpe_llama, paths, progress=False, measure="slor")
    assert list(result.summary.set) == ["english"]
    assert len(result.errors) == 1 and result.errors[0].startswith(
        f"{paths[0]}: field=language: set 'foreign': the slor measure needs word frequencies: wordfreq has no")
    assert result.manifest["timings"]["tokens_scored"] == len(result.tokens)  # the foreign set was not scored
    assert set(result.manifest["settings"]["measures"]) == {"slor"}


def test_evaluate_a_word_table_by_mean(tmp_path, capsys):
    path = manifest(tmp_path)
    words = [(i, c, w) for i, c, text in [("1", "match", "The cat sleeps all day."),
                                          ("1", "mismatch", "The cat sleep all day."),
                                          ("2", "match", "The dogs run far."), ("2", "mismatch", "The dogs runs far.")]
             for w in text.split()]
    bits = {"sleeps": 4.0, "sleep": 6.0, "run": 3.0, "runs": 2.0}  # verbs; every other word 1 bit
    table = pd.DataFrame([(i, c, w, bits.get(w, 1.0)) for i, c, w in words],
                         columns=["item", "condition", "word", "surprisal"])
    table.to_csv(tmp_path / "words.csv", index=False)
    result = psyling.evaluate(tmp_path / "words.csv", [path], out=tmp_path / "out", measure="mean")
    assert list(result.predictions.passed) == [True, False]  # verb: 6 > 4 bits per word; 2 < 3
    declared = write(tmp_path, "whole.yaml", GOOD_YAML.format(name="whole", items="s.csv").replace(
        '"(verb;%mismatch%) > (verb;%match%)"', '"mean(*;%mismatch%) > 1.9"'))
    whole = psyling.evaluate(tmp_path / "words.csv", [declared])
    assert list(whole.predictions.passed) == [True, False]  # 10 bits / 5 words = 2.0; 5 / 4 = 1.25
    assert list(psyling.evaluate(tmp_path / "words.csv", [declared], measure="surprisal").predictions.passed) == \
        [True, False]  # the function holds whatever the measure; the sums 10 and 5 would both pass
    written = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert written["settings"]["prediction_measure"] == "mean"
    assert written["settings"]["measures"]["mean"]["length_unit"] == "words of the surprisal table"
    assert main(["evaluate", "--surprisal", str(tmp_path / "words.csv"), "--stimuli", str(path),
                 "--measure", "slor", "--out", str(tmp_path / "cli"), "--quiet"]) == 0
    written = json.loads((tmp_path / "cli" / "manifest.json").read_text())["settings"]
    assert written["prediction_measure"] == "slor"
    assert written["measures"]["slor"]["unigram"]["sets"]["s"] == {"language": "en", "words": 18, "words_at_floor": 0}
