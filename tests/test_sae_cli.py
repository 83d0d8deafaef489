"""The SAE command contracts on a tiny model: ``sae train`` writes the SAELens layout, ``sae eval`` metrics.json."""
import json

import pandas as pd
import pytest
from safetensors.torch import load_file

from psyling.cli import main
from psyling.errors import PsylingError
from psyling.interp.sae_files import load_sae
from psyling.models.loading import load_model
from psyling.models.options import ScoringOptions
from psyling.models.scorer import set_requests
from psyling.models.scoring import CausalScorer
from psyling.stimuli.io import load_set
from test_circuits_cli import write_agreement_set


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    folder = tmp_path_factory.mktemp("sae")
    stim = write_agreement_set(folder)
    out = folder / "sae"
    code = main(["sae", "train", "--stimuli", str(stim), "--site", "resid.1", "--out", str(out),
                 "--model", str(tiny_model_dir), "--k", "4", "--latents", "96", "--train-batch", "32", "--quiet"])
    return code, out, stim


def test_train_contract(trained, tiny_model_dir):
    code, out, _ = trained
    assert code == 0
    assert {p.name for p in out.iterdir()} >= {"cfg.json", "sae_weights.safetensors", "manifest.json",
                                               "history.parquet", "activations"}
    d_model = json.loads((tiny_model_dir / "config.json").read_text())["hidden_size"]
    weights = load_file(str(out / "sae_weights.safetensors"))
    assert weights["W_enc"].shape == (d_model, 96) and weights["W_dec"].shape == (96, d_model)
    cfg = json.loads((out / "cfg.json").read_text())
    assert cfg["d_sae"] == 96 and cfg["hook_name"] == "blocks.0.hook_resid_post"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["harvest"]["n_tokens"] == manifest["training"]["n_tokens"] > 0
    history = pd.read_parquet(out / "history.parquet")
    assert history["tokens"].iloc[-1] == manifest["training"]["n_tokens"]
    sae = load_sae(out)
    assert sae.config.site == "resid.1" and sae.config.k == 4


def test_eval_contract(trained, tiny_model_dir, tmp_path):
    _, sae_dir, stim = trained
    out = tmp_path / "eval"
    assert main(["sae", "eval", str(sae_dir), "--stimuli", str(stim), "--out", str(out),
                 "--model", str(tiny_model_dir), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for name in ("l0", "fvu", "explained_variance", "dead_fraction", "ce_recovered", "kl_recovered", "n_tokens"):
        assert name in metrics
    assert 0 < metrics["l0"] <= 4 and metrics["explained_variance"] == pytest.approx(1 - metrics["fvu"])
    lm = load_model(str(tiny_model_dir))
    scorer = CausalScorer(lm, ScoringOptions(), progress=False)
    expected = sum(len(scorer.encode(r).ids) for r in set_requests(load_set(stim)))  # repeats included
    assert metrics["n_tokens"] == metrics["n_predicted"] == expected
    table = pd.read_parquet(out / "preservation.parquet")
    assert table["set"].tolist() == ["agr"] and table["n_items"].iloc[0] == 5
    assert (out / "l0_fvu.png").read_bytes()[:4] == b"\x89PNG"


def test_errors_are_one_line(tmp_path, tiny_model_dir, capsys):
    assert main(["sae", "train", "--site", "resid.1", "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "give stimulus paths" in capsys.readouterr().err
    assert main(["sae", "eval", str(tmp_path / "none"), "--stimuli", "x", "--out", str(tmp_path / "e")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_features_contract(trained, tiny_model_dir, tmp_path):
    _, sae_dir, stim = trained
    out = tmp_path / "features"
    assert main(["sae", "features", str(sae_dir), "--stimuli", str(stim), "--out", str(out),
                 "--model", str(tiny_model_dir), "--per-factor", "2", "--contexts", "3"]) == 0
    contrast = pd.read_parquet(out / "contrast.parquet")
    assert set(contrast["factor"]) == {"number", "agreement"} and contrast["n_items"].max() == 5
    top = pd.read_parquet(out / "top_contexts.parquet")
    assert set(top["source"]) == {"stimuli", "training text"}
    assert top[top["source"] == "training text"]["context"].str.contains("«").all()
    assert top.groupby(["source", "latent"]).size().max() <= 3
    probes = pd.read_parquet(out / "sparse_probes.parquet")
    assert set(probes["probe"]) == {"dense", "sparse", "majority"}
    ablation = pd.read_parquet(out / "feature_ablation.parquet")
    manifest = json.loads((out / "manifest.json").read_text())
    chosen = manifest["chosen"]["agr"]
    assert set(ablation["latents"]) >= {",".join(map(str, chosen["agreement"][:1]))}
    assert list(out.glob("sae_top_latents_*.png"))


def test_compared_region(trained):
    from psyling.sae_contrasts import FeatureSettings, compared_region, critical_region
    stim = load_set(trained[2])
    assert critical_region(stim) == "verb"
    assert compared_region(stim, "critical") == 1 and compared_region(stim, "before") == 0
    with pytest.raises(PsylingError, match="unknown region"):
        FeatureSettings(region="after")

