"""End to end on a tiny model: the run-directory contract, predictions, summary and the CLI."""
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import psyling
import psyling.api
from psyling.cli import build_parser, main
from psyling.config import RunConfig
from psyling.errors import PsylingError
from psyling.models import CaptureSpec, ModelSpec, ScoringOptions
from psyling.stats import wilson_interval

from test_malformed import manifest, write

CONTRACT = {
    "tokens": ["set", "item", "condition", "token_index", "token_id", "token", "char_start", "char_end",
               "word_index", "region", "crosses_region", "logprob", "surprisal"],
    "words": ["set", "item", "condition", "word_index", "word", "region", "surprisal", "surprisal_raw", "n_tokens"],
    "regions": ["set", "item", "condition", "region_number", "region", "text", "surprisal", "surprisal_raw",
                "n_tokens"],
}


@pytest.fixture(scope="module")
def core_run(bpe_llama, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    return psyling.run(bpe_llama, battery="core", out=out, batch_size=16, progress=False), out


def test_run_directory_contract(core_run):
    result, out = core_run
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "predictions.parquet", "regions.parquet",
                                                     "summary.csv", "tokens.parquet", "words.parquet"]
    for name, columns in CONTRACT.items():
        table = pd.read_parquet(out / f"{name}.parquet")
        assert list(table.columns) == columns
        assert len(table) == len(getattr(result, name))
    predictions = pd.read_parquet(out / "predictions.parquet")
    assert {"set", "item", "prediction", "passed"} <= set(predictions.columns)
    assert list(pd.read_csv(out / "summary.csv").columns) == ["set", "n_items", "accuracy", "ci_low", "ci_high",
                                                          "n_unevaluable"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["units"] == {"surprisal": "bits", "logprob": "nats"}
    assert manifest["tokenizer"]["context_token"]["token"] == "<bos>"
    assert manifest["settings"]["word_correction"] == "pimentel-meister-2024"
    check = manifest["invariance_check"]
    assert check["max_abs_diff_bits"] <= 1e-4 and check["passed"]
    tokens = pd.read_parquet(out / "tokens.parquet")  # the worst token is one of the run's own tokens
    assert check["max_abs_diff_bits"] == 0 or np.isclose(tokens.logprob, check["at_token_logprob_nats"],
                                                         atol=1e-4, rtol=0).any()
    assert all(len(sha) == 64 for sha in manifest["stimuli"]["files"].values())
    assert len(manifest["stimuli"]["files"]) == 2 * len(manifest["stimuli"]["sets"])  # manifest + items file


def test_tables_are_consistent(core_run):
    result, _ = core_run
    assert np.allclose(result.tokens.surprisal, -result.tokens.logprob / math.log(2))
    key = ["set", "item", "condition"]
    token_sums = result.tokens.groupby(key).surprisal.sum()
    word_raw = result.words.groupby(key).surprisal_raw.sum()
    assert np.allclose(token_sums.sort_index(), word_raw.sort_index())
    by_region = result.words.groupby(key + ["region"])[["surprisal", "surprisal_raw", "n_tokens"]].sum()
    regions = result.regions.set_index(key + ["region"])
    nonempty = regions[regions.text != ""]
    assert np.allclose(by_region.loc[nonempty.index].surprisal, nonempty.surprisal)
    assert (regions[regions.text == ""][["surprisal", "n_tokens"]] == 0).all().all()  # empty regions
    texts = result.regions[result.regions.text != ""].groupby(key).text.agg(" ".join)
    words = result.words.groupby(key).word.agg(" ".join)
    assert (texts.sort_index() == words.sort_index()).all()


def test_predictions_and_summary_follow_region_surprisal(core_run):
    result, _ = core_run
    regions = result.regions.set_index(["set", "item", "condition", "region"]).surprisal
    rows = result.predictions[(result.predictions.set == "agreement_simple")]
    for row in rows.itertuples():
        cell = lambda c: regions[("agreement_simple", row.item, c, "verb")]  # noqa: E731
        expected = cell("sg_mismatch") > cell("sg_match") and cell("pl_mismatch") > cell("pl_match")
        assert row.passed == expected
    summary = result.summary.set_index("set")
    per_item = result.predictions.groupby(["set", "item"]).passed.all().groupby("set")
    for name, passed in per_item:
        assert summary.loc[name, "n_items"] == len(passed)
        assert summary.loc[name, "accuracy"] == pytest.approx(passed.mean())
        assert (summary.loc[name, "ci_low"], summary.loc[name, "ci_high"]) == \
            pytest.approx(wilson_interval(int(passed.sum()), len(passed)))


def test_wilson_interval_textbook_values():
    # Newcombe (1998), Table I: 81/263 -> 0.2553 to 0.3662; 15/148 -> 0.0624 to 0.1605
    assert wilson_interval(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert wilson_interval(15, 148) == pytest.approx((0.0624, 0.1605), abs=1e-4)


def test_one_bad_file_loses_nothing_else(bpe_llama, tmp_path):
    manifest(tmp_path, name="good")
    write(tmp_path, "bad.jsonl", "{not json}\n")
    result = psyling.run(bpe_llama, [tmp_path], out=tmp_path / "out", progress=False)
    assert list(result.summary.set) == ["good"] and result.summary.n_items[0] == 2
    assert len(result.errors) == 1 and "bad.jsonl" in result.errors[0]
    manifest_json = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest_json["stimuli"]["errors"] == result.errors


def test_cli_run_on_a_model_folder(tiny_model_dir, tmp_path, capsys):
    folder = tiny_model_dir
    stim = manifest(tmp_path, name="pairs")
    code = main(["run", "--model", str(folder), "--stimuli", str(stim), "--out", str(tmp_path / "out"),
                 "--batch-size", "3", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    assert "pairs" in out and "95% CI" in out
    manifest_json = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest_json["model"]["source"] == "folder" and len(manifest_json["model"]["sha256"]) == 64
    assert manifest_json["settings"]["batch_size"] == 3
    words = pd.read_parquet(tmp_path / "out" / "words.parquet")
    assert list(words[(words["item"] == "1") & (words.condition == "match")].word) == ["The", "cat", "sleeps",
                                                                                       "all", "day."]


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["run", "--model", str(tmp_path / "missing.gguf"), "--stimuli", str(manifest(tmp_path)),
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "missing.gguf not found" in err
    assert main(["run", "--battery", "nosuch", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "unknown battery 'nosuch' (known: " in err and "core" in err


def _recording_run(seen):
    def fake_run(config, **kwargs):
        seen.update(config=config, **kwargs)
        raise PsylingError("recorded")
    return fake_run


def test_cli_builds_one_run_config_from_its_option_groups(monkeypatch, tmp_path, capsys):
    seen = {}
    monkeypatch.setattr(psyling.api, "run", _recording_run(seen))
    code = main(["run", "--model", "m", "--dtype", "bfloat16", "--revision", "r", "--device", "cuda",
                 "--trust-remote-code", "--batch-size", "4", "--max-tokens", "99", "--context-token", "7",
                 "--padding-side", "left", "--prefix-reuse", "off", "--convention", "minicons", "--masked-variant",
                 "l2r", "--stimuli", "a.yaml", "b", "--max-items", "3", "--detokenize", "--measure", "surprisal_raw",
                 "--resume", "--no-cache", "--activations", "resid,mlp", "--layers", "0,2", "--pool", "region",
                 "--pool-method", "last", "--activation-dtype", "float16", "--lens", "--out", str(tmp_path / "o"),
                 "--replace", "--quiet"])
    assert code == 2 and "recorded" in capsys.readouterr().err
    assert seen["config"] == RunConfig(
        ModelSpec("m", "r", "bfloat16", "cuda", True),
        ScoringOptions(7, 4, 99, "left", False, "minicons", "l2r", CaptureSpec(("resid", "mlp"), (0, 2), "float16"),
                       (0, 2)),
        ("a.yaml", "b"), None, 3, True, "surprisal_raw", "region", "last", cache=False, resume=True)
    assert (seen["out"], seen["replace"], seen["progress"]) == (tmp_path / "o", True, False)
    seen.clear()
    assert main(["lens", "--battery", "core", "--dtype", "float16", "--batch-size", "2", "--out", "x"]) == 2
    assert seen["config"] == RunConfig(ModelSpec(dtype="float16"), ScoringOptions(batch_size=2, lens_layers="all"),
                                       battery="core")
    assert (seen["replace"], seen["progress"]) == (False, True)


def test_encode_takes_a_target_and_reproduce_is_a_command(monkeypatch, tmp_path, capsys):
    import psyling.layerwise

    calls = []
    table = pd.DataFrame({"site": ["resid.1"], "r2": [0.2], "r2_baseline": [0.1], "delta_r2": [0.1],
                          "p_value": [0.01], "q_value": [0.01]})
    monkeypatch.setattr(psyling.layerwise, "encode_corpus", lambda model, **kw: calls.append((model, kw)) or table)
    assert main(["encode", "--target", "SPR", "--dtype", "bfloat16", "--layers", "1", "--out", str(tmp_path)]) == 0
    (model, kwargs), = calls
    assert model == ModelSpec(dtype="bfloat16") and kwargs["target"] == "SPR" and kwargs["layers"] == (1,)
    assert "best site for SPR: resid.1" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        build_parser().parse_args(["encode", "--measure", "N400", "--out", "x"])
    assert build_parser().parse_args(["encode", "--out", "x"]).target == "ERP-N400"
    args = build_parser().parse_args(["reproduce", "all", "--long", "--data-root", "d"])
    assert (args.names, args.long, args.data_root) == (["all"], True, Path("d"))
    assert build_parser().parse_args(["reproduce"]).names == ["list"]
