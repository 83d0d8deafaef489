"""The report's "Inside the network" view: per-layer probes, the logit lens and encoding from the runs'
``interp`` outputs, and the experiment folders' patching heatmaps, mediation, causal probes, ablation and SAE
results, as plotly figures (``static``: the PNGs of ``interp_plots``, ``circuit_plots`` and ``sae_plots``)."""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import pandas as pd

from ..errors import PsylingError
from ..interp.lens import lens_accuracy
from ..runs import check_run, read_manifest
from .circuit_plots import COLOURBAR, value_grid, unit_rows, region_columns, layer_region_heatmap
from .html_parts import COLOURS, DASHES, PLOT_CONFIG, figure_div, figure_img, finite, html_table, png_img, text
from .interp_plots import layer_curve, prediction_chance
from .report_data import ReportRun
from .sae_plots import ALPHA, top_rows, l0_fvu_figure, top_latents_figure

EXPERIMENT_KINDS = ("patching", "mediation", "causal_probes", "ablation", "sae", "sae-eval", "sae-features")
PROBE_METRICS = ("accuracy", "control_accuracy", "selectivity")
TOP_LATENTS = 10
SUMMARY_TABLES = {"causal_probes": ("causal_probes_summary",), "ablation": ("ablation", "faithfulness")}
FOLD_ROWS = 12  # a longer table is folded under its chart


@dataclass
class Experiment:
    """One experiment folder (``psyling patch``, ``mediate``, ``steer``, ``ablate``, ``sae ...``): its folder,
    label (model id and kind), kind, manifest and tables (every top-level parquet; sae-eval: ``metrics``)."""
    path: Path
    label: str
    kind: str
    manifest: dict[str, Any]
    tables: dict[str, pd.DataFrame]


def experiment_kind(folder: Path) -> Optional[str]:
    """The manifest's ``kind`` of an experiment folder; None for a scoring run (a manifest without a kind)."""
    kind = read_manifest(folder).get("kind")
    return None if kind is None else str(kind)


def _experiment_tables(folder: Path, kind: str) -> dict[str, pd.DataFrame]:
    """The folder's top-level parquet tables by name (and sae-eval's metrics.json as a one-row table)."""
    tables = {}
    for path in sorted(folder.glob("*.parquet")):
        try:
            tables[path.stem] = pd.read_parquet(path)
        except (OSError, ValueError) as exc:
            raise PsylingError(f"{path}: cannot read it ({exc})") from None
    metrics = folder / "metrics.json"
    if kind == "sae-eval" and metrics.is_file():
        tables["metrics"] = pd.DataFrame([json.loads(metrics.read_text(encoding="utf-8"))])
    return tables


def read_experiments(folders: Sequence[Path]) -> list[Experiment]:
    """The experiment folders in the order given, labelled 'MODEL (KIND)' (with the folder name when repeated);
    a one-line error for a folder that is not an experiment of a known kind."""
    read = []
    for folder in map(Path, folders):
        kind = experiment_kind(folder)
        if kind not in EXPERIMENT_KINDS:
            what = "a scoring run" if kind is None else f"of unknown kind {kind!r}"
            raise PsylingError(f"{folder}: manifest.json field 'kind': {what}, not an experiment folder "
                               f"(kinds: {', '.join(EXPERIMENT_KINDS)})")
        read.append((folder, kind, read_manifest(folder)))
    labels = [f"{m.get('model', {}).get('id', f.name)} ({k})" for f, k, m in read]
    labels = [f"{label} [{f.name}]" if labels.count(label) > 1 else label for label, (f, _, _) in zip(labels, read)]
    return [Experiment(f, label, k, m, _experiment_tables(f, k)) for label, (f, k, m) in zip(labels, read)]


def split_folders(folders: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """The scoring runs and the experiment folders among ``folders`` (each in the order given); a one-line error
    for a folder that is neither."""
    runs, experiments = [], []
    for folder in map(Path, folders):
        kind = experiment_kind(folder)
        if kind is None:
            runs.append(check_run(folder))
        elif kind in EXPERIMENT_KINDS:
            experiments.append(folder)
        else:
            raise PsylingError(f"{folder}: manifest.json field 'kind': unknown kind {kind!r} "
                               f"(neither a scoring run nor an experiment: {', '.join(EXPERIMENT_KINDS)})")
    return runs, experiments


# ---- shared pieces ----

class FigureIds:
    """Figure ids numbered per prefix in the order asked for: patching-0, patching-1, sae-0 ..."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def __call__(self, prefix: str) -> str:
        number = self.counts.get(prefix, 0)
        self.counts[prefix] = number + 1
        return f"{prefix}-{number}"


def _png_file(draw: Callable[[Path], Any], alt: str) -> str:
    """A PNG that ``draw`` writes to a path (the PNG functions of ``psyling analyze``), as ``png_img``."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "plot.png"
        draw(path)
        return png_img(path.read_bytes(), alt)


def _block(title: str, caption: str, chart: str, table: Optional[pd.DataFrame], name: str) -> str:
    """One subsection: heading, one-sentence caption, chart and the table with its CSV link (folded, to open on
    a click, when it is longer than FOLD_ROWS)."""
    shown = "" if table is None else html_table(table, name)
    if table is not None and len(table) > FOLD_ROWS:
        shown = f"<details><summary>the table ({len(table)} rows)</summary>{shown}</details>"
    return f'<div class="network-block"><h4>{text(title)}</h4><p>{text(caption)}</p>{chart}{shown}</div>'


def _line(y: float, name: str) -> dict[str, Any]:
    """A dashed horizontal line across the plot at ``y`` (chance or zero)."""
    return {"type": "line", "xref": "paper", "x0": 0, "x1": 1, "yref": "y", "y0": y, "y1": y, "name": name,
            "line": {"dash": "dash", "color": "#666", "width": 1}}


def _layer_trace(rows: pd.DataFrame, name: str, colour: int, dash: int, meta: dict[str, Any],
                 value: str = "value", low: str = "ci_low", high: str = "ci_high") -> dict[str, Any]:
    """A line over layers of ``rows[value]`` (sorted by layer) with CI whiskers where the rows have them."""
    rows = rows.sort_values("layer", kind="stable")
    trace = {"type": "scatter", "mode": "lines+markers", "name": name, "meta": meta,
             "x": [int(v) for v in rows["layer"]], "y": finite(rows[value]),
             "line": {"color": COLOURS[colour % len(COLOURS)], "dash": DASHES[dash % len(DASHES)]}}
    if low in rows and high in rows and rows[low].notna().any():
        trace["error_y"] = {"type": "data", "symmetric": False, "array": finite(rows[high] - rows[value]),
                            "arrayminus": finite(rows[value] - rows[low])}
    return trace


def _layer_figure(traces: list[dict[str, Any]], title: str, y_title: str, line: Optional[tuple[float, str]]
                  ) -> dict[str, Any]:
    """A per-layer line chart: the traces and a dashed chance or zero line."""
    layout = {"title": {"text": title}, "xaxis": {"title": {"text": "layer (0 = embeddings)"}, "dtick": 1},
              "yaxis": {"title": {"text": y_title}}, "margin": {"t": 50}}
    if line is not None:
        layout["shapes"] = [_line(*line)]
    return {"data": traces, "layout": layout, "config": PLOT_CONFIG}


def _site_kind(sites: pd.Series) -> pd.Series:
    return sites.astype(str).str.split(".").str[0]


# ---- runs: probes, lens, encoding ----

def _interp_files(runs: Sequence[ReportRun], pattern: str) -> dict[str, list[tuple[ReportRun, pd.DataFrame]]]:
    """File stem -> (run, table) for every run with RUN/interp/PATTERN, stems sorted."""
    found: dict[str, list[tuple[ReportRun, pd.DataFrame]]] = {}
    for run in runs:
        for path in sorted((run.path / "interp").glob(pattern)):
            found.setdefault(path.stem, []).append((run, pd.read_parquet(path)))
    return dict(sorted(found.items()))


def probe_table(found: list[tuple[ReportRun, pd.DataFrame]]) -> pd.DataFrame:
    """The plotted probe rows (PROBE_METRICS and majority) of every run, with a model column."""
    parts = [table[table["metric"].isin([*PROBE_METRICS, "majority"])].assign(model=run.label)
             for run, table in found]
    columns = ["model", "site", "layer", "metric", "value", "ci_low", "ci_high", "n"]
    return pd.concat(parts, ignore_index=True).reindex(columns=columns)


def probe_figure(table: pd.DataFrame, title: str) -> dict[str, Any]:
    """One line per metric per model (and site kind), the dashed majority baseline (mean over sites)."""
    traces = []
    for m, model in enumerate(dict.fromkeys(table["model"])):
        for c, metric in enumerate(PROBE_METRICS):
            rows = table[(table["model"] == model) & (table["metric"] == metric)]
            kinds = _site_kind(rows["site"])
            for kind in dict.fromkeys(kinds):
                name = f"{metric} · {model}" + (f" · {kind}" if kinds.nunique() > 1 else "")
                traces.append(_layer_trace(rows[kinds == kind], name, c, m,
                                           {"model": model, "metric": metric, "kind": kind}))
    majority = table.loc[table["metric"] == "majority", "value"]
    chance = (float(majority.mean()), "majority") if len(majority) else None
    return _layer_figure(traces, title, "accuracy / selectivity", chance)


def probe_blocks(runs: Sequence[ReportRun], static: bool) -> list[str]:
    """A chart and table per probe (RUN/interp/probe_FACTOR[_REGION].parquet), over the runs that have it."""
    blocks = []
    for k, (stem, found) in enumerate(_interp_files(runs, "probe_*.parquet").items()):
        table = probe_table(found)
        title = f"probe for {stem[len('probe_'):]}"
        if static:
            chart = "".join(_png_file(lambda p, t=t, r=r: layer_curve(t, list(PROBE_METRICS), p, f"{title}: {r.label}"),
                                      f"{title}: {r.label}") for r, t in found)
        else:
            chart = figure_div(f"probe-{k}", probe_figure(table, title), probe=stem,
                               model=json.dumps(list(dict.fromkeys(table["model"]))))
        caption = ("Cross-validated probe accuracy, control-task accuracy and selectivity (accuracy minus control) "
                   "per layer with 95% CIs; the dashed line is the majority-class baseline, and selectivity 0 "
                   "means the probe does no better on the property than on the control task.")
        blocks.append(_block(title, caption, chart, table, stem))
    return blocks


def lens_table(runs: Sequence[ReportRun]) -> pd.DataFrame:
    """Per model, set and lens layer: the accuracy of the set's predictions and their chance level."""
    parts = []
    for run in runs:
        path = run.path / "lens_predictions.parquet"
        if not path.is_file():
            continue
        predictions = pd.read_parquet(path)
        formulas = predictions.groupby("set", sort=False)["prediction"].unique()
        accuracy = lens_accuracy(predictions)
        chance = accuracy["set"].map({s: prediction_chance(list(f)) for s, f in formulas.items()})
        parts.append(accuracy.assign(model=run.label, chance=chance))
    columns = ["model", "set", "layer", "accuracy", "chance"]
    return pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)


def lens_figure(rows: pd.DataFrame, set_name: str) -> dict[str, Any]:
    """One line per model over the lens layers, with the dashed chance line."""
    traces = [_layer_trace(rows[rows["model"] == model], model, m, 0, {"model": model, "set": set_name},
                           value="accuracy") for m, model in enumerate(dict.fromkeys(rows["model"]))]
    chance = float(rows["chance"].iloc[0])
    return _layer_figure(traces, f"logit lens: {set_name}", "accuracy", (chance, f"chance ({chance:.2f})"))


def lens_blocks(runs: Sequence[ReportRun], static: bool) -> list[str]:
    """Per set, the accuracy of its predictions read out through the logit lens at each layer."""
    table = lens_table(runs)
    blocks = []
    for k, set_name in enumerate(dict.fromkeys(table["set"])):
        rows = table[table["set"] == set_name]
        if static:
            chart = "".join(_png_file(lambda p, g=g: layer_curve(
                g.assign(site=[f"resid.{x}" for x in g["layer"]], metric="accuracy", value=g["accuracy"]),
                ["accuracy"], p, f"logit lens: {set_name} ({model})", chance=float(g["chance"].iloc[0])),
                f"logit lens {set_name} {model}") for model, g in rows.groupby("model", sort=False))
        else:
            chart = figure_div(f"lens-{k}", lens_figure(rows, set_name), set=set_name)
        caption = (f"Share of {set_name}'s items whose predictions all hold when the surprisals are read out at "
                   "each layer (final norm and unembedding applied to the residual stream); the dashed line is "
                   "the accuracy expected by chance.")
        blocks.append(_block(f"logit lens: {set_name}", caption, chart, rows, f"lens_{set_name}"))
    return blocks


def encode_blocks(runs: Sequence[ReportRun], static: bool) -> list[str]:
    """Per encoding target (RUN/interp/encode_TARGET.parquet): ΔR² over the baseline per layer and model."""
    blocks = []
    for k, (stem, found) in enumerate(_interp_files(runs, "encode_*.parquet").items()):
        table = pd.concat([t.assign(model=r.label) for r, t in found], ignore_index=True)
        table = table[["model", *[c for c in table.columns if c != "model"]]]
        target = stem[len("encode_"):]
        if static:
            chart = "".join(_png_file(lambda p, t=t, r=r: layer_curve(t, ["delta_r2"], p, f"{target}: {r.label}",
                                                                      chance=0.0), f"{target} {r.label}")
                            for r, t in found)
        else:
            traces = [_layer_trace(table[(table["model"] == model) & (_site_kind(table["site"]) == kind)],
                                   f"{model} · {kind}", m, c, {"model": model, "kind": kind}, value="delta_r2")
                      for m, model in enumerate(dict.fromkeys(table["model"]))
                      for c, kind in enumerate(dict.fromkeys(_site_kind(table["site"])))]
            traces = [t for t in traces if t["x"]]
            chart = figure_div(f"encode-{k}", _layer_figure(traces, f"encoding of {target}", "ΔR²", (0.0, "zero")),
                               target=target)
        caption = (f"Cross-validated R² gained per layer by adding the layer's activations to the baseline "
                   f"predictors of {target} (ΔR²); 0 (dashed) means the layer adds nothing.")
        blocks.append(_block(f"encoding: {target}", caption, chart, table, stem))
    return blocks


# ---- experiments: patching, mediation, causal probes, ablation ----

def patching_grids(summary: pd.DataFrame) -> list[dict[str, Any]]:
    """Every heatmap of a patching summary, as ``circuit_heatmaps`` draws them: per (set, kind, direction) the
    whole-site effects as a layer × region grid, per (set, region, direction) the single heads as layer × head.
    Each: set, direction, what, x (column names), layers, z (rows: layers ascending) and the rows behind it."""
    grids = []
    units = unit_rows(summary)
    whole = summary[~units].assign(region=lambda t: t["region"].astype(str))
    for (set_name, kind, direction), rows in whole.groupby(["set", "kind", "direction"], sort=False):
        columns = region_columns(rows, None)
        z, layers = value_grid(rows, "region", columns)
        grids.append({"set": set_name, "direction": direction, "kind": kind, "what": f"{kind} patching",
                      "x_title": "region", "x": columns, "layers": layers, "z": z, "rows": rows})
    heads = summary[units & (summary["kind"] == "head")]
    for (set_name, region, direction), rows in heads.groupby(["set", "region", "direction"], sort=False):
        rows = rows.assign(head=rows["head"].astype(int))
        columns = sorted(rows["head"].unique())
        z, layers = value_grid(rows, "head", columns)
        grids.append({"set": set_name, "direction": direction, "kind": "head", "what": f"heads in region {region}",
                      "x_title": "head", "x": [str(c) for c in columns], "layers": layers, "z": z, "rows": rows})
    return grids


def heatmap_figure(grid: dict[str, Any], title: str) -> dict[str, Any]:
    """A diverging plotly heatmap centred at 0 (limits symmetric, at least ±1), layer 0 at the bottom."""
    z = grid["z"]
    values = z[np.isfinite(z)]
    limit = max(1.0, float(np.abs(values).max()) if values.size else 1.0)
    trace = {"type": "heatmap", "x": grid["x"], "y": [str(layer) for layer in grid["layers"]],
             "z": [finite(row) for row in z], "zmin": -limit, "zmax": limit, "zmid": 0, "colorscale": "RdBu",
             "reversescale": True, "hoverongaps": False,
             "colorbar": {"title": {"text": COLOURBAR.get(grid["direction"], "effect")}},
             "meta": {"set": grid["set"], "direction": grid["direction"], "kind": grid["kind"]}}
    layout = {"title": {"text": title}, "xaxis": {"title": {"text": grid["x_title"]}, "type": "category"},
              "yaxis": {"title": {"text": "layer"}, "type": "category"}, "margin": {"t": 50}}
    return {"data": [trace], "layout": layout, "config": PLOT_CONFIG}


def _static_heatmap(summary: pd.DataFrame, grid: dict[str, Any], alt: str) -> str:
    """The PNG of ``layer_region_heatmap`` for a whole-site grid; a sentence for a head grid."""
    if grid["kind"] == "head":
        return "<p>(the layer × head heatmap is drawn in the interactive report)</p>"
    return _png_file(lambda p: layer_region_heatmap(summary, p, set_name=grid["set"], direction=grid["direction"],
                                                    kind=grid["kind"]), alt)


def patching_blocks(experiment: Experiment, ids: FigureIds, static: bool) -> list[str]:
    """A heatmap per grid of the experiment's patching summary, then the summary per set as a table."""
    summary = experiment.tables.get("patching_summary")
    if summary is None or summary.empty:
        return []
    blocks = []
    for grid in patching_grids(summary):
        title = f"{grid['set']}: {grid['what']}, {grid['direction']} ({experiment.label})"
        chart = (_static_heatmap(summary, grid, title) if static else
                 figure_div(ids("patching"), heatmap_figure(grid, title), set=grid["set"],
                            direction=grid["direction"], kind=grid["kind"]))
        measure = "recovery R" if grid["direction"] == "denoise" else "disruption D"
        caption = (f"Effect of patching each layer's {grid['what']} between the paired conditions ({measure}: the "
                   "ratio of item means; 1 = the patched run behaves like the other condition, 0 = no change, grey "
                   "= no value).")
        blocks.append(_block(title, caption, chart, None, ""))
    for set_name, rows in summary.groupby("set", sort=False):
        blocks.append(_block(f"{set_name}: patching summary ({experiment.label})",
                             "One row per site, region and direction: the effect with its bootstrap 95% CI.", "",
                             rows, f"patching_{set_name}"))
    return blocks


def mediation_blocks(experiment: Experiment, ids: FigureIds, static: bool) -> list[str]:
    """Per set and pair: the natural indirect effect (NIE) of each layer component over layers, and the top
    heads and units."""
    effects = experiment.tables.get("mediation_effects")
    if effects is None or effects.empty:
        return []
    layers = effects[effects["component"] == "layer"]
    blocks = []
    for (set_name, clean, corrupt), rows in layers.groupby(["set", "clean", "corrupt"], sort=False):
        title = f"{set_name}: mediation {clean} → {corrupt} ({experiment.label})"
        traces = [_layer_trace(rows[rows["kind"] == kind], kind, c, 0, {"set": set_name, "kind": kind},
                               value="nie", low="nie_ci_low", high="nie_ci_high")
                  for c, kind in enumerate(dict.fromkeys(rows["kind"]))]
        chart = ("<p>(the NIE per layer is drawn in the interactive report)</p>" if static else
                 figure_div(ids("mediation"), _layer_figure(traces, title, "NIE", (0.0, "zero")), set=set_name))
        caption = ("Natural indirect effect of each layer's component (noising it alone, as a ratio of the scored "
                   "probability minus 1) with item-bootstrap 95% CIs; 0 (dashed) means the component mediates "
                   "nothing.")
        blocks.append(_block(title, caption, chart, rows, f"mediation_{set_name}_{clean}_{corrupt}"))
    top = experiment.tables.get("mediation_top")
    if top is not None and not top.empty:
        blocks.append(_block(f"top heads and units ({experiment.label})",
                             "The heads and MLP units with the largest NIE per set and pair.", "", top,
                             "mediation_top"))
    return blocks


def summary_blocks(experiment: Experiment) -> list[str]:
    """The summary tables of a causal-probe or ablation experiment."""
    captions = {"causal_probes_summary": "Per set, pair and layer: the interchange-intervention accuracy (IIA) of "
                                         "steering along the probe direction and the share of items moved toward "
                                         "the other condition.",
                "ablation": "Accuracy of each set's predictions with the units ablated, against the baseline "
                            "and random units of the same layers (change 0 = no effect).",
                "faithfulness": "How much of the full model's metric the units alone carry as a circuit "
                                "(1 = all of it, 0 = none)."}
    return [_block(f"{name} ({experiment.label})", captions[name], "", experiment.tables[name], name)
            for name in SUMMARY_TABLES.get(experiment.kind, ()) if name in experiment.tables]


# ---- SAEs ----

def sae_points(experiments: Sequence[Experiment]) -> pd.DataFrame:
    """One (L0, FVU) point per trained SAE (its last training step) and per evaluation (metrics.json)."""
    rows = []
    for experiment in experiments:
        history, metrics = experiment.tables.get("history"), experiment.tables.get("metrics")
        source = history.tail(1) if experiment.kind == "sae" and history is not None else \
            metrics if experiment.kind == "sae-eval" and metrics is not None else None
        if source is not None and len(source):
            what = "last training batch" if experiment.kind == "sae" else "evaluated"
            rows.append({"label": experiment.label, "kind": experiment.kind, "site": experiment.manifest.get(
                "site", experiment.manifest.get("sae_config", {}).get("site", "")), "what": what,
                "l0": float(source["l0"].iloc[0]), "fvu": float(source["fvu"].iloc[0])})
    return pd.DataFrame(rows, columns=["label", "kind", "site", "what", "l0", "fvu"])


def sae_point_block(points: pd.DataFrame, static: bool) -> str:
    """The L0 against FVU scatter (log L0), one labelled point per SAE, and its table."""
    if static:
        shown = points[(points["l0"] > 0) & np.isfinite(points["fvu"])]
        chart = figure_img(l0_fvu_figure(shown), "L0 vs FVU") if len(shown) else "<p>(no positive L0)</p>"
    else:
        trace = {"type": "scatter", "mode": "markers+text", "x": finite(points["l0"]), "y": finite(points["fvu"]),
                 "text": list(points["label"]), "textposition": "top right", "meta": {"what": "l0_fvu"},
                 "marker": {"color": COLOURS[0], "size": 9}}
        layout = {"title": {"text": f"sparsity vs reconstruction ({len(points)} SAEs)"},
                  "xaxis": {"title": {"text": "L0 (active latents per token, log scale)"}, "type": "log"},
                  "yaxis": {"title": {"text": "FVU (fraction of variance unexplained)"}}, "margin": {"t": 50}}
        chart = figure_div("sae-l0-fvu", {"data": [trace], "layout": layout, "config": PLOT_CONFIG})
    caption = ("Average number of active latents per token (L0) against the fraction of the activations' variance "
               "the SAE fails to reconstruct (FVU: 0 = perfect, 1 = no better than the mean).")
    return _block("SAEs: sparsity and reconstruction", caption, chart, points, "sae_l0_fvu")


def top_latents(contrast: pd.DataFrame, set_name: str, n: int = TOP_LATENTS) -> pd.DataFrame:
    """The top ``n`` latents of each contrast (factor, level pair) of a set, as ``top_latents_figure`` bars them."""
    rows = contrast[contrast["set"] == set_name]
    keys = ["factor", "level_a", "level_b"]
    parts = [top_rows(group, n) for _, group in rows.groupby(keys, sort=False)]
    columns = ["set", *keys, "latent", "d_z", "difference", "p_value", "q_value", "auroc", "n_items"]
    return pd.concat(parts, ignore_index=True).reindex(columns=columns)


def top_latents_traces(top: pd.DataFrame) -> list[dict[str, Any]]:
    """One bar trace per contrast: d_z per latent, blue where q < ALPHA."""
    traces = []
    for (factor, level_a, level_b), rows in top.groupby(["factor", "level_a", "level_b"], sort=False):
        significant = (rows["q_value"] < ALPHA).to_numpy()
        traces.append({"type": "bar", "name": f"{factor}: {level_b} − {level_a}",
                       "x": [f"{factor}: {latent}" for latent in rows["latent"]], "y": finite(rows["d_z"]),
                       "customdata": finite(rows["q_value"]), "hovertemplate": "%{x}<br>d_z %{y:.3f}<br>q "
                       "%{customdata:.3g}<extra></extra>", "meta": {"factor": factor, "level_a": level_a,
                                                                    "level_b": level_b},
                       "marker": {"color": [COLOURS[0] if s else "#999999" for s in significant]}})
    return traces


def sae_feature_blocks(experiment: Experiment, ids: FigureIds, static: bool) -> list[str]:
    """Per set of an sae-features experiment: the d_z of the top latents of each contrast (bars and table)."""
    contrast = experiment.tables.get("contrast")
    if contrast is None or contrast.empty:
        return []
    blocks = []
    for set_name in dict.fromkeys(contrast["set"].astype(str)):
        top = top_latents(contrast, set_name)
        title = f"{set_name}: top SAE latents ({experiment.label})"
        if static:
            chart = figure_img(top_latents_figure(contrast, set_name, TOP_LATENTS), title)
        else:
            layout = {"title": {"text": title}, "xaxis": {"title": {"text": "latent"}, "type": "category"},
                      "yaxis": {"title": {"text": "d_z (level b − level a)"}}, "margin": {"t": 50},
                      "shapes": [_line(0.0, "zero")]}
            chart = figure_div(ids("sae"), {"data": top_latents_traces(top), "layout": layout,
                                            "config": PLOT_CONFIG}, set=set_name)
        caption = (f"The {TOP_LATENTS} latents per contrast with the smallest q (then largest |d_z|): the paired "
                   f"effect size d_z of the latent's activation between the levels (0 = no difference; blue: "
                   f"q < {ALPHA:g}).")
        blocks.append(_block(title, caption, chart, top, f"sae_top_latents_{set_name}"))
    return blocks


# ---- the section ----

def experiment_blocks(experiments: Sequence[Experiment], static: bool) -> list[str]:
    """The blocks of every experiment in order: patching, mediation, summaries, SAE features; then the SAEs'
    L0 / FVU scatter."""
    blocks, ids = [], FigureIds()
    makers = {"patching": patching_blocks, "mediation": mediation_blocks, "sae-features": sae_feature_blocks}
    for experiment in experiments:
        if experiment.kind in makers:
            blocks += makers[experiment.kind](experiment, ids, static)
        blocks += summary_blocks(experiment)
    points = sae_points(experiments)
    if len(points):
        blocks.append(sae_point_block(points, static))
    return blocks


def network_section(runs: Sequence[ReportRun], experiments: Sequence[Experiment], static: bool) -> str:
    """The "Inside the network" section: probes, logit lens and encoding of the runs, then the experiments;
    "" when there is nothing to show."""
    parts = [("Probes", probe_blocks(runs, static)), ("Logit lens", lens_blocks(runs, static)),
             ("Encoding", encode_blocks(runs, static)), ("Experiments", experiment_blocks(experiments, static))]
    shown = "".join(f"<h3>{text(title)}</h3>" + "".join(blocks) for title, blocks in parts if blocks)
    return f'<section id="network"><h2>Inside the network</h2>{shown}</section>' if shown else ""
