"""``psyling analyze``: statistics, verdicts and plots written next to a run; bad inputs get one-line errors."""
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import psyling
import psyling.api
from psyling.analysis import LINKING_CORPORA, LinkingCorpus, analyze
from psyling.cli import main
from psyling.config import RunConfig
from psyling.errors import PsylingError
from psyling.models import CaptureSpec, ModelSpec, ScoringOptions
from psyling.stimuli import Condition, Item, ReadingCorpus, StimulusSet

from test_malformed import manifest as write_set
from tiny import CORPUS

REPO = Path(__file__).resolve().parents[1]
SETS = [REPO / "stimuli" / "sets" / f"{name}.yaml" for name in ("garden_path_npz", "n400_cloze")]

PLAIN_SET = """schema_version: 1
name: plain
phenomenon: test
citation: none
items: plain.csv
regions: [subject, verb]
conditions: [a, b]
predictions: ["(verb;%a%) < (verb;%b%)"]
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, bpe_llama):
    folder = tmp_path_factory.mktemp("sets")
    for path in SETS:
        shutil.copy(path, folder / path.name)
        shutil.copy(path.with_suffix(".csv"), folder / path.with_suffix(".csv").name)
    (folder / "plain.yaml").write_text(PLAIN_SET)
    (folder / "plain.csv").write_text("item,condition,subject,verb\n" + "".join(
        f"{i},a,The dog {i},runs.\n{i},b,The dog {i},run.\n" for i in range(1, 7)))
    out = tmp_path_factory.mktemp("run")
    psyling.run(bpe_llama, [folder], out=out, progress=False, max_items=8)
    return out


def test_analyze_writes_tables_verdicts_and_plots(run_dir):
    result = analyze(run_dir, linking="none", progress=False)
    out = run_dir / "analysis"
    for name in ("comparison.parquet", "mixed.parquet", "accuracy_by_phenomenon.parquet", "verdicts.csv",
                 "analysis.json", "plots/effects.png", "plots/profile_garden_path_npz.png"):
        assert (out / name).is_file(), name
    assert (out / "plots" / "effects.png").read_bytes()[:4] == b"\x89PNG"
    assert result.notes == []  # every set reloads from the files the run recorded
    table = result.comparison.set_index("set")
    assert table.loc["plain", "verdict"] == "no human effect recorded for this set"
    # the model effect is the human-effect expression on region surprisal, recomputed here from regions.parquet
    regions = pd.read_parquet(run_dir / "regions.parquet")
    npz = regions[(regions["set"] == "garden_path_npz") & (regions["region"] == "main_verb")]
    cells = npz.pivot(index="item", columns="condition", values="surprisal")
    expected = (cells["trans_nocomma"] - cells["trans_comma"]).mean()
    assert table.loc["garden_path_npz", "model_bits"] == pytest.approx(expected)
    assert table.loc["garden_path_npz", "n_items"] == 8
    assert table.loc["garden_path_npz", "present"] in ("yes", "no", "reversed")
    # the 2x2 set gets both factors and their interaction, deviation-coded, with by-item random effects
    mixed = result.mixed[result.mixed["set"] == "garden_path_npz"]
    assert len(mixed) == 4 and mixed["term"].str.contains(":").sum() == 1
    comma = mixed[mixed["term"].str.startswith("comma") & ~mixed["term"].str.contains(":")]["estimate"].item()
    by_comma = npz.assign(comma=npz["condition"].str.endswith("nocomma")).groupby("comma")["surprisal"].mean()
    assert abs(comma) == pytest.approx(abs(by_comma[True] - by_comma[False]), rel=1e-6)
    assert json.loads((out / "analysis.json").read_text())["multiple_comparisons"].startswith("Benjamini")


def test_analyze_fits_linking_functions_on_the_ucl_corpus(run_dir, bpe_llama, data):
    result = analyze(run_dir, linking="ucl", data_root=data, plots=False, progress=False, model=bpe_llama)
    assert set(result.linkings) == {"SPR", "eye-tracking", "ERP-N400"}
    spr = result.linkings["SPR"]
    assert spr.unit == "ms" and set(spr.slopes) == {0, 1, 2} and spr.details["n"] > 1000
    row = result.comparison.set_index("set").loc["n400_cloze"]
    assert row["unit"] == "µV" and row["linking"].startswith("UCL corpus N400")
    assert row["predicted"] == pytest.approx(row["model_bits"] * result.linkings["ERP-N400"].slopes[0], rel=1e-6)


def test_analyze_fits_the_spr_linking_on_natural_stories(run_dir, bpe_llama, data):
    """--linking naturalstories: the run's model scores the 10 stories; SPR linking from their mean RTs."""
    from tiny import byte_bpe_tokenizer, tiny_llama

    too_long = r"^Natural Stories: the run's model could not score it: .*3930 tokens exceed the model's context of 128"
    with pytest.raises(PsylingError, match=too_long):
        analyze(run_dir, linking="naturalstories", data_root=data, plots=False, progress=False, model=bpe_llama)
    long_llama = tiny_llama(byte_bpe_tokenizer(), max_positions=16384)
    result = analyze(run_dir, linking="naturalstories", data_root=data, plots=False, progress=False,
                     model=long_llama)
    assert set(result.linkings) == {"SPR"}
    spr = result.linkings["SPR"]
    # 10,256 words; the first two of each story lack spillover surprisal, and rows without an RT drop too
    assert spr.unit == "ms" and set(spr.slopes) == {0, 1, 2} and 10000 < spr.details["n"] <= 10256 - 20
    row = result.comparison.set_index("set").loc["garden_path_npz"]
    assert row["unit"] == "ms" and row["linking"] == "Natural Stories meanItemRT"
    assert json.loads((run_dir / "analysis" / "analysis.json").read_text())["linking"]["SPR"]["source"] == \
        "Natural Stories meanItemRT"


def test_bad_run_directories_get_one_line_errors(tmp_path, run_dir, capsys):
    with pytest.raises(PsylingError, match="missing words.parquet"):
        broken = tmp_path / "broken"
        shutil.copytree(run_dir, broken)
        (broken / "words.parquet").unlink()
        analyze(broken, linking="none")
    assert main(["analyze", str(tmp_path / "nowhere"), "--linking", "none"]) == 2
    assert "not a directory" in capsys.readouterr().err
    manifest = json.loads((run_dir / "manifest.json").read_text())
    moved = tmp_path / "moved"
    shutil.copytree(run_dir, moved)
    manifest["stimuli"]["sets"][0]["source"] = str(tmp_path / "gone.yaml")
    (moved / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PsylingError, match="gone.yaml.*not found"):
        analyze(moved, linking="none")


def test_nan_surprisal_is_counted_not_hidden(tmp_path, run_dir):
    copy = tmp_path / "nan"
    shutil.copytree(run_dir, copy)
    regions = pd.read_parquet(copy / "regions.parquet")
    first = regions["item"].iloc[0]
    hit = (regions["set"] == "n400_cloze") & (regions["region"] == "target") & (regions["item"] == first)
    regions.loc[hit, "surprisal"] = float("nan")
    regions.to_parquet(copy / "regions.parquet", index=False)
    result = analyze(copy, linking="none", plots=False)
    row = result.comparison.set_index("set").loc["n400_cloze"]
    assert row["n_missing"] == 1 and row["n_items"] == 7
    assert any("no surprisal (NaN)" in note for note in result.notes)


def test_compare_two_runs_pairs_items(tmp_path, run_dir, capsys):
    other = tmp_path / "other"
    shutil.copytree(run_dir, other)
    predictions = pd.read_parquet(other / "predictions.parquet")
    flip = (predictions["set"] == "n400_cloze") & predictions["item"].isin(["1", "2", "3"])
    predictions.loc[flip, "passed"] = ~predictions.loc[flip, "passed"]
    predictions.to_parquet(other / "predictions.parquet", index=False)
    assert main(["compare", str(run_dir), str(other), "--n-boot", "500", "--out", str(tmp_path / "c.csv")]) == 0
    table = pd.read_csv(tmp_path / "c.csv").set_index("set")
    original = pd.read_parquet(run_dir / "predictions.parquet")
    cloze = original[original["set"] == "n400_cloze"].set_index("item")["passed"]
    assert table.loc["n400_cloze", "n_items"] == 8
    assert table.loc["n400_cloze", "difference"] == pytest.approx((cloze[["1", "2", "3"]].sum() * 2 - 3) / 8)
    assert table.loc["garden_path_npz", "difference"] == 0
    assert "McNemar" in capsys.readouterr().out


def _tiny_corpus(root: Path) -> ReadingCorpus:
    """A reading corpus of a few sentences with a random reading time per word (a stand-in for UCL)."""
    texts = list(dict.fromkeys(CORPUS))
    items = [Item(str(k + 1), {"text": Condition("text", (t,))}) for k, t in enumerate(texts)]
    stim = StimulusSet(name="tiny_corpus", regions=("text",), conditions=("text",), items=items, predictions=[],
                       source=str(root), segmentation="whitespace", phenomenon="naturalistic reading",
                       citation="none").validate()
    words = pd.DataFrame([(str(k + 1), i, w) for k, t in enumerate(texts) for i, w in enumerate(t.split())],
                         columns=["item", "word_index", "word"])
    return ReadingCorpus(stim, words.assign(rt=np.random.default_rng(0).normal(300, 30, len(words))))


def test_analyze_rescores_the_linking_corpus_with_exactly_the_runs_settings(tmp_path, bpe_llama, monkeypatch):
    folder = tmp_path / "tiny"
    bpe_llama.model.save_pretrained(folder)
    bpe_llama.tokenizer.save_pretrained(folder)
    config = RunConfig(ModelSpec(str(folder), revision="v-test", dtype="bfloat16"),
                       ScoringOptions(context_token="eos", batch_size=5, max_tokens=48, convention="lm-eval"),
                       stimuli=(str(write_set(tmp_path)),), max_items=2, measure="surprisal_raw")
    psyling.run(config, out=tmp_path / "run", progress=False, activations=CaptureSpec(layers=(1,)),
                lens_layers=[2])
    loads, runs = [], []
    real_load, real_run = psyling.api.load_model, psyling.api.run
    monkeypatch.setattr(psyling.api, "load_model", lambda name, **kw: loads.append((name, kw)) or real_load(name, **kw))
    monkeypatch.setattr(psyling.api, "run", lambda cfg, *a, **kw: runs.append((cfg, real_run(cfg, *a, **kw))) or
                        runs[-1][1])
    monkeypatch.setitem(LINKING_CORPORA, "ucl", LinkingCorpus("tiny", _tiny_corpus, "tiny corpus",
                                                              {"SPR": ("rt", "ms")}))
    (tmp_path / "data" / "tiny").mkdir(parents=True)
    result = analyze(tmp_path / "run", linking="ucl", data_root=tmp_path / "data", plots=False, progress=False)
    assert loads == [(str(folder), {"dtype": "bfloat16", "device": "cpu", "trust_remote_code": False,
                                    "revision": "v-test"})]
    (used, scored), = runs
    assert used == config.for_rescoring()  # the run's model and scoring; no stimuli, capture or lens of its own
    settings = scored.manifest["settings"]
    assert (settings["dtype"], settings["max_tokens"], settings["batch_size"]) == ("bfloat16", 48, 5)
    assert settings["convention"]["name"] == "lm-eval" and settings["context_token"]["token"] == "<eos>"
    assert scored.manifest["model"]["revision"] == "v-test" and "activations" not in scored.manifest
    assert set(result.linkings) == {"SPR"} and result.linkings["SPR"].details["n"] > 50
