"""psyling probe / lens / encode end to end on a tiny model saved to a folder (loaded like any local model)."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import psyling
from psyling.cli import main
from psyling.errors import PsylingError
from psyling.layerwise import encode_corpus, probe_run
from psyling.models import CaptureSpec

REPO = Path(__file__).resolve().parents[1]
AGREEMENT = [REPO / "stimuli" / "sets" / f"{name}.yaml" for name in ("agreement_simple", "reflexive_number")]


def test_probe_a_condition_factor_per_layer(tmp_path, bpe_llama, capsys):
    psyling.run(bpe_llama, AGREEMENT, out=tmp_path, progress=False, max_items=8, activations=CaptureSpec())
    table = probe_run(tmp_path, "number", folds=4, n_permutations=20, plots=True)
    sites = sorted(table["site"].unique())
    assert sites == ["resid.0", "resid.1", "resid.2"]
    wide = table.pivot_table(index="site", columns="metric", values="value")
    assert ((wide["accuracy"] >= 0) & (wide["accuracy"] <= 1)).all()
    np.testing.assert_allclose(wide["selectivity"], wide["accuracy"] - wide["control_accuracy"], atol=1e-9)
    assert (tmp_path / "interp" / "probe_number.png").is_file()
    assert main(["probe", str(tmp_path), "--factor", "number", "--folds", "4", "--permutations", "10"]) == 0
    assert "best site" in capsys.readouterr().out
    with pytest.raises(PsylingError, match="no set of this run declares the factor 'voice'"):
        probe_run(tmp_path, "voice")
    plain = tmp_path / "plain"
    psyling.run(bpe_llama, AGREEMENT[:1], out=plain, progress=False, max_items=2)
    with pytest.raises(PsylingError, match="no activations in this run"):
        probe_run(plain, "number")


def test_lens_command_writes_tables_and_plots(tmp_path, tiny_model_dir, capsys):
    code = main(["lens", "--model", str(tiny_model_dir), "--stimuli", str(AGREEMENT[0]), "--out", str(tmp_path),
                 "--max-items", "4", "--quiet"])
    assert code == 0
    out = capsys.readouterr().out
    assert "agreement_simple: 0:" in out and "2:" in out
    lens = pd.read_parquet(tmp_path / "lens_predictions.parquet")
    assert sorted(lens["layer"].unique()) == [0, 1, 2]
    assert (tmp_path / "interp" / "lens_agreement_simple.png").is_file()


def test_encode_the_ucl_n400_per_layer(tmp_path, tiny_model_dir, data):
    table = encode_corpus(str(tiny_model_dir), target="ERP-N400", out=tmp_path, data_root=data, folds=5,
                          n_permutations=10, progress=False)
    assert list(table["site"]) == ["resid.0", "resid.1", "resid.2"] and set(table["target"]) == {"ERP-N400"}
    assert (table["n"] > 1000).all() and (table["n_groups"] == 205).all()
    np.testing.assert_allclose(table["delta_r2"], table["r2"] - table["r2_baseline"], atol=1e-12)
    assert (tmp_path / "interp" / "encode_ERP-N400.png").is_file()
    assert pd.read_parquet(tmp_path / "interp" / "encode_ERP-N400.parquet")["delta_r2"].tolist() == pytest.approx(
        table["delta_r2"].tolist())
    with pytest.raises(PsylingError, match="unknown encoding target 'N400' \\(choose from SPR, eye-tracking, ERP-N400"):
        encode_corpus(str(tiny_model_dir), target="N400", out=tmp_path / "x", data_root=data)


def test_probe_one_region_of_region_pooled_activations(tmp_path, bpe_llama):
    psyling.run(bpe_llama, AGREEMENT, out=tmp_path, progress=False, max_items=8, activations=CaptureSpec(),
                pool="region", pool_method="last")
    table = probe_run(tmp_path, "number", region="verb", folds=4, n_permutations=10, plots=False)
    # both sets have a "verb" region: 2 sets x 8 items x 4 conditions rows
    assert set(table["n"]) == {64} and (tmp_path / "interp" / "probe_number_verb.parquet").is_file()
    with pytest.raises(PsylingError, match="and has a region 'adverb'"):
        probe_run(tmp_path, "number", region="adverb")
