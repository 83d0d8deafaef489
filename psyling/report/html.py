"""``psyling report``: one self-contained HTML page over one or more runs (plotly's JavaScript inlined, all data
inline, no network, the same bytes for the same runs). ``static=True`` embeds PNGs drawn with matplotlib instead."""
from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..errors import PsylingError
from ..fileio import atomic_write
from .html_parts import COLOURS, DASHES, PLOT_CONFIG, figure_div, finite, html_table, text
from .plots import condition_styles
from .report_data import (ReportRun, design, human_comparison, leaderboard, profile, read_report_runs,
                          report_sets, reproducibility)

STYLE = """body{font-family:sans-serif;margin:1.5em;max-width:80em;color:#222}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}th,td{border:1px solid #ccc;padding:.2em .5em}
th{background:#f3f3f3;cursor:pointer}td.num{text-align:right}.critical{background:#fff3c4}
.plot{width:100%;height:420px}a.csv{font-size:.8em;margin-left:1em}section{margin-bottom:2em}"""
SORT_JS = """document.querySelectorAll('table.sortable th').forEach(function(th){th.addEventListener('click',
function(){var table=th.closest('table'),body=table.tBodies[0],k=th.cellIndex,up=th.dataset.up!=='1';
th.dataset.up=up?'1':'0';var rows=Array.prototype.slice.call(body.rows);rows.sort(function(a,b){
var x=a.cells[k].dataset.v||a.cells[k].textContent,y=b.cells[k].dataset.v||b.cells[k].textContent,
p=parseFloat(x),q=parseFloat(y),c=(isNaN(p)||isNaN(q))?x.localeCompare(y):p-q;return up?c:-c;});
rows.forEach(function(r){body.appendChild(r);});});});"""
DRAW_JS = """document.querySelectorAll('div.plot').forEach(function(div){
var fig=JSON.parse(document.getElementById(div.id+'-json').textContent);
Plotly.newPlot(div,fig.data,fig.layout,fig.config);});"""


def plotly_bundle() -> str:
    """plotly.js from the installed plotly package, with the web addresses in its strings, comments and regular
    expressions written ``http:\\/\\/`` (the same string to JavaScript) and ``</`` as ``<\\/``."""
    try:
        from plotly.offline import get_plotlyjs
    except ImportError:
        raise PsylingError("psyling report: plotly is not installed (pip install 'psyling[report]', or use "
                           "--static)") from None
    js = get_plotlyjs()
    return re.sub(r"(https?):/{2}", r"\1:\\/\\/", js).replace("</", "<\\/")


def overview(runs: Sequence[ReportRun]) -> str:
    """The leaderboard: sets × models, accuracy [Wilson 95% CI] and verdict."""
    board = leaderboard(runs)
    shown = board.assign(cell=[f"{a:.3f} [{lo:.3f}, {hi:.3f}]" for a, lo, hi in
                               zip(board["accuracy"], board["ci_low"], board["ci_high"])])
    wide = shown.pivot(index="set", columns="model", values="cell")
    wide = wide.reindex(index=report_sets(runs), columns=[r.label for r in runs]).fillna("").reset_index()
    return ('<section id="overview"><h2>Overview</h2><p>Accuracy per set (share of items whose predictions all '
            'hold) by model; click a header to sort.</p>' + html_table(wide, "leaderboard", "leaderboard")
            + "<h3>Accuracy with Wilson 95% CIs and verdicts</h3>"
            + html_table(board, "accuracy", "accuracy") + "</section>")


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


def static_figure(runs: Sequence[ReportRun], set_name: str, critical: str) -> str:
    """The same chart as a PNG (matplotlib) in a data URI."""
    from .plots import _pyplot

    plt = _pyplot()
    traces, names = profile_traces(runs, set_name)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(names) + 2), 3.8))
    styles = condition_styles(len(traces))
    for trace, style in zip(traces, styles):
        y = np.array([np.nan if v is None else v for v in trace["y"]])
        err = np.array([[np.nan if v is None else v for v in trace["error_y"][k]] for k in ("arrayminus", "array")])
        ax.errorbar(trace["x"], y, yerr=np.nan_to_num(err), capsize=3, label=trace["name"], **style)
    if critical in names:
        ax.axvspan(names.index(critical) - 0.45, names.index(critical) + 0.45, color="0.92", zorder=0,
                   label="critical region")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("surprisal (bits), mean ± 95% CI")
    ax.set_title(set_name)
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img class="static-plot" alt="{text(set_name)} region profile" src="data:image/png;base64,{data}">'


def set_section(runs: Sequence[ReportRun], set_name: str, index: int, static: bool) -> str:
    """One set: its design with the first item, the region chart and the human comparison where there is one."""
    first = next(r for r in runs if set_name in r.set_names())
    critical = next((r.critical[set_name] for r in runs if set_name in r.critical), "")
    fig_id = f"profile-{index}"
    chart = static_figure(runs, set_name, critical) if static else profile_figure(runs, set_name, critical, fig_id)
    parts = [f'<section class="set" id="set-{index}" data-set="{text(set_name)}"><h2>{text(set_name)}</h2>',
             f"<h3>Design (first item; critical region: {text(critical or 'not given')})</h3>",
             html_table(design(first, set_name), f"design_{set_name}"), "<h3>Region-by-region surprisal</h3>", chart]
    human = human_comparison(runs, set_name)
    if not human.empty:
        parts += [f'<div class="human" id="human-{index}"><h3>Model effect and human effect</h3>',
                  html_table(human, f"human_{set_name}"), "</div>"]
    for run in runs:
        mixed = run.table("mixed")
        if mixed is not None and (mixed["set"] == set_name).any():
            parts += [f"<h3>Mixed model ({text(run.label)})</h3>",
                      html_table(mixed[mixed["set"] == set_name].drop(columns=["set"]), f"mixed_{set_name}")]
    return "".join(parts) + "</section>"


def reproducibility_section(runs: Sequence[ReportRun]) -> str:
    """Each run's model, digest, tokenizer, settings, invariance check and stimulus files with their digests."""
    parts = ['<section id="reproducibility"><h2>Reproducibility</h2>']
    for run in runs:
        record = reproducibility(run)
        files = pd.DataFrame(sorted(record.pop("files").items()), columns=["file", "sha256"])
        fields = pd.DataFrame([(k, json.dumps(v, sort_keys=True) if isinstance(v, dict) else v)
                               for k, v in record.items()], columns=["field", "value"])
        parts += [f"<h3>{text(run.label)}</h3>", html_table(fields, f"run_{run.label}"),
                  html_table(files, f"stimulus_files_{run.label}")]
    return "".join(parts) + "</section>"


def render(runs: Sequence[ReportRun], static: bool) -> str:
    """The whole page."""
    sets = report_sets(runs)
    nav = "".join(f'<li><a href="#set-{k}">{text(s)}</a></li>' for k, s in enumerate(sets))
    head = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>psyling report</title>'
            f'<style>{STYLE}</style>')
    if not static:
        head += f'<script type="text/javascript">{plotly_bundle()}</script>'
    body = (f'<body><h1>psyling report: {text(", ".join(r.label for r in runs))}</h1>'
            f'<nav><ul><li><a href="#overview">Overview</a></li>{nav}'
            f'<li><a href="#reproducibility">Reproducibility</a></li></ul></nav>' + overview(runs)
            + "".join(set_section(runs, s, k, static) for k, s in enumerate(sets)) + reproducibility_section(runs))
    scripts = f"<script>{SORT_JS}</script>" + ("" if static else f"<script>{DRAW_JS}</script>")
    return head + "</head>" + body + scripts + "</body></html>\n"


def build_report(run_dirs: Sequence[Path], out: Path, static: bool = False) -> Path:
    """Write the report of ``run_dirs`` to ``out`` (one HTML file) and return its path."""
    page = render(read_report_runs([Path(d) for d in run_dirs]), static)
    return atomic_write(Path(out), lambda tmp: tmp.write_text(page, encoding="utf-8"))
