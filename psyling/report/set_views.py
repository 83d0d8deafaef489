"""The per-set view of the HTML report: the design with its regions coloured, the region-by-region surprisal chart,
item-level points at the critical region, a forest plot of the model's effect beside the published human effect,
and the mixed-model table (long text cells shortened on screen, kept whole in the CSV)."""
from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .html_parts import COLOURS, DASHES, PLOT_CONFIG, csv_link, figure_div, finite, html_table, table_cell, text
from .set_pngs import forest_png, items_png, profile_png
from .report_data import ReportRun, design, human_comparison, item_points, predicted_region, profile

REGION_PALETTE = ("#dbeafe", "#dcfce7", "#fef3c7", "#fce7f3", "#ede9fe", "#ccfbf1", "#ffedd5", "#e0e7ff",
                  "#ecfccb", "#fae8ff")
SYMBOLS = ("circle", "square", "diamond", "triangle-up", "x")
SHORT_CELL = 120  # characters of a text cell shown on screen; the full text is in its title and the CSV
PEOPLE = "people (published)"
PEOPLE_COLOUR = "#000000"
GOLDEN = 0.6180339887498949  # the item jitter: fractional parts of k * GOLDEN spread evenly and never repeat


def caption(sentence: str) -> str:
    """A one-sentence caption under a chart."""
    return f'<p class="caption">{text(sentence)}</p>'


def region_colours(names: Sequence[str]) -> dict[str, str]:
    """Region -> a light background colour, in region order (the palette repeats after 10 regions)."""
    return {name: REGION_PALETTE[k % len(REGION_PALETTE)] for k, name in enumerate(names)}


def design_table(table: pd.DataFrame, name: str, critical: str) -> str:
    """The design (condition column, then one column per region) with each region's column coloured, the critical
    region's cells of class ``critical``, a legend of the colours and the CSV download."""
    colours = region_colours(list(table.columns[1:]))

    def attrs(column: str) -> str:
        mark = ' class="critical"' if column == critical else ""
        return f'{mark} style="background:{colours[column]}"' if column in colours else ""

    head = "".join(f"<th{attrs(c)}>{text(c)}{' (critical)' if c == critical else ''}</th>" for c in table.columns)
    body = "".join("<tr>" + "".join(f"<td{attrs(c)}>{text('' if v is None else v)}</td>"
                                    for c, v in zip(table.columns, row)) + "</tr>"
                   for row in table.itertuples(index=False))
    legend = "".join(f'<span class="region-key" style="background:{colour}">{text(region)}</span>'
                     for region, colour in colours.items())
    return (f'<p class="legend">Regions, in sentence order: {legend}</p>'
            f'<table class="design"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
            + csv_link(table, name))


def short_cell(value: Any) -> str:
    """A table cell; text longer than ``SHORT_CELL`` characters is cut (ending in …) with the full text as title."""
    if isinstance(value, str) and len(value) > SHORT_CELL:
        return f'<td title="{text(value)}">{text(value[:SHORT_CELL - 1])}…</td>'
    return table_cell(value)


def short_rows(table: pd.DataFrame) -> str:
    """A sortable HTML table with long text cells shortened on screen (``short_cell``)."""
    head = "".join(f"<th>{text(c)}</th>" for c in table.columns)
    body = "".join("<tr>" + "".join(short_cell(v) for v in row) + "</tr>" for row in table.itertuples(index=False))
    return f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def short_table(table: pd.DataFrame, name: str) -> str:
    """``html_table`` with long text cells shortened on screen (``short_cell``); the CSV keeps the full text."""
    return short_rows(table) + csv_link(table, name)


def profile_traces(runs: Sequence[ReportRun], set_name: str) -> tuple[list[dict[str, Any]], list[str]]:
    """One plotly trace per condition per model (colour: condition, dash: model) and the regions' names."""
    traces, names = [], []
    for m, run in enumerate(r for r in runs if set_name in r.set_names()):
        table = profile(run, set_name)
        conditions = list(dict.fromkeys(table["condition"]))
        for c, cond in enumerate(conditions):
            rows = table[table["condition"] == cond]
            names = names or list(rows["region"])
            offset = 0.3 * ((c + 0.5) / len(conditions) - 0.5)
            traces.append({
                "type": "scatter", "mode": "lines+markers", "name": f"{cond} · {run.label}",
                "legendgroup": run.label, "meta": {"model": run.label, "condition": cond},
                "x": [float(k - 1 + offset) for k in rows["region_number"]], "y": finite(rows["mean"]),
                "error_y": {"type": "data", "symmetric": False,
                            "array": finite(rows["ci_high"] - rows["mean"]),
                            "arrayminus": finite(rows["mean"] - rows["ci_low"])},
                "line": {"color": COLOURS[c % len(COLOURS)], "dash": DASHES[m % len(DASHES)]}})
    return traces, names


def profile_figure(runs: Sequence[ReportRun], set_name: str, critical: str, fig_id: str) -> str:
    """The region-by-region surprisal chart of one set: a div and its figure as JSON (drawn by ``DRAW_JS``)."""
    traces, names = profile_traces(runs, set_name)
    layout = {"title": {"text": f"{set_name}: mean surprisal per region, 95% CI over items"},
              "xaxis": {"zeroline": False, "tickmode": "array", "tickvals": list(range(len(names))), "ticktext": names},
              "yaxis": {"title": {"text": "surprisal (bits)"}}, "margin": {"t": 50}}
    if critical in names:
        k = names.index(critical)
        layout["shapes"] = [{"type": "rect", "xref": "x", "yref": "paper", "x0": k - 0.45, "x1": k + 0.45,
                             "y0": 0, "y1": 1, "fillcolor": "#fff3c4", "opacity": 0.6, "layer": "below",
                             "line": {"width": 0}}]
        layout["annotations"] = [{"x": k, "y": 1, "xref": "x", "yref": "paper", "text": "critical region",
                                  "showarrow": False, "yanchor": "bottom"}]
    models = [r.label for r in runs if set_name in r.set_names()]
    figure = {"data": traces, "layout": layout, "config": PLOT_CONFIG}
    return figure_div(fig_id, figure, set=set_name, model=json.dumps(models), critical=critical)


def item_traces(runs: Sequence[ReportRun], set_name: str, region: str) -> tuple[list[dict[str, Any]], list[str]]:
    """One trace per condition per model: each item's surprisal at ``region`` (x: the condition, spread by a fixed
    per-item offset and a per-model offset), and the conditions in order."""
    shown = [r for r in runs if set_name in r.set_names()]
    traces, conditions = [], []
    for m, run in enumerate(shown):
        points = item_points(run, set_name, region)
        conditions = conditions or list(dict.fromkeys(points["condition"]))
        model_offset = 0.5 * ((m + 0.5) / len(shown) - 0.5)
        for c, cond in enumerate(conditions):
            rows = points[points["condition"] == cond]
            jitter = [0.3 / len(shown) * ((k * GOLDEN) % 1.0 - 0.5) for k in rows["item_index"]]
            traces.append({
                "type": "scatter", "mode": "markers", "name": f"{cond} · {run.label}", "legendgroup": run.label,
                "meta": {"model": run.label, "condition": cond, "kind": "items"},
                "x": [c + model_offset + j for j in jitter], "y": finite(rows["surprisal"]),
                "hovertext": [str(i) for i in rows["item"]], "hoverinfo": "text+y+name",
                "marker": {"color": COLOURS[c % len(COLOURS)], "symbol": SYMBOLS[m % len(SYMBOLS)], "size": 7,
                           "opacity": 0.75}})
    return traces, conditions


def items_figure(runs: Sequence[ReportRun], set_name: str, region: str, fig_id: str) -> str:
    """The item-level chart of one set at ``region``, with its caption."""
    traces, conditions = item_traces(runs, set_name, region)
    layout = {"title": {"text": f"{set_name}: surprisal of each item at the {region} region"},
              "xaxis": {"zeroline": False, "tickmode": "array", "tickvals": list(range(len(conditions))),
                        "ticktext": conditions, "title": {"text": "condition"}},
              "yaxis": {"title": {"text": f"surprisal at {region} (bits)"}}, "margin": {"t": 50}}
    figure = {"data": traces, "layout": layout, "config": PLOT_CONFIG}
    return figure_div(fig_id, figure, set=set_name, region=region) + items_caption(region)


def items_caption(region: str) -> str:
    """The caption of the item-level chart."""
    return caption(f"Each point is one item's surprisal (bits) at the {region} region in one condition (colour) for "
                   "one model (marker shape); points are spread sideways by a fixed offset per item only so they do "
                   "not overlap, and (on the interactive page) hovering a point shows its item id.")


def forest_trace(label: str, values: tuple[float, float, float], colour: str, meta: dict[str, Any],
                 axis: str) -> dict[str, Any]:
    """One row of the forest plot: a point (``values``: estimate, CI low, CI high) with its CI as error bar."""
    mid, low, high = values
    return {"type": "scatter", "mode": "markers", "name": label, "meta": meta, "x": finite([mid]), "y": [label],
            "xaxis": f"x{axis}", "yaxis": f"y{axis}",
            "error_x": {"type": "data", "symmetric": False, "array": finite([high - mid]),
                        "arrayminus": finite([mid - low])},
            "marker": {"color": colour, "size": 10, "symbol": "diamond" if label == PEOPLE else "circle"}}


def forest_traces(human: pd.DataFrame) -> list[dict[str, Any]]:
    """Left panel (human unit): each model's prediction where a linking was fitted and the published human effect;
    right panel (bits): each model's effect."""
    first = human.iloc[0]
    unit = str(first["unit"])
    traces = [forest_trace(PEOPLE, (first["human_size"], first["human_ci_low"], first["human_ci_high"]),
                           PEOPLE_COLOUR, {"model": PEOPLE, "kind": "human", "unit": unit}, "")]
    for m, row in enumerate(human.itertuples()):
        colour = COLOURS[m % len(COLOURS)]
        if np.isfinite(row.predicted):
            traces.append(forest_trace(row.model, (row.predicted, row.predicted_ci_low, row.predicted_ci_high),
                                       colour, {"model": row.model, "kind": "predicted", "unit": unit}, ""))
        traces.append(forest_trace(row.model, (row.model_bits, row.model_ci_low, row.model_ci_high), colour,
                                   {"model": row.model, "kind": "bits", "unit": "bits"}, "2"))
    return traces


def forest_figure(human: pd.DataFrame, set_name: str, fig_id: str) -> str:
    """The forest plot of one set's human comparison, with its caption."""
    unit = str(human["unit"].iloc[0])
    rows = [PEOPLE, *human["model"]]
    rows_axis = {"type": "category", "categoryorder": "array", "categoryarray": rows[::-1],
                 "range": [-0.5, len(rows) - 0.5]}  # the same rows at the same heights in both panels
    zero = {"type": "line", "yref": "paper", "y0": 0, "y1": 1, "x0": 0, "x1": 0,
            "line": {"color": "#888888", "dash": "dot", "width": 1}}
    layout = {"title": {"text": f"{set_name}: effect in {unit} (models' predictions and people) and in bits"},
              "xaxis": {"domain": [0, 0.58], "zeroline": False, "title": {"text": f"effect ({unit})"}},
              "xaxis2": {"domain": [0.68, 1], "zeroline": False, "title": {"text": "model effect (bits)"}},
              "yaxis": {**rows_axis}, "yaxis2": {**rows_axis, "anchor": "x2", "showticklabels": False},
              "shapes": [{**zero, "xref": "x"}, {**zero, "xref": "x2"}], "margin": {"t": 50, "l": 160},
              "showlegend": False}
    figure = {"data": forest_traces(human), "layout": layout, "config": PLOT_CONFIG}
    return figure_div(fig_id, figure, set=set_name, unit=unit) + forest_caption(human)


def forest_caption(human: pd.DataFrame) -> str:
    """The caption of the forest plot, naming the models without a linking fit."""
    unit = str(human["unit"].iloc[0])
    unlinked = [m for m, p in zip(human["model"], human["predicted"]) if not np.isfinite(p)]
    note = (f" No linking function was fitted for {', '.join(unlinked)}, so "
            f"{'it has' if len(unlinked) == 1 else 'they have'} no point in {unit}, only in bits." if unlinked else "")
    return caption(f"Left: each model's effect predicted in {unit} by its linking fit and the published human "
                   f"effect (black diamond), one row each; right: each model's effect in bits (the set's effect "
                   f"contrast); points are estimates, bars 95% CIs (t over items for the models), the dotted line "
                   f"is zero." + note)


def human_panel(runs: Sequence[ReportRun], set_name: str, index: int, static: bool) -> list[str]:
    """The human panel (forest plot and table) where the set has a published human size; nothing otherwise."""
    human = human_comparison(runs, set_name)
    if human.empty:
        return []
    chart = (forest_png(forest_traces(human), set_name, str(human["unit"].iloc[0])) + forest_caption(human)
             if static else forest_figure(human, set_name, f"forest-{index}"))
    return [f'<div class="human" id="human-{index}"><h3>Model effect and human effect</h3>', chart,
            html_table(human, f"human_{set_name}"), "</div>"]


def fit_columns(table: pd.DataFrame) -> list[str]:
    """The columns that describe the whole fit (one value on every row: region, convergence, random effects,
    warnings ...), as opposed to its terms."""
    if len(table) < 2:
        return [c for c in table.columns if c not in ("term", "estimate", "std_error", "df", "t", "p_value",
                                                        "ci_low", "ci_high", "coding")]
    return [c for c in table.columns if table[c].astype(str).nunique() == 1]


def mixed_tables(runs: Sequence[ReportRun], set_name: str) -> list[str]:
    """Each run's mixed model of the set: what describes the fit as a two-column table, then one row per term
    (long text cells shortened on screen); the CSV holds every column of every row."""
    parts = []
    for run in runs:
        mixed = run.table("mixed")
        if mixed is None or not (mixed["set"] == set_name).any():
            continue
        rows = mixed[mixed["set"] == set_name].drop(columns=["set"]).reset_index(drop=True)
        shared = fit_columns(rows)
        fit = pd.DataFrame({"fit": shared, "value": [rows[c].iloc[0] for c in shared]})
        parts += [f"<h3>Mixed model ({text(run.label)})</h3>", short_rows(fit), short_rows(rows.drop(columns=shared)),
                  csv_link(rows, f"mixed_{set_name}")]
    return parts


def charts(runs: Sequence[ReportRun], set_name: str, critical: str, index: int, static: bool) -> list[str]:
    """The region chart and the item-level chart (at the critical or predicted region), each with its caption:
    plotly figures, or with ``static`` PNGs of the same traces."""
    profile_caption = caption(
        "Each line is one condition (colour) of one model (line dash); points are the mean surprisal (bits) of each "
        "region over items and error bars the 95% t confidence interval over items"
        + (f"; the shaded column is the critical region ({critical})." if critical else "."))
    profile_chart = (profile_png(*profile_traces(runs, set_name), set_name, critical) if static
                     else profile_figure(runs, set_name, critical, f"profile-{index}"))
    parts = [profile_chart, profile_caption]
    region = critical or next(filter(None, (predicted_region(r, set_name) for r in runs)), "")
    if region:
        items = (items_png(*item_traces(runs, set_name, region), set_name, region) + items_caption(region) if static
                 else items_figure(runs, set_name, region, f"items-{index}"))
        parts += ["<h3>Item-level surprisal</h3>", items]
    return parts


def set_section(runs: Sequence[ReportRun], set_name: str, index: int, static: bool) -> str:
    """One set: its design with the first item, the region and item charts, the human comparison where there is
    one, and the mixed-model tables."""
    first = next(r for r in runs if set_name in r.set_names())
    critical = next((r.critical[set_name] for r in runs if set_name in r.critical), "")
    parts = [f'<section class="set" id="set-{index}" data-set="{text(set_name)}"><h2>{text(set_name)}</h2>',
             f"<h3>Design (first item; critical region: {text(critical or 'not given')})</h3>",
             design_table(design(first, set_name), f"design_{set_name}", critical),
             "<h3>Region-by-region surprisal</h3>", *charts(runs, set_name, critical, index, static),
             *human_panel(runs, set_name, index, static), *mixed_tables(runs, set_name)]
    return "".join(parts) + "</section>"
