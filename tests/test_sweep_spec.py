"""Sweep files (psyling/sweep/spec.py) and their plan (psyling/sweep/plan.py)."""
import shutil

import pytest

from psyling.errors import PsylingError
from psyling.models.loading import converted_folder, resolve_model
from psyling.sweep.plan import format_plan, plan
from psyling.sweep.spec import load_sweep
from small_sets import verb_set_yaml

SET_CSV = """item,condition,start,verb,end
1,good,The key to the cabinets,is,on the table.
1,bad,The key to the cabinets,are,on the table.
2,good,The dog near the cats,barks,at night.
2,bad,The dog near the cats,bark,at night.
3,good,No student,has,ever left.
3,bad,No student,have,ever left.
"""
SWEEP = """name: test-sweep
models:
  - name: tiny
    checkpoints: ckpt/checkpoint-*
sets: [sets/alpha.yaml, sets/beta.yaml]
max_items: 2
grid:
  convention: [psyling, minicons]
"""


@pytest.fixture
def sweep_dir(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("PSYLING_CACHE", str(tmp_path / "cache"))
    for step in (200, 100):
        shutil.copytree(tiny_model_dir, tmp_path / "ckpt" / f"checkpoint-{step}")
    (tmp_path / "sets").mkdir()
    for name in ("alpha", "beta"):
        (tmp_path / "sets" / f"{name}.yaml").write_text(verb_set_yaml(name, "agreement"))
        (tmp_path / "sets" / f"{name}.csv").write_text(SET_CSV)
    (tmp_path / "sweep.yaml").write_text(SWEEP)
    return tmp_path


def test_cells_steps_and_order(sweep_dir):
    sweep = load_sweep(sweep_dir / "sweep.yaml")
    assert sweep.name == "test-sweep"
    assert [(m.alias, m.revision, m.step) for m in sweep.models] == [
        ("tiny", "checkpoint-100", 100), ("tiny", "checkpoint-200", 200)]
    assert sweep.settings_grid == ({"convention": "psyling"}, {"convention": "minicons"})
    assert len(sweep.cells) == 2 * 2 * 2
    order = [(c.model.step, c.set_name, c.settings_label) for c in sweep.cells]
    assert order == [(step, s, f"convention={conv}") for step in (100, 200) for s in ("alpha", "beta")
                     for conv in ("minicons", "psyling")]
    cell = sweep.cells[0]
    assert cell.set_path == str((sweep_dir / "sets" / "alpha.yaml").resolve())
    assert cell.model.spec.name == str((sweep_dir / "ckpt" / "checkpoint-100").resolve())
    config = cell.config()
    assert (config.max_items, config.scoring.convention, config.stimuli) == (2, "minicons", (cell.set_path,))
    assert cell.meta()["settings"] == {"max_items": 2, "convention": "minicons"}
    assert len({c.digest for c in sweep.cells}) == 8 and all(len(c.digest) == 20 for c in sweep.cells)


def test_digests_stable_and_local(sweep_dir):
    first = {(c.model.revision, c.set_name, c.settings_label): c.digest
             for c in load_sweep(sweep_dir / "sweep.yaml").cells}
    again = {(c.model.revision, c.set_name, c.settings_label): c.digest
             for c in load_sweep(sweep_dir / "sweep.yaml").cells}
    assert first == again
    assert (sweep_dir / "cache" / "sweep_digests.json").is_file()
    csv = sweep_dir / "sets" / "beta.csv"
    csv.write_text(SET_CSV.replace("at night", "at noon"))
    changed = {k: v for k, v in ((k, c.digest) for c in load_sweep(sweep_dir / "sweep.yaml").cells
                                 for k in [(c.model.revision, c.set_name, c.settings_label)]) if first[k] != v}
    assert sorted(changed) == sorted(k for k in first if k[1] == "beta")
    csv.write_text(SET_CSV)
    (sweep_dir / "sweep.yaml").write_text(SWEEP.replace("max_items: 2", "max_items: 3"))
    assert all(first[k] != c.digest for c in load_sweep(sweep_dir / "sweep.yaml").cells
               for k in [(c.model.revision, c.set_name, c.settings_label)])
    (sweep_dir / "sweep.yaml").write_text(SWEEP.replace("minicons]", "minicons, lm-eval]"))
    grown = {(c.model.revision, c.set_name, c.settings_label): c.digest
             for c in load_sweep(sweep_dir / "sweep.yaml").cells}
    assert len(grown) == 12 and {k: grown[k] for k in first} == first


@pytest.mark.slow
def test_plan_counts_tokens_of_an_embedded_model_once_converted(tmp_path):
    folder = resolve_model("smollm2-135m")[0]  # the conversion the first load makes (once, in psyling's cache)
    assert converted_folder("smollm2-135m") == folder
    (tmp_path / "alpha.yaml").write_text(verb_set_yaml("alpha", "agreement"))
    (tmp_path / "alpha.csv").write_text(SET_CSV)
    (tmp_path / "sweep.yaml").write_text("name: e\nmodels:\n  - name: smollm2-135m\nsets: [alpha.yaml]\n")
    table = plan(load_sweep(tmp_path / "sweep.yaml"))
    assert table["tokens_source"].tolist() == ["counted"]
    tokenizer = __import__("transformers").AutoTokenizer.from_pretrained(folder)
    sentences = [line.split(",", 2)[2].replace(",", " ") for line in SET_CSV.splitlines()[1:]]
    assert table["tokens"].tolist() == [sum(len(tokenizer(s, add_special_tokens=False)["input_ids"])
                                            for s in sentences)]
    assert converted_folder("gpt2") is None and converted_folder(str(tmp_path / "missing.gguf")) is None


def test_plan_counts_tokens(sweep_dir):
    sweep = load_sweep(sweep_dir / "sweep.yaml")
    table = plan(sweep, done={sweep.cells[0].digest}, tokens_per_second=10.0)
    assert len(table) == 8 and table["done"].tolist() == [True] + [False] * 7
    assert set(table["n_items"]) == {2} and set(table["tokens_source"]) == {"counted"}
    tokenizer = __import__("transformers").AutoTokenizer.from_pretrained(sweep.cells[0].model.spec.name)
    sentences = [line.split(",", 2)[2].replace(",", " ") for line in SET_CSV.splitlines()[1:5]]
    expected = sum(len(tokenizer(s, add_special_tokens=False)["input_ids"]) for s in sentences)
    assert set(table["tokens"]) == {expected}
    assert table["seconds"].tolist() == pytest.approx([expected / 10.0] * 8)
    text = format_plan(table)
    assert "cells: 8 total, 1 done, 7 to run" in text
    assert f"tokens to score: {7 * expected:,} (counted)" in text
    assert "tiny: 2 revision(s), 8 cells, 7 to run" in text
    measured = plan(sweep, records=[{"model": {"id": sweep.cells[0].model.spec.name},
                                     "timings": {"tokens_scored": 500, "scoring_s": 2.0}}])
    assert measured["speed_source"].tolist() == ["measured", "measured", "measured", "measured",
                                                 "reference", "reference", "reference", "reference"]
    assert measured["tokens_per_s"].iloc[0] == 250.0


MALFORMED = [
    ("models: []\nsets: [sets/alpha.yaml]\n", "field=models: must list at least one model"),
    ("models: [{name: tiny, checkpoints: nothing/ckpt-*}]\nsets: [sets/alpha.yaml]\n",
     "field=models[1].checkpoints: 'nothing/ckpt-*' matches no checkpoint"),
    ("models: [{name: EleutherAI/pythia-70m, revisions: [main, step10], step_pattern: 'step(\\d+)'}]\n"
     "sets: [sets/alpha.yaml]\n", "field=models[1].step_pattern: 'step(\\\\d+)' does not match revision 'main'"),
    ("models: [smollm2-135m]\nbatteries: [no-such-battery]\n", "field=batteries: unknown battery 'no-such-battery'"),
    ("models: [smollm2-135m]\nsets: [sets/alpha.yaml]\ngrid: {convention: psyling}\n",
     "field=grid.convention: must be a non-empty list of values, got string"),
    ("models: [smollm2-135m]\nsets: [sets/alpha.yaml]\ngrid: {convention: [psyling, nonsense]}\n",
     "field=grid.convention: unknown"),
    ("models: [smollm2-135m]\nsets: [sets/alpha.yaml]\nmax_items: 0\n", "field=max_items: max_items must be"),
    ("models: [smollm2-135m]\nsets: [sets/alpha.yaml]\nbogus_key: 1\n", "field=bogus_key: unknown run setting"),
    ("models: [{name: smollm2-135m, colour: red}]\nsets: [sets/alpha.yaml]\n", "field=models[1].colour: unknown key"),
    ("models: smollm2-135m\nsets: [sets/alpha.yaml]\n", "field=models: must be an array, got string"),
    ("models: [smollm2-135m]\nsets: [sets/missing.yaml]\n", "field=sets:"),
    ("models: [./no/such/folder]\nsets: [sets/alpha.yaml]\n", "field=models[1].name: no such model folder"),
    ("models: [smollm2-135m]\nsets: [sets/alpha.yaml]\nstimuli: [x.yaml]\n", "field=stimuli: is set per cell"),
    ("models: [smollm2-135m]\nmodels: [smollm2-135m]\n", "field=manifest: not valid YAML at line 2: duplicate key"),
]


@pytest.mark.parametrize("text, message", MALFORMED)
def test_malformed_sweep_is_one_line(sweep_dir, text, message):
    path = sweep_dir / "bad.yaml"
    path.write_text(text)
    with pytest.raises(PsylingError) as caught:
        load_sweep(path)
    error = str(caught.value)
    assert error.startswith(f"{path.resolve()}: ") and message in error and "\n" not in error
