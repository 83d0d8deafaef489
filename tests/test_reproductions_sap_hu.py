"""The Hu et al. (2020) SG score and SAP benchmark (Huang et al.) reproductions beyond their registered figures
(those are checked by tests/test_reproduce.py), and the SAP readers' handling of malformed files."""
from __future__ import annotations

import gzip
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from psyling.errors import PsylingError
from psyling.reproductions import hu2020, sap as sap_benchmark
from psyling.reproductions.sap_report import format_regressions, format_report
from psyling.stimuli.sap import (EFFECT_COLUMNS, SAP_FOLDER, SURPRISAL_COLUMNS, join_sap_trials, load_sap_effects,
                                 load_sap_surprisal, load_sap_trial_fit, load_sap_trial_surprisal, load_sap_trials)

ANALYSES = Path(__file__).resolve().parents[1] / "analyses"


@pytest.fixture(scope="module")
def sap(data):
    return data / SAP_FOLDER


@pytest.fixture(scope="module")
def hu_table(data):
    return hu2020.sg_scores(data)


# --- Hu et al. (2020) -------------------------------------------------------------------------------------------

def test_hu2020_published_models_have_one_seed(hu_table):
    published = hu_table.set_index("model").loc[list(hu2020.PUBLISHED)]
    assert published["n_seeds"].eq(1).all() and published["passed"].all()


def test_hu2020_lists_every_released_model_with_circuits(data, hu_table):
    files = list((data / "syntaxgym_hu2020" / "data" / "raw" / "sg_results").glob("syntaxgym_results_*.csv"))
    assert len(hu_table) == len(files) == 37
    assert hu_table["passed"].notna().sum() == 5
    gpt2 = hu_table.set_index("model").loc["gpt-2-pretrained"]
    circuits = ["Agreement", "Licensing", "Garden-Path Effects", "Gross Syntactic State", "Center Embedding",
                "Long-Distance Dependencies"]
    assert all(0 <= gpt2[c] <= 1 for c in circuits)
    assert hu_table.set_index("model").loc["ngram_bllip-lg", "n_seeds"] == 50


def test_hu2020_multi_seed_score_is_the_mean_of_seed_scores(data, hu_table):
    # recomputed here with plain pandas: suite accuracy over the 31 suites, averaged per seed, then over seeds
    results = pd.read_csv(data / "syntaxgym_hu2020" / "data" / "raw" / "sg_results" /
                          "syntaxgym_results_rnng_bllip-lg.csv")
    kept = results[~results["suite"].isin(["fgd-embed3", "fgd-embed4", "nn-nv-rpl"])]
    per_seed = kept.groupby(["model", "suite"])["correct"].mean().groupby("model").mean()
    row = hu_table.set_index("model").loc["rnng_bllip-lg"]
    assert len(per_seed) == row["n_seeds"] == 3
    assert math.isclose(row["sg_score"], per_seed.mean(), abs_tol=1e-12)
    assert math.isclose(row["seed_min"], per_seed.min()) and math.isclose(row["seed_max"], per_seed.max())


def test_hu2020_table_and_errors(hu_table, tmp_path):
    text = hu2020.format_table(hu_table)
    assert text.count("PASS") == 5 and "FAIL" not in text and "0.7842" in text
    folder = tmp_path / hu2020.RESULTS
    folder.mkdir(parents=True)
    (folder / "syntaxgym_results_x_.csv").write_text("model,suite,item\nx_0,s,0\n")
    with pytest.raises(PsylingError, match=r"syntaxgym_results_x_\.csv: missing column\(s\) correct"):
        hu2020.sg_scores(tmp_path)
    with pytest.raises(PsylingError, match=r"no syntaxgym_results_\*\.csv files"):
        hu2020.sg_scores(tmp_path / "nowhere")


def test_analyses_script_is_a_thin_wrapper_with_exit_codes(tmp_path):
    """The script, run as a user would, reports a data error in one line with exit code 2."""
    done = subprocess.run([sys.executable, str(ANALYSES / "hu2020_sg_score.py"), "--data-root",
                           str(tmp_path / "nowhere")], capture_output=True, text=True)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("hu2020_sg_score: error: ") and done.stderr.count("\n") == 1


# --- SAP benchmark ----------------------------------------------------------------------------------------------

def test_sap_gpt2_surprisal_differences_use_every_item(sap):
    table = sap_benchmark.surprisal_effects(sap).set_index("effect")
    assert list(table.index) == ["NP/S", "NP/Z", "MV/RR", "Agreement"] and table["passed"].all()
    assert list(table["n_items"]) == [24, 24, 24, 18] and not table["n_excluded"].any()


def test_sap_agreement_position_column_counts_from_one(sap):
    # independent reading of the raw file: the "0-indexed" column names the verb only when read as 1-indexed
    raw = pd.read_csv(sap / "Surprisals" / "data" / "gpt2" / "items_Agreement.gpt2.csv", index_col=0)

    def effect(offset: int) -> float:
        cells = raw[raw["word_pos"] == raw["disambPosition_0idx"] - offset]
        pivot = cells.pivot_table(index="item", columns="condition", values="sum_surprisal_base2")
        return float((pivot["UNAGREE"] - pivot["AGREE"]).mean())

    assert abs(effect(1) - 7.22) <= 0.01
    assert abs(effect(0) - 7.22) > 5  # the word after the verb


@pytest.mark.parametrize("subset,n_conditions", [("ClassicGP", 6), ("Agreement", 2), ("RelativeClause", 2),
                                                 ("AttachmentAmbiguity", 3)])
def test_sap_critical_word_is_the_same_word_in_every_condition(sap, subset, n_conditions):
    words = load_sap_surprisal(sap, subset, "gpt2")
    assert list(words.columns) == SURPRISAL_COLUMNS
    critical = words[words["critical"]]
    assert critical.groupby("item")["condition"].nunique().eq(n_conditions).all()
    # the critical word (the verb) is shared across conditions; one released position is off by one word:
    # RelativeClause item 42 (object relative), whose embedded subject has two nouns
    differs = critical.groupby("item")["word"].nunique().gt(1)
    assert set(differs[differs].index) == ({42} if subset == "RelativeClause" else set())
    first = words.groupby(["item", "condition"])["word_pos"].min()
    assert first.eq(0).all()


def test_sap_surprisal_is_in_bits(sap):
    raw = pd.read_csv(sap / "Surprisals" / "data" / "lstm" / "items_ClassicGP.lstm.csv", index_col=0)
    words = load_sap_surprisal(sap, "ClassicGP", "lstm")
    assert len(words) == len(raw)
    assert (words["surprisal"] - raw["sum_surprisal"].to_numpy() / math.log(2)).abs().max() < 1e-9
    fillers = load_sap_surprisal(sap, "filler")
    assert not fillers["critical"].any() and fillers["condition"].eq("").all()


def test_sap_published_effects(sap):
    human = load_sap_effects(sap, "ClassicGP", "human").set_index(["construction", "roi"])
    gpt2 = load_sap_effects(sap, "ClassicGP", "gpt2").set_index(["construction", "roi"])
    assert list(load_sap_effects(sap, "Agreement", "lstm").columns) == EFFECT_COLUMNS
    assert round(human.loc[("GPE_MVRR", 1), "mean"]) == 202 and round(gpt2.loc[("GPE_MVRR", 1), "mean"]) == 7
    table = sap_benchmark.human_vs_predicted(sap)
    assert len(table) == 21 and not table.isna().any().any()
    mvrr = table.set_index(["construction", "roi"]).loc[("GPE_MVRR", 1)]
    assert 179 < mvrr["lower"] < mvrr["mean"] < mvrr["upper"] < 225
    assert abs(mvrr["ratio"] - 202.05 / 7.118) < 0.05


def test_sap_trial_level_effects(sap):
    table = sap_benchmark.trial_effects(sap)
    assert len(table) == 6 and table["n_items"].eq(18).all() and not table["n_excluded"].any()
    assert set(table["construction"]) == {"Agr", "GPE_NPZ"}
    assert table["within_cri"].all() and table["close"].all()  # read from the released files, as registered
    raw = sap_benchmark.trial_effects(sap, rt="RT")  # uncorrected RTs lead to the same conclusion
    assert raw["within_cri"].all()
    text = format_report(sap_benchmark.surprisal_effects(sap), sap_benchmark.human_vs_predicted(sap), table)
    assert text.count("PASS") == 4 + 6 and "FAIL" not in text


def test_sap_registered_human_effects_are_the_released_ones(sap):
    """The registry's published means, CrIs and fits equal the released files (rounded to 0.01 ms)."""
    fit = load_sap_trial_fit(sap).set_index(["construction", "roi"])
    sources = {name: (subset, fit_name) for subset, name, fit_name in sap_benchmark.TRIAL_CONSTRUCTIONS.values()}
    for (construction, roi), (_, mean, low, high, fitted) in sap_benchmark.PUBLISHED_TRIAL_EFFECTS.items():
        subset, fit_name = sources[construction]
        row = load_sap_effects(sap, subset, "human").set_index(["construction", "roi"]).loc[(construction, roi)]
        assert (mean, low, high) == tuple(round(float(row[c]), 2) for c in ("mean", "lower", "upper"))
        assert fitted == round(float(fit.loc[(fit_name, roi), "mean"]), 2)


def test_sap_trials(sap):
    trials = load_sap_trials(sap)
    assert len(trials) == 81924 and trials["participant"].nunique() == 2000
    assert set(trials["ROI"]) == {0, 1, 2} and set(trials["Type"]) == {"AGREE", "NPZ"}


def test_sap_trials_join_the_released_surprisal(sap):
    joined = load_sap_trial_surprisal(sap)
    assert len(joined) == 81924
    assert joined["join_status"].value_counts().to_dict() == {"ok": 81909, "word differs": 15}
    # the 15: five NP/Z trials of item 14 (unambiguous) whose Sentence is empty and whose three ROI words sit one
    # position later than in the released sentence
    bad = joined[joined["join_status"] != "ok"]
    assert set(zip(bad["Type"], bad["item"], bad["condition"])) == {("NPZ", 14, "NPZ_UAMB")}
    assert bad["participant"].nunique() == 5 and bad["Sentence"].isna().all() and bad["surprisal"].isna().all()
    ok = joined[joined["join_status"] == "ok"]
    assert ok["Sentence"].notna().all() and ok[["surprisal", "surprisal_prev1"]].notna().all().all()
    # independently of the released table: WordPosition counts the trial sentence's words from 1
    shown = ok.drop_duplicates(["Sentence", "WordPosition", "EachWord", "prev_word"])
    words = shown["Sentence"].str.split(" ")
    assert all(w[i - 1] == each for w, i, each in zip(words, shown["WordPosition"], shown["EachWord"]))
    assert all(w[i - 2] == prev for w, i, prev in zip(words, shown["WordPosition"], shown["prev_word"]))
    # ROI 0 is the critical word and pGram U / G are the ungrammatical / ambiguous and grammatical / unambiguous
    # conditions: the agreement difference over its 18 items is the paper's 7.22 bits; NP/Z's 18 trial items (of
    # 24) give the difference read here from the raw file (disambPosition_0idx counts from 0 in ClassicGP)
    roi0 = ok[ok["ROI"] == 0].pivot_table(index=["Type", "item"], columns="pGram", values="surprisal")
    diff = (roi0["U"] - roi0["G"]).groupby(level="Type").mean()
    raw = pd.read_csv(sap / "Surprisals" / "data" / "gpt2" / "items_ClassicGP.gpt2.csv", index_col=0)
    critical = raw[(raw["word_pos"] == raw["disambPosition_0idx"]) & raw["item"].isin(roi0.loc["NPZ"].index)]
    npz = critical.pivot_table(index="item", columns="condition", values="sum_surprisal_base2")
    assert abs(diff["AGREE"] - 7.22) <= 0.01 and len(npz) == 18
    assert abs(diff["NPZ"] - (npz["NPZ_AMB"] - npz["NPZ_UAMB"]).mean()) < 1e-9
    # spillover: the previous word's surprisal at ROI 1 is the same trial's ROI 0 surprisal
    trial = ["participant", "Type", "item"]
    pair = ok[ok["ROI"] == 0].merge(ok[ok["ROI"] == 1], on=trial, suffixes=("_0", "_1"))
    assert len(pair) > 27000 and (pair["surprisal_0"] == pair["surprisal_prev1_1"]).all()


def test_sap_join_names_the_rows_it_cannot_match():
    words = pd.DataFrame({"subset": "Agreement", "item": 1, "condition": "AGREE", "sentence": "A dog barks loudly",
                          "word_pos": range(4), "word": ["A", "dog", "barks", "loudly"],
                          "surprisal": [5.0, 9.0, 7.0, 4.0]})
    trials = pd.DataFrame({"Type": "AGREE", "pGram": ["G", "G", "G", "G", "U"], "item": 1,
                           "WordPosition": [3, 4, 3, 5, 3], "EachWord": ["barks", "quietly", "barks", "x", "barks"],
                           "Sentence": ["A dog barks loudly", "A dog barks quietly", "A cat barks loudly", None,
                                        "A dog bark loudly"]})
    joined = join_sap_trials(trials, words)
    assert joined["join_status"].tolist() == ["ok", "word differs", "sentence differs", "no such word",
                                              "no such word"]
    assert joined["surprisal"].tolist()[0] == 7.0 and joined["surprisal_prev1"].tolist()[0] == 9.0
    assert joined["surprisal"].isna().tolist() == [False, True, True, True, True]
    with pytest.raises(PsylingError, match="unknown Type/pGram AGREE/X"):
        join_sap_trials(trials.assign(pGram="X"), words)
    with pytest.raises(PsylingError, match="missing column"):
        join_sap_trials(trials.drop(columns="EachWord"), words)


SUBSET_PARTICIPANTS = 40  # the first 40 participant ids in sorted order


def test_sap_surprisal_predicts_trial_reading_times(sap):
    table = sap_benchmark.surprisal_regressions(sap, participants=SUBSET_PARTICIPANTS).set_index("construction")
    trials = load_sap_trials(sap)
    chosen = trials[trials["participant"].isin(sorted(trials["participant"].unique())[:SUBSET_PARTICIPANTS])]
    counts = chosen["Type"].value_counts()
    assert table["n_trials"].to_dict() == {"Agreement": counts["AGREE"], "NP/Z": counts["NPZ"]} == \
        {"Agreement": 876, "NP/Z": 776}
    assert table["n_unjoined"].eq(0).all() and table["n_dropped"].eq(0).all()
    assert (table["n"] == table["n_trials"]).all()
    assert table["n_subjects"].eq(SUBSET_PARTICIPANTS).all() and table["n_items"].eq(18).all()
    assert table["converged"].all()
    # surprisal adds to the baseline in both constructions: positive dLL, LR test p < .05, slopes > 0 ms/bit
    assert (table["delta_ll"] > 0).all() and (table["p_value"] < 0.05).all()
    assert (table["slope"] > 0).all() and (table["slope_prev"] > 0).all()
    # the same models fitted by statsmodels' MixedLM (crossed variance components), which agreed to 1e-4 nats
    # with a separate dense-Cholesky profiled fit: dLL 19.1695 / 4.0085 nats; ms/bit 1.6045, 7.4824
    # (agreement) and 11.5148, 1.0794 (NP/Z)
    expected = {"Agreement": (19.1695, 1.6045, 7.4824), "NP/Z": (4.0085, 11.5148, 1.0794)}
    for construction, (delta_ll, slope, slope_prev) in expected.items():
        row = table.loc[construction]
        assert abs(row["delta_ll"] - delta_ll) < 1e-3 and abs(row["slope"] - slope) < 1e-3, construction
        assert abs(row["slope_prev"] - slope_prev) < 1e-3, construction
    assert (table["lr"] - 2 * table["delta_ll"]).abs().max() < 1e-9
    assert (table["delta_ll_per_trial"] * table["n"] - table["delta_ll"]).abs().max() < 1e-9
    assert "none released" in format_regressions(table.reset_index(), "RT_corrected")
    # all 2000 participants: the registered figures of the sap-benchmark reproduction (tests/test_reproduce.py)
    with pytest.raises(PsylingError, match="unknown reading-time column 'logRT'"):
        sap_benchmark.surprisal_regressions(sap, rt="logRT")


# --- malformed SAP files ------------------------------------------------------------------------------------------

def _write_surprisal(root: Path, rows: list[tuple]) -> Path:
    path = root / "Surprisals" / "data" / "gpt2" / "items_Agreement.gpt2.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(rows, columns=["item", "condition", "disambPosition_0idx", "Sentence", "token", "word",
                                        "word_pos", "sum_surprisal_base2"])
    table.to_csv(path)
    return path


def test_sap_readers_name_the_malformed_file(tmp_path):
    good = [(1, "AGREE", 2, "The cat sleeps", word, word, pos, bits)
            for pos, (word, bits) in enumerate([("The", 3.0), ("cat", 9.0), ("sleeps", 7.0)])]
    _write_surprisal(tmp_path, good)
    assert load_sap_surprisal(tmp_path, "Agreement")["critical"].tolist() == [False, True, False]
    _write_surprisal(tmp_path, good[:2] + [(1, "AGREE", 2, "The cat sleeps", "sleeps", "sleeps", 2, "x")])
    with pytest.raises(PsylingError, match=r"items_Agreement\.gpt2\.csv: column sum_surprisal_base2 is not a number"):
        load_sap_surprisal(tmp_path, "Agreement")
    _write_surprisal(tmp_path, [(*row[:2], 9, *row[3:]) for row in good])
    with pytest.raises(PsylingError, match=r"item=1 condition=AGREE: column disambPosition_0idx does not point"):
        load_sap_surprisal(tmp_path, "Agreement")
    with pytest.raises(PsylingError, match=r"items_ClassicGP\.gpt2\.csv: no such file"):
        load_sap_surprisal(tmp_path, "ClassicGP")
    with pytest.raises(PsylingError, match="unknown SAP subset"):
        load_sap_surprisal(tmp_path, "Fillers")
    with pytest.raises(PsylingError, match="no SAP surprisal in bits for model 'rnng'"):
        load_sap_surprisal(tmp_path, "Agreement", "rnng")

    effects = tmp_path / "plots" / "spr" / "Agreement" / "by_construction_gpt2.csv"
    effects.parent.mkdir(parents=True)
    effects.write_text("ROI,coef,mean,lower\n0,Agr,1,0\n")
    with pytest.raises(PsylingError, match=r"by_construction_gpt2\.csv: missing column\(s\) upper"):
        load_sap_effects(tmp_path, "Agreement", "gpt2")
    with pytest.raises(PsylingError, match="unknown SAP effect source"):
        load_sap_effects(tmp_path, "Agreement", "rnng")

    trials = tmp_path / "analysis" / "spr" / "Agreement" / "datasets" / "agreement_data.csv.gz"
    trials.parent.mkdir(parents=True)
    trials.write_bytes(gzip.compress(b"participant,item,Type\n")[:20])
    with pytest.raises(PsylingError, match=r"agreement_data\.csv\.gz: cannot read the table"):
        load_sap_trials(tmp_path)
