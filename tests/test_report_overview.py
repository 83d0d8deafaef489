"""The Overview of the HTML report (psyling/report/overview.py): phenomena, SG score and circuits, verdicts."""
import math
import re
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

import psyling
from psyling.report.overview import overview, phenomenon_accuracy, verdict_cell, verdicts
from psyling.report.report_data import read_report_runs
from psyling.stats import wilson_interval
from small_sets import verb_set_yaml

REPO = Path(__file__).resolve().parents[1]
NPZ = REPO / "stimuli" / "sets" / "garden_path_npz.yaml"
# the "bad" verb is longer in item 2 only, so the tiny random models pass some items and fail others
ITEMS = [("The cat", "sleeps", "sleep"), ("The dog", "ran", "running"), ("A bird", "sings", "sing")]
BATTERY = """name: tinygym
description: a tiny battery with a score block, written for this test
sets: [{a}, {b}, {npz}]
score:
  exclude: [set_b]
  circuits:
    Pair: [set_a, garden_path_npz]
    Excluded only: [set_b]
"""
PHENOMENA = {"set_a": "shared_agreement", "set_b": "shared_agreement", "garden_path_npz": "garden_path_npz"}


def write_set(folder, name, n_items):
    (folder / f"{name}.yaml").write_text(verb_set_yaml(name, "shared_agreement"))
    rows = [f"{k + 1},{cond},{start},{verb},on the mat." for k, (start, good, bad) in enumerate(ITEMS[:n_items])
            for cond, verb in (("good", good), ("bad", bad))]
    (folder / f"{name}.csv").write_text("item,condition,start,verb,end\n" + "\n".join(rows) + "\n")
    return folder / f"{name}.yaml"


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory, bpe_llama, bpe_gpt2):
    folder = tmp_path_factory.mktemp("overview")
    a, b = write_set(folder, "set_a", 3), write_set(folder, "set_b", 2)
    (folder / "batteries").mkdir()
    (folder / "batteries" / "tinygym.yaml").write_text(BATTERY.format(a=a, b=b, npz=NPZ))
    patch = pytest.MonkeyPatch()
    patch.setenv("PSYLING_STIMULI", str(folder))
    first, second = folder / "llama", folder / "gpt2"
    psyling.run(bpe_llama, battery="tinygym", out=first, progress=False, max_items=4)
    psyling.run(bpe_gpt2, battery="tinygym", out=second, progress=False, max_items=4)
    psyling.analyze(first, linking="none", plots=False, progress=False)
    yield [first, second]
    patch.undo()


@pytest.fixture(scope="module")
def runs(run_dirs):
    return read_report_runs(run_dirs)


@pytest.fixture(scope="module")
def section(runs):
    return overview(runs)


def table_rows(html, table_id):
    """The body rows of the table with ``table_id``: a list of lists of (shown text, data-v or None)."""
    body = re.search(rf'<table class="sortable" id="{table_id}">.*?<tbody>(.*?)</tbody>', html, re.S).group(1)
    return [[(m.group(2), m.group(1)) for m in re.finditer(r'<td[^>]*?(?: data-v="([^"]*)")?>(.*?)</td>', row)]
            for row in re.findall(r"<tr>(.*?)</tr>", body)]


def table_header(html, table_id):
    head = re.search(rf'<table class="sortable" id="{table_id}"><thead><tr>(.*?)</tr>', html, re.S).group(1)
    return re.findall(r"<th>(.*?)</th>", head)


def item_passes_by_hand(run_dir):
    predictions = pd.read_parquet(run_dir / "predictions.parquet")
    return {key: bool(group["passed"].all()) for key, group in predictions.groupby(["set", "item"])}


def test_sections_and_captions(runs, section):
    assert overview(runs) == section  # the same bytes
    assert section.startswith('<section id="overview">') and section.endswith("</section>")
    for ident in ("leaderboard", "accuracy", "phenomena", "sg-score", "verdicts"):
        assert f'<table class="sortable" id="{ident}">' in section
    assert section.count('class="caption"') == section.count('<table class="sortable"')
    assert section.count("download CSV") == section.count('<table class="sortable"')
    assert "Item-weighted" in section and "mean_of_sets" in section


def test_phenomenon_accuracy_equals_a_hand_computation(run_dirs, runs, section):
    table = phenomenon_accuracy(runs)
    header = table_header(section, "phenomena")
    shown = {row[0][0]: row for row in table_rows(section, "phenomena")}
    assert set(shown) == {"shared_agreement", "garden_path_npz"}
    for run_dir, run in zip(run_dirs, runs):
        passes = item_passes_by_hand(run_dir)
        for phenomenon in ("shared_agreement", "garden_path_npz"):
            passed = [p for (s, _), p in passes.items() if PHENOMENA[s] == phenomenon]
            per_set = [sum(p for (s2, _), p in passes.items() if s2 == s) / sum(1 for (s2, _) in passes if s2 == s)
                       for s in PHENOMENA if PHENOMENA[s] == phenomenon]
            row = table[(table["phenomenon"] == phenomenon) & (table["model"] == run.label)].iloc[0]
            low, high = wilson_interval(sum(passed), len(passed))
            assert row["n_items"] == len(passed) and row["accuracy"] == pytest.approx(sum(passed) / len(passed))
            assert (row["ci_low"], row["ci_high"]) == pytest.approx((low, high))
            assert row["mean_of_sets"] == pytest.approx(sum(per_set) / len(per_set))
            cell = shown[phenomenon][header.index(run.label)][0]
            assert cell == f"{sum(passed) / len(passed):.3f} [{low:.3f}, {high:.3f}]"
    shared = table[table["phenomenon"] == "shared_agreement"]
    assert shared["n_items"].tolist() == [5, 5] and shared["n_sets"].tolist() == [2, 2]
    assert (shared["accuracy"] != shared["mean_of_sets"]).any()  # the two averages differ here


def test_sg_score_and_circuits_equal_an_independent_computation(run_dirs, runs, section):
    header = table_header(section, "sg-score")
    assert header == ["score", "battery", "n_suites", *[r.label for r in runs]]
    rows = {row[0][0]: row for row in table_rows(section, "sg-score")}
    assert set(rows) == {"SG score (excluding set_b)", "circuit: Pair", "circuit: Excluded only"}
    for run_dir, run in zip(run_dirs, runs):
        passes = item_passes_by_hand(run_dir)
        suite = {s: sum(p for (s2, _), p in passes.items() if s2 == s) / sum(1 for (s2, _) in passes if s2 == s)
                 for s in PHENOMENA}
        column = header.index(run.label)
        expected = (suite["set_a"] + suite["garden_path_npz"]) / 2  # set_b is excluded
        assert float(rows["SG score (excluding set_b)"][column][1]) == pytest.approx(expected)
        assert float(rows["circuit: Pair"][column][1]) == pytest.approx(expected)
        assert math.isnan(float(rows["circuit: Excluded only"][column][1]))  # excluded suites score in no circuit
    assert rows["SG score (excluding set_b)"][2][0] == "2"


def test_verdicts_show_the_analysis_values(run_dirs, runs, section):
    comparison = pd.read_parquet(run_dirs[0] / "analysis" / "comparison.parquet").set_index("set")
    long = verdicts(runs)
    assert set(long["model"]) == {runs[0].label}  # only the first run was analysed
    header = table_header(section, "verdicts")
    rows = {row[0][0]: row for row in table_rows(section, "verdicts")}
    npz = comparison.loc["garden_path_npz"]
    assert npz["present"] in ("yes", "no", "reversed")
    assert rows["garden_path_npz"][header.index(runs[0].label)][0] == f"present: {npz['present']}; {npz['direction']}"
    assert rows["garden_path_npz"][header.index(runs[1].label)][0] == ""
    accuracy = {(r[0][0], r[1][0]): r for r in table_rows(section, "accuracy")}
    board_header = table_header(section, "accuracy")
    row = accuracy[("garden_path_npz", runs[0].label)]
    assert row[board_header.index("effect_present")][0] == npz["present"]
    assert row[board_header.index("human_direction")][0] == npz["direction"]
    assert row[board_header.index("verdict")][0] == npz["verdict"].replace("&", "&amp;")


def test_verdict_cell_with_a_size():
    row = pd.Series({"effect_present": "yes", "human_direction": "as in humans",
                     "size_vs_human": "smaller than in humans", "ratio": 0.25})
    assert verdict_cell(row) == "present: yes; as in humans; smaller than in humans (ratio 0.25)"
    assert verdict_cell(row.copy().replace({"yes": ""})) == "no human effect to compare"


def test_runs_without_analysis_or_battery_score(runs, monkeypatch):
    monkeypatch.delenv("PSYLING_STIMULI")  # the core stimuli: no tinygym battery
    bare = [replace(run, tables={k: v for k, v in run.tables.items() if k in ("summary", "regions", "predictions")},
                    manifest={**run.manifest, "config": {**run.manifest["config"], "battery": None},
                              "stimuli": {**run.manifest["stimuli"], "battery": None}}) for run in runs]
    section = overview(bare)
    for ident in ("leaderboard", "accuracy", "phenomena"):
        assert f'id="{ident}"' in section
    assert 'id="sg-score"' not in section and 'id="verdicts"' not in section
    assert "shared_agreement" in section  # phenomena come from the reloaded stimulus files
