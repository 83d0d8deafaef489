"""The command-line contract of ``psyling patch`` and ``psyling steer`` on a tiny saved model and a small invented
2x2 agreement set: the files, the columns, one row per item x site x region x direction, the exact identities
(patching every position restores the other run), excluded items with their reason, and sets without a design."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from psyling.cli import main

# subject nouns of the two "numbers": the same token count in both (with the tiny tokenizer), so that region all
# patches every position
NOUNS = [("bird", "birds"), ("key", "cat"), ("dog", "cat"), ("table", "chef"), ("cabinet", "dog")]


def write_agreement_set(folder, nouns=NOUNS):
    """An invented subject-verb agreement set (2x2: number x agreement) in psyling's YAML + CSV format."""
    rows = ["item,condition,subject,verb,rest"]
    for i, (sg, pl) in enumerate(nouns, 1):
        for cond, subject, verb in (("sg_match", sg, "is"), ("sg_mismatch", sg, "are"),
                                    ("pl_match", pl, "are"), ("pl_mismatch", pl, "is")):
            rows.append(f"{i},{cond},The {subject},{verb},on the table.")
    (folder / "agr.csv").write_text("\n".join(rows) + "\n")
    (folder / "agr.yaml").write_text(
        "schema_version: 1\nname: agr\nversion: '1'\ndescription: invented\nphenomenon: agreement\nlanguage: en\n"
        "license: CC0\ncitation: none\nitems: agr.csv\nregions: [subject, verb, rest]\n"
        "conditions: [sg_match, sg_mismatch, pl_match, pl_mismatch]\n"
        "factors:\n  number: [sg, sg, pl, pl]\n  agreement: [match, mismatch, match, mismatch]\n"
        "predictions:\n  - \"[(verb;%sg_mismatch%) > (verb;%sg_match%)] & [(verb;%pl_mismatch%) > (verb;%pl_match%)]\"\n")
    return folder / "agr.yaml"


def test_patch_cli_contract(tmp_path, tiny_model_dir):
    stim = write_agreement_set(tmp_path)
    out = tmp_path / "out"
    assert main(["patch", "--stimuli", str(stim), "--out", str(out), "--model", str(tiny_model_dir),
                 "--threshold", "0", "--quiet", "--no-plots"]) == 0
    rows = pd.read_parquet(out / "patching.parquet")
    for column in ("set", "item", "site", "layer", "region", "direction", "m_clean", "m_corrupt", "m_patched",
                   "effect", "note"):
        assert column in rows.columns
    assert set(rows["direction"]) == {"denoise", "noise"}
    assert set(rows["region"]) == {"subject", "verb", "rest", "all"}
    assert set(rows["site"]) == {"resid.0", "resid.1", "resid.2"}
    assert len(rows) == len(NOUNS) * 3 * 4 * 2  # items x sites x regions x directions
    assert not rows.duplicated(["item", "site", "region", "direction"]).any()
    everything = rows[rows["region"] == "all"]
    np.testing.assert_allclose(everything["effect"], 1.0, atol=1e-6)  # every position: the other run exactly
    after = rows[rows["region"] == "rest"]
    assert (after["effect"] == 0).all() and not after["computed"].any()
    assert after["note"].str.contains("after the critical region").all()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "patching" and manifest["sets"]["agr"]["pairs"][0]["clean"] == "sg_match"
    summary = pd.read_parquet(out / "patching_summary.parquet")
    assert len(summary) == 3 * 4 * 2 and (summary["n_items"] == len(NOUNS)).all()
    alignment = pd.read_parquet(out / "alignment.parquet")
    assert set(alignment["region"]) == {"<context>", "subject", "verb"}
    assert list(out.glob("*.png")) == []  # --no-plots


def test_patch_cli_excludes_small_contrasts_with_a_reason(tmp_path, tiny_model_dir):
    stim = write_agreement_set(tmp_path)
    out = tmp_path / "out"
    assert main(["patch", "--stimuli", str(stim), "--out", str(out), "--model", str(tiny_model_dir),
                 "--threshold", "1e6", "--quiet", "--layers", "1", "--regions", "subject"]) == 0
    rows = pd.read_parquet(out / "patching.parquet")
    assert rows["effect"].isna().all() and rows["m_patched"].notna().all()
    assert rows["note"].str.startswith("excluded: |M_clean - M_corrupt|").all()
    summary = pd.read_parquet(out / "patching_summary.parquet")
    assert (summary["n_excluded"] == len(NOUNS)).all() and summary["effect"].isna().all()
    assert sorted(p.name for p in out.glob("*.png")) == ["patching_agr_resid_denoise.png",
                                                         "patching_agr_resid_noise.png"]  # NaN cells drawn grey


def test_patch_cli_refuses_sets_without_a_design(tmp_path, tiny_model_dir, capsys):
    stim = write_agreement_set(tmp_path)
    text = stim.read_text().replace("factors:\n  number: [sg, sg, pl, pl]\n  agreement: [match, mismatch, match, "
                                    "mismatch]\n", "")
    stim.write_text(text)
    code = main(["patch", "--stimuli", str(stim), "--out", str(tmp_path / "out"), "--model", str(tiny_model_dir),
                 "--quiet"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("psyling:")]
    assert code == 2 and len(lines) == 1 and "cannot derive a patching design" in lines[0]
    assert "Loading weights" not in err and "Traceback" not in err  # refused before the model is loaded
    assert not (tmp_path / "out").exists()


def test_steer_cli_writes_rows_and_summary(tmp_path, tiny_model_dir):
    stim = write_agreement_set(tmp_path)
    out = tmp_path / "out"
    assert main(["steer", "--stimuli", str(stim), "--out", str(out), "--model", str(tiny_model_dir),
                 "--folds", "2", "--quiet", "--bootstrap", "50"]) == 0
    rows = pd.read_parquet(out / "causal_probes.parquet")
    summary = pd.read_parquet(out / "causal_probes_summary.parquet")
    assert set(summary["layer"]) == {0, 1, 2} and set(summary["direction_kind"]) == {"mean-diff", "probe"}
    assert len(rows) == len(NOUNS) * 3 * 2
    flips = rows.groupby(["layer", "direction_kind"])["flipped"].mean()
    merged = summary.set_index(["layer", "direction_kind"])["iia"]
    np.testing.assert_allclose(merged.sort_index(), flips.sort_index())


def test_mediate_cli_effects_follow_from_its_patches(tmp_path, tiny_model_dir):
    stim = write_agreement_set(tmp_path)
    out = tmp_path / "out"
    assert main(["mediate", "--stimuli", str(stim), "--out", str(out), "--model", str(tiny_model_dir), "--kinds",
                 "mlp,head", "--top-k", "3", "--threshold", "0", "--bootstrap", "50", "--quiet"]) == 0
    effects = pd.read_parquet(out / "mediation_effects.parquet")
    patches = pd.read_parquet(out / "patching.parquet")
    assert set(patches["region"]) == {"subject"}  # the region where the two contexts differ
    noised = patches[(patches["site"] == "mlp.1") & (patches["direction"] == "noise")]
    nie = (2.0 ** (noised["m_clean"] - noised["m_patched"]) - 1).mean()  # Finlayson's y = 2^-M
    np.testing.assert_allclose(effects.set_index("site").loc["mlp.1", "nie"], nie, rtol=1e-9)
    top = pd.read_parquet(out / "mediation_top.parquet")
    heads = top[top["component"] == "head"]
    assert list(heads["rank"]) == [1, 2, 3] and heads["nie"].is_monotonic_decreasing


def test_ablate_cli_reports_change_against_random_units(tmp_path, tiny_model_dir):
    stim = write_agreement_set(tmp_path)
    out = tmp_path / "out"
    assert main(["ablate", "--stimuli", str(stim), "--out", str(out), "--model", str(tiny_model_dir), "--units",
                 "head.1.0,head.2.1", "--methods", "zero", "--random", "2", "--faithfulness", "--bootstrap", "50",
                 "--quiet"]) == 0
    ablation = pd.read_parquet(out / "ablation.parquet")
    assert list(ablation["units"]) == ["top", "random-0", "random-1", "random"]
    np.testing.assert_allclose(ablation["change"].iloc[:3], ablation["accuracy"].iloc[:3] - ablation["baseline"].iloc[:3])
    faithful = pd.read_parquet(out / "faithfulness.parquet")
    assert faithful["circuit"].iloc[0] == "circuit" and faithful["k"].iloc[0] == 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["ablation"]["units"] == ["head.1.0", "head.2.1"]
