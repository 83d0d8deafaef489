"""Issue 14, analyze side: runs analysed from any directory, the mixed model on the region the predictions compare,
empty compared regions left out (not 0 bits), one-item sets, plots (gaps, styles, file names, no empty effects
plot), the chance level of conjunctions, axis labels, opposite-sign explanations and the summary's mean row."""
import json
import shutil
import warnings
from pathlib import Path

import matplotlib.figure
import numpy as np
import pandas as pd
import pytest

import psyling
import psyling.analysis
from psyling.analysis import analyze, sign_note
from psyling.errors import PsylingError
from psyling.report.interp_plots import layer_curve, prediction_chance
from psyling.report.plots import effects_plot, region_profile, safe_file_names
from psyling.report.terminal import format_summary, format_verdicts
from psyling.stats.human import Linking
from psyling.stimuli import Condition, Item, StimulusSet, load_stimuli

SET = """schema_version: 1
name: {name}
phenomenon: test
citation: none
items: {items}
regions: [subject, critical, rest]
conditions: [a, b]
predictions: ["{prediction}"]
"""
HUMAN = """human:
  measure: SPR
  region: critical
  effect: "(critical;%b%) - (critical;%a%)"
  direction: slower in b
  source: A study
  size: 20.0
  unit: ms
  ci: [10.0, 30.0]
"""
CRITICAL = "(critical;%a%) < (critical;%b%)"
NOUNS = ["dog", "cat", "bird", "fox", "cow", "hen"]


def rows(n_items: int, empty_b: int = 0) -> str:
    """Items whose region 'critical' differs between a and b; the first ``empty_b`` items have it empty in b."""
    lines = [f"{i},a,The {NOUNS[i - 1]},runs,far.\n{i},b,The {NOUNS[i - 1]},{'' if i <= empty_b else 'run'},far.\n"
             for i in range(1, n_items + 1)]
    return "item,condition,subject,critical,rest\n" + "".join(lines)


def write_set(folder: Path, stem: str, name: str = "", prediction: str = CRITICAL, extra: str = "",
              n_items: int = 6, empty_b: int = 0) -> Path:
    (folder / f"{stem}.csv").write_text(rows(n_items, empty_b))
    path = folder / f"{stem}.yaml"
    path.write_text(SET.format(name=name or stem, items=f"{stem}.csv", prediction=prediction) + extra)
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, bpe_llama):
    folder = tmp_path_factory.mktemp("sets")
    write_set(folder, "cmp")
    write_set(folder, "spread", prediction="(critical;%a%) + (rest;%a%) < (critical;%b%) + (rest;%b%)")
    write_set(folder, "holes", extra=HUMAN, empty_b=3)
    write_set(folder, "one", n_items=1)
    write_set(folder, "spaced", name="my set")
    write_set(folder, "underscored", name="my_set")
    out = tmp_path_factory.mktemp("run") / "run"
    psyling.run(bpe_llama, [folder], out=out, progress=False)
    return out


@pytest.fixture
def figures(monkeypatch):
    """The matplotlib figures saved while the test runs."""
    saved, real = [], matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                        lambda fig, *a, **kw: saved.append(fig) or real(fig, *a, **kw))
    return saved


def critical_cells(run_dir: Path, name: str) -> pd.DataFrame:
    regions = pd.read_parquet(run_dir / "regions.parquet")
    chosen = regions[(regions["set"] == name) & (regions["region"] == "critical")]
    return chosen.pivot(index="item", columns="condition", values="surprisal")


# --- point 5: analyze from any working directory --------------------------------------------------------------

def test_analyze_works_from_another_directory(tmp_path, bpe_llama, monkeypatch):
    start, elsewhere = tmp_path / "A", tmp_path / "B"
    start.mkdir(), elsewhere.mkdir()
    write_set(start, "cmp")
    monkeypatch.chdir(start)
    psyling.run(bpe_llama, ["cmp.yaml"], out=tmp_path / "runs" / "run", progress=False)
    stimuli = json.loads((tmp_path / "runs" / "run" / "manifest.json").read_text())["stimuli"]
    assert stimuli["sets"][0]["source"] == str(start / "cmp.yaml") and stimuli["cwd"] == str(start)
    assert set(stimuli["files"]) == {str(start / "cmp.yaml"), str(start / "cmp.csv")}
    monkeypatch.chdir(elsewhere)
    result = analyze(tmp_path / "runs" / "run", linking="none", plots=False)
    assert result.notes == [] and list(result.mixed["set"].unique()) == ["cmp"]


def _relative_manifest(run: Path, cwd: str | None) -> None:
    """Rewrite the run's manifest as an older psyling wrote it: stimulus paths relative to where run started."""
    manifest = json.loads((run / "manifest.json").read_text())
    stimuli = manifest["stimuli"]
    stimuli["sets"] = [{**s, "source": Path(s["source"]).name} for s in stimuli["sets"]]
    stimuli["files"] = {Path(p).name: d for p, d in stimuli["files"].items()}
    stimuli.pop("cwd", None)
    if cwd:
        stimuli["cwd"] = cwd
    (run / "manifest.json").write_text(json.dumps(manifest))


def test_older_manifests_with_relative_paths_resolve_against_cwd_then_the_run_folder(tmp_path, bpe_llama,
                                                                                   monkeypatch):
    start, elsewhere = tmp_path / "A", tmp_path / "B"
    start.mkdir(), elsewhere.mkdir()
    write_set(start, "cmp")
    monkeypatch.chdir(start)
    psyling.run(bpe_llama, ["cmp.yaml"], out=start / "run", progress=False)
    monkeypatch.chdir(elsewhere)
    _relative_manifest(start / "run", None)  # no cwd recorded: the run folder's parent holds the stimuli
    assert analyze(start / "run", linking="none", plots=False).notes == []
    moved = tmp_path / "archive" / "run"
    shutil.copytree(start / "run", moved)
    _relative_manifest(moved, str(start))  # the recorded cwd
    assert analyze(moved, linking="none", plots=False).notes == []
    _relative_manifest(moved, str(tmp_path / "gone"))
    with pytest.raises(PsylingError, match=r"^stimulus file cmp.yaml \(recorded in the run manifest\) not found "
                                           r"under .*gone.*--stimuli$"):
        analyze(moved, linking="none", plots=False)


# --- point 10: the mixed model's region ------------------------------------------------------------------------

def test_mixed_model_is_fitted_on_the_region_the_predictions_compare(run_dir):
    result = analyze(run_dir, linking="none", plots=False)
    mixed = result.mixed.set_index(["set", "term"])
    assert mixed.loc[("cmp", "condition[b]"), "region"] == "critical"
    assert mixed.loc[("cmp", "condition[b]"), "region_from"] == "predictions"
    cells = critical_cells(run_dir, "cmp")  # balanced, complete: the treatment estimate is the mean difference
    assert mixed.loc[("cmp", "condition[b]"), "estimate"] == pytest.approx((cells["b"] - cells["a"]).mean(),
                                                                            rel=1e-6)
    assert mixed.loc[("spread", "condition[b]"), "region"] == "*"
    assert mixed.loc[("spread", "condition[b]"), "region_from"] == "predictions compare several regions: whole " \
                                                                   "sentence"
    assert mixed.loc[("holes", "condition[b]"), "region_from"] == "human.region"


# --- point 16: an empty compared region is left out, not 0 bits ----------------------------------------------

def test_items_with_an_empty_compared_region_are_counted_and_left_out(run_dir):
    result = analyze(run_dir, linking="none", plots=False)
    row = result.comparison.set_index("set").loc["holes"]
    cells = critical_cells(run_dir, "holes")
    assert (cells.loc[["1", "2", "3"], "b"] == 0).all()  # the run itself scores an empty region as 0 bits
    kept = cells.drop(index=["1", "2", "3"])
    assert row["n_empty"] == 3 and row["n_items"] == 3
    assert row["model_bits"] == pytest.approx((kept["b"] - kept["a"]).mean())
    warning, = [n for n in result.notes if "holes" in n and "empty" in n]
    assert warning.startswith("warning: set holes: compared region empty (no text) in 3 of 6 items (critical/b; "
                              "items 1, 2, 3)")
    mixed = result.mixed[result.mixed["set"] == "holes"]
    assert set(mixed["n_empty"]) == {3}
    assert mixed.set_index("term").loc["condition[b]", "estimate"] == pytest.approx((kept["b"] - kept["a"]).mean(),
                                                                                    rel=1e-6)
    assert "(3 items left out: the compared region is empty)" in format_verdicts(result.comparison)


# --- point 12: a one-item set -----------------------------------------------------------------------------------

def test_a_one_item_set_is_not_fitted_and_says_why_without_warnings(run_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        result = analyze(run_dir, linking="none", plots=False)
    assert "one" not in set(result.mixed["set"])
    assert "set one: mixed model not fitted: set one region critical: 1 item(s) with a value; a by-item model " \
           "needs at least 2 (with one, neither the item nor the residual variance can be estimated)" in result.notes


# --- point 11: plots ----------------------------------------------------------------------------------------------

def test_plots_have_safe_unique_names_and_no_empty_effects_plot(run_dir, tmp_path):
    assert safe_file_names(["my set", "my_set", "a  b"]) == {"my set": "my_set", "my_set": "my_set-2", "a  b": "a_b"}
    result = analyze(run_dir, linking="none")
    names = sorted(p.name for p in (run_dir / "analysis" / "plots").iterdir())
    assert "profile_my_set.png" in names and "profile_my_set-2.png" in names
    assert not any(" " in n for n in names) and "effects.png" in names  # 'holes' has a human effect
    folder = Path(json.loads((run_dir / "manifest.json").read_text())["stimuli"]["sets"][0]["source"]).parent
    result = analyze(run_dir, [folder / "cmp.yaml", folder / "spread.yaml"], linking="none")
    assert not (run_dir / "analysis" / "plots" / "effects.png").exists()
    assert "no set has a human effect: effects.png not written" in result.notes
    assert effects_plot(result.comparison, tmp_path / "effects.png") is None and not (tmp_path / "effects.png").exists()


def test_region_profile_draws_empty_regions_as_gaps(run_dir, figures, tmp_path):
    folder = Path(json.loads((run_dir / "manifest.json").read_text())["stimuli"]["sets"][0]["source"]).parent
    holes, = load_stimuli([folder / "holes.yaml"]).sets
    regions = pd.read_parquet(run_dir / "regions.parquet")
    only_empty = regions[~((regions["set"] == "holes") & (regions["condition"] == "b") &
                           ~regions["item"].isin(["1", "2", "3"]))]  # condition b: critical empty in every item
    region_profile(holes, only_empty, tmp_path / "p.png")
    lines = {bars.get_label(): bars.lines[0].get_ydata() for bars in figures[-1].axes[0].containers}
    assert np.isnan(lines["b"][1]) and np.isfinite(lines["b"][[0, 2]]).all() and np.isfinite(lines["a"]).all()


def test_region_profile_gives_twelve_conditions_distinct_styles(figures, tmp_path):
    conditions = tuple(f"c{k}" for k in range(12))
    items = [Item("1", {c: Condition(c, ("The dog", f"ran {k}")) for k, c in enumerate(conditions)})]
    stim = StimulusSet(name="twelve", regions=("subject", "verb"), conditions=conditions, items=items,
                       predictions=[], source="x", segmentation="whitespace", phenomenon="t", citation="none")
    regions = pd.DataFrame([("twelve", "1", c, r + 1, name, "x", float(k + r), float(k + r), 1)
                            for k, c in enumerate(conditions) for r, name in enumerate(stim.regions)],
                           columns=["set", "item", "condition", "region_number", "region", "text", "surprisal",
                                    "surprisal_raw", "n_tokens"])
    region_profile(stim, regions, tmp_path / "twelve.png")
    drawn = {bars.get_label(): bars.lines[0] for bars in figures[-1].axes[0].containers}
    assert set(drawn) == set(conditions)
    assert len({(str(line.get_color()), line.get_marker(), str(line.get_linestyle())) for line in drawn.values()}) == 12


# --- point 20: chance of a conjunction, probe axis, opposite signs, the summary's mean row --------------------------

def test_chance_level_of_predictions_is_the_fraction_of_orderings():
    assert prediction_chance(["(1;%a%) < (1;%b%)"]) == 0.5
    assert prediction_chance(["(1;%a%) < (1;%b%) & (2;%a%) < (2;%b%)"]) == 0.25
    assert prediction_chance(["(1;%a%) < (1;%b%)", "(2;%a%) > (2;%b%)"]) == 0.25  # an item passes if both hold
    assert prediction_chance(["(1;%a%) < (1;%b%) & (1;%b%) < (1;%c%)"]) == pytest.approx(1 / 6)
    assert prediction_chance(["(1;%a%) < (1;%b%) | (2;%a%) < (2;%b%)"]) == 0.75
    # arithmetic: each comparison an independent fair coin
    assert prediction_chance(["[(1;%a%) - (1;%b%)] > [(1;%c%) - (1;%d%)] & (1;%a%) > (1;%b%)"]) == 0.25


def test_layer_curve_labels_the_y_axis_with_the_metrics(figures, tmp_path):
    table = pd.DataFrame([("resid.0", 0, m, v) for m, v in (("accuracy", 0.8), ("control_accuracy", 0.6),
                                                              ("selectivity", 0.2))],
                         columns=["site", "layer", "metric", "value"])
    layer_curve(table, ["accuracy", "control_accuracy", "selectivity"], tmp_path / "probe.png", "probe",
                chance=prediction_chance(["(1;%a%) < (1;%b%) & (2;%a%) < (2;%b%)"]))
    ax = figures[-1].axes[0]
    assert ax.get_ylabel() == "accuracy / control_accuracy / selectivity"
    chance, = [line for line in ax.lines if line.get_label().startswith("chance")]
    assert chance.get_label() == "chance (0.25)" and list(chance.get_ydata()) == [0.25, 0.25]


def test_opposite_signs_of_bits_and_predicted_ms_are_explained(run_dir, monkeypatch, figures):
    linking = Linking("SPR", "ms", {0: -2.0}, "fake corpus")
    monkeypatch.setattr(psyling.analysis, "corpus_linkings", lambda *a, **kw: {"SPR": linking})
    result = analyze(run_dir, linking="ucl")
    row = result.comparison.set_index("set").loc["holes"]
    assert row["predicted"] == pytest.approx(-2.0 * row["model_bits"]) and row["model_bits"] * row["predicted"] < 0
    expected = ("bits and ms of opposite sign: the SPR linking slope is negative (-2.00 ms/bit: more surprisal, a "
                "lower SPR value); the sign of the bits says whether the effect goes the human way")
    assert row["sign_note"] == expected
    assert f"({expected})" in format_verdicts(result.comparison)
    assert pd.read_parquet(run_dir / "analysis" / "comparison.parquet").set_index("set").loc["holes",
                                                                                              "sign_note"] == expected
    effects, = [f for f in figures if any(t.get_text().startswith("† holes: bits and ms") for t in f.texts)]
    assert "holes †" in [t.get_text() for t in effects.axes[1].get_yticklabels()]
    assert result.comparison.set_index("set").loc["cmp", "sign_note"] == ""


def test_sign_note_names_spillover_when_the_slopes_are_positive():
    spill = Linking("SPR", "ms", {0: 1.0, 1: 4.0, 2: 0.5}, "x")
    assert sign_note(1.5, -3.0, spill) == ("bits and ms of opposite sign: the prediction adds spillover from the "
                                           "words before each cell (lag 1: +4.00, lag 2: +0.50 ms/bit), which the "
                                           "region's bits leave out")
    assert sign_note(1.5, 3.0, spill) == "" and sign_note(1.5, float("nan"), spill) == ""
    assert sign_note(1.5, -3.0, None) == ""


def test_summary_mean_row_shows_the_mean_number_of_items():
    summary = pd.DataFrame({"set": ["a", "b"], "n_items": [10, 20], "accuracy": [0.5, 1.0], "ci_low": [0.2, 0.8],
                            "ci_high": [0.8, 1.0]})
    mean_row = format_summary(summary).splitlines()[-1]
    assert mean_row.split()[3:6] == ["15", "0.750", "(unweighted;"] and "30 items in all" in mean_row


def test_lens_plot_chance_line_follows_the_sets_predictions(tmp_path, monkeypatch):
    """A conjunction of two comparisons holds by chance for a quarter of the orderings, one comparison for half."""
    import psyling.layerwise as layerwise

    rows = [(name, "1", 0, formula, True, True, layer) for name, formula in
            (("one", "(1;%a%) < (1;%b%)"), ("two", "(1;%a%) < (1;%b%) & (2;%a%) < (2;%b%)")) for layer in (0, 1)]
    pd.DataFrame(rows, columns=["set", "item", "prediction_index", "prediction", "passed", "evaluable",
                                "layer"]).to_parquet(tmp_path / "lens_predictions.parquet")
    (tmp_path / "manifest.json").write_text(json.dumps({"psyling_version": "test"}))
    drawn = {}
    monkeypatch.setattr(layerwise, "layer_curve", lambda long, metrics, path, title, chance: drawn.update(
        {title: chance}) or path.write_bytes(b"png"))
    layerwise.lens_plots(tmp_path)
    assert drawn == {"logit lens: one": 0.5, "logit lens: two": 0.25}


def test_a_set_whose_every_compared_region_is_empty_says_so(tmp_path, bpe_llama):
    write_set(tmp_path, "void", extra=HUMAN, n_items=3, empty_b=3)
    psyling.run(bpe_llama, [tmp_path / "void.yaml"], out=tmp_path / "run", progress=False)
    notes = analyze(tmp_path / "run", linking="none", plots=False, progress=False).notes
    assert "set void: mixed model not fitted: no items left to model (every item has an empty compared region)" \
        in notes
