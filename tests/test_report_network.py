"""The report's "Inside the network" view (psyling/report/network.py) on tiny models: the plotted values are the
tables' values, figures per set, escaping, static PNGs, and one-line errors for folders that are not experiments."""
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import psyling
from psyling.cli import main
from psyling.config import RunConfig
from psyling.errors import PsylingError
from psyling.interp.encoding import encode_layers
from psyling.interp.lens import lens_accuracy
from psyling.interp.sae_effects import SAEEffectConfig
from psyling.layerwise import probe_run
from psyling.models import CaptureSpec
from psyling.report.interp_plots import prediction_chance
from psyling.report.network import experiment_kind, network_section, read_experiments, split_folders
from psyling.report.report_data import read_report_runs
from psyling.sae_contrasts import FeatureSettings, features_experiment
from test_circuits_cli import write_agreement_set

REPO = Path(__file__).resolve().parents[1]
AGREEMENT = REPO / "stimuli" / "sets" / "agreement_simple.yaml"
FIGURE = re.compile(r'<script type="application/json" id="([a-z0-9-]+)-json">(.*?)</script>', re.S)


def figures(html):
    return {ident: json.loads(body) for ident, body in FIGURE.findall(html)}


def attribute(html, ident, name):
    return re.search(rf'<div class="plot" id="{ident}"[^>]*? data-{name}="([^"]*)"', html).group(1)


@pytest.fixture(scope="module")
def scored(tmp_path_factory, bpe_llama):
    """A run with activations and the logit lens, a probe table and an encoding table of random targets."""
    out = tmp_path_factory.mktemp("network") / "run"
    psyling.run(bpe_llama, [AGREEMENT], out=out, progress=False, max_items=8, activations=CaptureSpec(),
                lens_layers="all")
    probe_run(out, "number", folds=3, n_permutations=0, plots=False)
    rng = np.random.default_rng(0)
    features = {f"resid.{k}": rng.normal(size=(60, 8)) for k in range(3)}
    target = features["resid.1"][:, 0] + rng.normal(size=60)
    table = encode_layers(features, target, np.arange(60) // 3, rng.normal(size=(60, 1)), folds=4, n_permutations=5)
    table.to_parquet(out / "interp" / "encode_SPR.parquet", index=False)
    return out


@pytest.fixture(scope="module")
def patched(tmp_path_factory, tiny_model_dir):
    folder = tmp_path_factory.mktemp("patch")
    stim = write_agreement_set(folder)
    out = folder / "out"
    assert main(["patch", "--stimuli", str(stim), "--out", str(out), "--model", str(tiny_model_dir),
                 "--threshold", "0", "--quiet", "--no-plots"]) == 0
    return out


@pytest.fixture(scope="module")
def sae_folders(tmp_path_factory, tiny_model_dir):
    folder = tmp_path_factory.mktemp("sae")
    stim = write_agreement_set(folder)
    sae, features = folder / "sae", folder / "features"
    assert main(["sae", "train", "--stimuli", str(stim), "--site", "resid.1", "--out", str(sae), "--model",
                 str(tiny_model_dir), "--k", "4", "--latents", "96", "--train-batch", "32", "--quiet"]) == 0
    cheap = FeatureSettings(n_latents=1, n_contexts=1, ks=(1,), effects=SAEEffectConfig(n_boot=20, n_random=1),
                            training_text=False)
    features_experiment(RunConfig.build(str(tiny_model_dir), stimuli=(str(stim),)), sae, features, cheap,
                        progress=False)
    return [sae, features]


@pytest.fixture(scope="module")
def section(scored, patched, sae_folders):
    runs = read_report_runs([scored])
    return network_section(runs, read_experiments([patched, *sae_folders]), static=False)


def test_probe_traces_are_the_probe_table(scored, section):
    table = pd.read_parquet(scored / "interp" / "probe_number.parquet")
    figure = figures(section)["probe-0"]
    assert {t["meta"]["metric"] for t in figure["data"]} == {"accuracy", "control_accuracy", "selectivity"}
    for trace in figure["data"]:
        rows = table[table["metric"] == trace["meta"]["metric"]].sort_values("layer")
        assert trace["x"] == rows["layer"].tolist()
        assert trace["y"] == pytest.approx(rows["value"].tolist(), abs=1e-9)
    majority = table.loc[table["metric"] == "majority", "value"].mean()
    assert figure["layout"]["shapes"][0]["y0"] == pytest.approx(majority, abs=1e-9)


def test_lens_traces_are_the_lens_accuracy_with_the_chance_line(scored, section):
    predictions = pd.read_parquet(scored / "lens_predictions.parquet")
    accuracy = lens_accuracy(predictions)
    figure = figures(section)["lens-0"]
    assert attribute(section, "lens-0", "set") == "agreement_simple"
    (trace,) = figure["data"]
    assert trace["x"] == [0, 1, 2]
    assert trace["y"] == pytest.approx(accuracy.sort_values("layer")["accuracy"].tolist(), abs=1e-9)
    chance = prediction_chance(list(predictions["prediction"].unique()))
    assert figure["layout"]["shapes"][0]["y0"] == pytest.approx(chance)


def test_encoding_traces_are_the_delta_r2(scored, section):
    table = pd.read_parquet(scored / "interp" / "encode_SPR.parquet")
    (trace,) = figures(section)["encode-0"]["data"]
    assert trace["y"] == pytest.approx(table.sort_values("layer")["delta_r2"].tolist(), abs=1e-9)


def test_patching_heatmaps_are_the_summary(patched, section):
    summary = pd.read_parquet(patched / "patching_summary.parquet")
    found = {ident: f for ident, f in figures(section).items() if ident.startswith("patching-")}
    assert {(f["data"][0]["meta"]["set"], f["data"][0]["meta"]["direction"]) for f in found.values()} == \
        {("agr", "denoise"), ("agr", "noise")}
    for figure in found.values():
        (trace,) = figure["data"]
        assert trace["type"] == "heatmap" and trace["x"] == ["subject", "verb", "rest", "all"]
        rows = summary[(summary["direction"] == trace["meta"]["direction"]) & (summary["kind"] == "resid")]
        for layer, values in zip(trace["y"], trace["z"]):
            for region, value in zip(trace["x"], values):
                expected = rows[(rows["layer"] == int(layer)) & (rows["region"] == region)]["effect"].item()
                assert value == pytest.approx(expected, abs=1e-9)


def test_sae_top_latents_and_l0_fvu(sae_folders, section):
    contrast = pd.read_parquet(sae_folders[1] / "contrast.parquet")
    history = pd.read_parquet(sae_folders[0] / "history.parquet")
    bars = figures(section)["sae-0"]
    assert attribute(section, "sae-0", "set") == "agr"
    for trace in bars["data"]:
        meta = trace["meta"]
        rows = contrast[(contrast["factor"] == meta["factor"]) & (contrast["level_a"] == meta["level_a"])
                        & (contrast["level_b"] == meta["level_b"])]
        d_z = dict(zip(rows["latent"], rows["d_z"]))
        latents = [int(x.split(": ")[1]) for x in trace["x"]]
        assert len(latents) == min(10, len(rows)) and trace["y"] == pytest.approx([d_z[k] for k in latents])
        assert min(abs(v) for v in trace["y"]) >= 0
    (point,) = figures(section)["sae-l0-fvu"]["data"]
    assert point["x"] == pytest.approx([history["l0"].iloc[-1]]) and point["y"] == pytest.approx(
        [history["fvu"].iloc[-1]])


def test_section_is_escaped_deterministic_and_empty_without_outputs(scored, patched, sae_folders, section,
                                                                    tmp_path, bpe_llama):
    again = network_section(read_report_runs([scored]), read_experiments([patched, *sae_folders]), static=False)
    assert again == section and section.startswith('<section id="network"><h2>Inside the network</h2>')
    experiments = read_experiments([patched])
    experiments[0].label = "<b>bold</b>"
    marked = network_section([], experiments, static=False)
    assert "&lt;b&gt;bold&lt;/b&gt;" in marked and "<b>bold" not in marked
    plain = tmp_path / "plain"
    psyling.run(bpe_llama, [AGREEMENT], out=plain, progress=False, max_items=2)
    assert network_section(read_report_runs([plain]), [], static=False) == ""
    assert experiment_kind(plain) is None and experiment_kind(patched) == "patching"
    assert split_folders([plain, patched]) == ([plain], [patched])


def test_static_section_embeds_pngs(scored, patched, sae_folders):
    html = network_section(read_report_runs([scored]), read_experiments([patched, *sae_folders]), static=True)
    assert 'class="plot"' not in html
    # probe, lens, encoding, two patching heatmaps, the top latents and the L0 / FVU scatter
    assert html.count('src="data:image/png;base64,') == 7


def test_folders_that_are_not_experiments_are_one_line_errors(scored, tmp_path):
    with pytest.raises(PsylingError, match="a scoring run, not an experiment folder") as caught:
        read_experiments([scored])
    assert "\n" not in str(caught.value)
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "manifest.json").write_text(json.dumps({"kind": "<b>weird</b>"}))
    with pytest.raises(PsylingError, match="unknown kind") as caught:
        split_folders([odd])
    assert "\n" not in str(caught.value) and str(odd) in str(caught.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PsylingError, match="not a complete psyling run directory \\(missing manifest.json\\)"):
        read_experiments([empty])


DRAWN = """Array.from(document.querySelectorAll('div.plot')).map(d => ({id: d.id, n: (d.data || []).length,
    svg: !!d.querySelector('.main-svg')}))"""


def test_the_section_draws_in_a_real_browser(section, tmp_path):
    """Headless Chromium, network blocked: every figure of the section is drawn with all its traces, no error."""
    from browser import BROWSER_MISSING, open_page

    from psyling.report.html import DRAW_JS, plotly_bundle

    if BROWSER_MISSING:
        pytest.skip(BROWSER_MISSING)
    path = tmp_path / "network.html"
    path.write_text(f'<!DOCTYPE html><html><head><meta charset="utf-8"><script>{plotly_bundle()}</script></head>'
                    f"<body>{section}<script>{DRAW_JS}</script></body></html>", encoding="utf-8")
    with open_page(path, ready_js="Array.from(document.querySelectorAll('div.plot')).every(d => d.data)") as page:
        assert page.console_errors == [] and page.page_errors == [] and page.external_urls == []
        drawn = page.evaluate(DRAWN)
    embedded = figures(section)
    assert sorted(d["id"] for d in drawn) == sorted(embedded)
    assert all(d["svg"] and d["n"] == len(embedded[d["id"]]["data"]) for d in drawn)


def test_mediation_nie_per_layer_and_ablation_table(tmp_path, tiny_model_dir):
    stim = write_agreement_set(tmp_path)
    mediated, ablated = tmp_path / "mediate", tmp_path / "ablate"
    assert main(["mediate", "--stimuli", str(stim), "--out", str(mediated), "--model", str(tiny_model_dir),
                 "--kinds", "attn,mlp", "--threshold", "0", "--bootstrap", "20", "--quiet"]) == 0
    assert main(["ablate", "--stimuli", str(stim), "--out", str(ablated), "--model", str(tiny_model_dir), "--units",
                 "head.1.0", "--methods", "zero", "--random", "1", "--bootstrap", "20", "--quiet"]) == 0
    html = network_section([], read_experiments([mediated, ablated]), static=False)
    effects = pd.read_parquet(mediated / "mediation_effects.parquet")
    traces = figures(html)["mediation-0"]["data"]
    assert {t["meta"]["kind"] for t in traces} == {"attn", "mlp"}
    for trace in traces:
        rows = effects[(effects["component"] == "layer") & (effects["kind"] == trace["meta"]["kind"])]
        assert trace["y"] == pytest.approx(rows.sort_values("layer")["nie"].tolist(), abs=1e-9)
    ablation = pd.read_parquet(ablated / "ablation.parquet")
    assert 'download="ablation.csv"' in html and html.count("<tr>") >= len(ablation) + 1


def test_report_command_takes_runs_and_experiment_folders(scored, patched, sae_folders, tmp_path):
    out = tmp_path / "report.html"
    assert main(["report", str(scored), str(patched), *map(str, sae_folders), "--out", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert '<section id="network">' in page and '<a href="#network">Inside the network</a>' in page
    for ident in ("probe-0", "lens-0", "encode-0", "patching-0", "sae-0", "sae-l0-fvu"):
        assert f'id="{ident}-json"' in page
    repro = page[page.index('<section id="reproducibility">'):]
    assert "(patching)</h3>" in repro and "(sae-features)</h3>" in repro  # each experiment's manifest
    assert page.count('class="set"') == 1  # the experiments add no set sections of their own


def test_long_tables_fold_under_their_chart(scored, patched, section):
    from psyling.report.network import FOLD_ROWS

    probe = pd.read_parquet(scored / "interp" / "probe_number.parquet")
    summary = pd.read_parquet(patched / "patching_summary.parquet")
    assert len(probe) <= FOLD_ROWS < len(summary)
    assert f"the table ({len(probe)} rows)" not in section  # short: shown open
    assert f"<details><summary>the table ({len(summary)} rows)</summary>" in section
