"""A sweep over a battery whose file defines a score (as syntaxgym2020 defines the SG score and its circuits):
``collect`` gives the score per model from the battery's sets only, equal to what ``psyling run --battery``
computes, and says when suites are missing (psyling/sweep/collect.py, psyling/stats/sg_score.py)."""
import pandas as pd
import pytest

import psyling
from psyling.stats import battery_score_rows, item_passes
from psyling.sweep.collect import battery_score_table
from psyling.sweep.executors import ExecutorConfig, execute
from psyling.sweep.spec import BatteryScore, load_sweep
from psyling.sweep.store import SweepStore
from sweep_cases import REPO, SETS
from test_sweep_collect import PASSING, SET_SIZES, FakeStore
from tiny import byte_bpe_tokenizer, tiny_llama

OUTSIDE = REPO / "stimuli" / "sets" / "negation.yaml"  # a set of the sweep that the battery does not hold
SCORE = {"exclude": ["garden_path_npz"], "circuits": {"Agreement": ["agreement_simple"],
                                                      "Garden paths": ["garden_path_npz"]}}
BATTERY_YAML = "name: mini\nsets: [{sets}]\nscore:\n  exclude: [garden_path_npz]\n  circuits:\n" \
               "    Agreement: [agreement_simple]\n    Garden paths: [garden_path_npz]\n"


@pytest.fixture()
def battery_sweep(tmp_path, monkeypatch):
    """A stimuli root holding the battery ``mini`` (two core sets, one excluded from its score), one tiny model,
    and a sweep file with the battery and one more set."""
    (tmp_path / "stimuli" / "batteries").mkdir(parents=True)
    (tmp_path / "stimuli" / "batteries" / "mini.yaml").write_text(BATTERY_YAML.format(sets=", ".join(map(str, SETS))))
    monkeypatch.setenv("PSYLING_STIMULI", str(tmp_path / "stimuli"))
    lm = tiny_llama(byte_bpe_tokenizer(), seed=3)
    lm.model.save_pretrained(tmp_path / "tiny")
    lm.tokenizer.save_pretrained(tmp_path / "tiny")
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"name: scored\nmodels:\n  - name: {tmp_path / 'tiny'}\n    alias: tiny\nbatteries: [mini]\nsets: [{OUTSIDE}]\n"
                     f"max_items: 4\ncache: false\n")
    return sweep


def test_sweep_knows_which_sets_each_scored_battery_holds(battery_sweep):
    sweep = load_sweep(battery_sweep)
    assert len(sweep.cells) == 3
    assert sweep.scores == (BatteryScore("mini", SCORE, ("garden_path_npz", "agreement_simple")),)


def test_battery_score_equals_psyling_run_with_the_battery(battery_sweep, tmp_path, capsys):
    from psyling.cli import main

    sweep = load_sweep(battery_sweep)
    store = SweepStore(tmp_path / "store")
    assert len(execute(sweep.cells, store, ExecutorConfig("local", progress=False)).executed) == 3
    table = battery_score_table(store, sweep.scores)
    run = psyling.run(str(tmp_path / "tiny"), battery="mini", max_items=4, cache=False, progress=False)
    expected = battery_score_rows(item_passes(run.predictions), "mini", SCORE)
    assert table[["score", "battery", "n_suites", "value"]].equals(expected)
    assert list(table["score"]) == ["SG score (excluding garden_path_npz)", "circuit: Agreement",
                                    "circuit: Garden paths"]
    agreement = run.summary.set_index("set").loc["agreement_simple", "accuracy"]
    assert table["value"].iloc[0] == pytest.approx(agreement)  # one suite scored: the other is excluded
    assert table["n_suites"].tolist() == [1, 1, 0] and (table["n_suites_in_battery"] == 1).all()
    assert main(["sweep", "collect", str(battery_sweep), "--store", str(store.root), "--n-boot", "5"]) == 0
    out = capsys.readouterr().out
    assert f"    SG score (excluding garden_path_npz): {agreement:.3f} (1 of 1 suites)" in out
    assert "    circuit: Garden paths: nan (0 suites)" in out
    assert pd.read_csv(store.root / "collect" / "battery_scores.csv")["value"].iloc[0] == pytest.approx(agreement)


def test_battery_score_uses_only_the_battery_sets_and_counts_missing_suites():
    score = BatteryScore("b", {"circuits": {"C": ["s1", "s2"]}}, ("s1", "s2", "s3"))  # s3: no cell done yet
    only_s1 = BatteryScore("one", {}, ("s1",))
    table = battery_score_table(FakeStore(), [score, only_s1]).set_index(["battery", "model", "step", "score"])
    for (model, step), passing in PASSING.items():
        accuracies = [passing[s] / SET_SIZES[s] for s in ("s1", "s2")]
        sg = table.loc[("b", model, step, "SG score (excluding none)")]
        assert sg["value"] == pytest.approx(sum(accuracies) / 2)  # mean of suite accuracies, not pooled items
        assert (sg["n_suites"], sg["n_suites_in_battery"]) == (2, 3)
        assert table.loc[("b", model, step, "circuit: C"), "value"] == pytest.approx(sum(accuracies) / 2)
        one = table.loc[("one", model, step, "SG score (excluding none)")]
        assert one["value"] == pytest.approx(accuracies[0]) and one["n_suites"] == 1  # s2 is not in "one"
    assert len(table) == len(PASSING) * 3
    assert battery_score_table(FakeStore(), []).empty


def test_battery_scores_follow_training_steps_not_revision_names():
    store = FakeStore(passing={("a", 3): {"s1": 1, "s2": 1}, ("a", 10): {"s1": 4, "s2": 6}})  # "step10" < "step3"
    table = battery_score_table(store, [BatteryScore("b", {}, ("s1", "s2"))])
    assert table["step"].tolist() == [3, 10] and table["revision"].tolist() == ["step3", "step10"]
