"""``psyling report``: one self-contained HTML page over runs, experiment folders and sweeps (plotly's JavaScript
inlined, all data inline, no network, the same bytes for the same inputs). ``static=True`` embeds PNGs drawn with
matplotlib instead."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Sequence

import pandas as pd

from ..errors import PsylingError
from ..fileio import atomic_write
from .html_parts import html_table, text
from .network import Experiment, network_section, read_experiments, split_folders
from .overview import overview
from .report_data import ReportRun, read_report_runs, report_sets, reproducibility
from .set_views import set_section
from .sweep_view import SweepTables, collect_folder, read_sweep, sweep_sections

STYLE = """body{font-family:sans-serif;margin:1.5em;max-width:80em;color:#222}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}th,td{border:1px solid #ccc;padding:.2em .5em}
th{background:#f3f3f3;cursor:pointer}td.num{text-align:right}.critical{background:#fff3c4}
.plot{width:100%;height:420px}a.csv{font-size:.8em;margin-left:1em}section{margin-bottom:2em}
table.design th.critical,table.design td.critical{font-weight:bold;border:2px solid #b8860b}
.region-key{padding:.1em .5em;margin-right:.3em;border:1px solid #ccc}p.caption{font-size:.85em;color:#555;
margin:.2em 0 1em}"""
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
    expressions written ``http:\\/\\/`` (the same string to JavaScript) and ``</`` as ``<\\/``. The content
    delivery networks its map and geo traces would fetch from (topojson, map styles, icons; never used here) are
    replaced by ``about:blank``, so the page names no CDN and could not reach one."""
    try:
        from plotly.offline import get_plotlyjs
    except ImportError:
        raise PsylingError("psyling report: plotly is not installed (pip install 'psyling[report]', or use "
                           "--static)") from None
    js = re.sub(r"https?://[^\"'`\s]*cdn[^\"'`\s]*", "about:blank", get_plotlyjs(), flags=re.IGNORECASE)
    return re.sub(r"(https?):/{2}", r"\1:\\/\\/", js).replace("</", "<\\/")


def _experiment_record(experiment: Experiment) -> str:
    """An experiment folder's model, kind, config and settings (its manifest), as a table."""
    manifest = experiment.manifest
    fields = [(k, json.dumps(manifest[k], sort_keys=True) if isinstance(manifest[k], dict) else manifest[k])
              for k in ("kind", "model", "config", experiment.kind, "psyling_version") if k in manifest]
    return (f"<h3>{text(experiment.label)}</h3>"
            + html_table(pd.DataFrame(fields, columns=["field", "value"]), f"experiment_{experiment.label}"))


def reproducibility_section(runs: Sequence[ReportRun], experiments: Sequence[Experiment] = ()) -> str:
    """Each run's model, digest, tokenizer, settings, invariance check and stimulus files with their digests, and
    each experiment folder's manifest."""
    parts = ['<section id="reproducibility"><h2>Reproducibility</h2>']
    for run in runs:
        record = reproducibility(run)
        files = pd.DataFrame(sorted(record.pop("files").items()), columns=["file", "sha256"])
        fields = pd.DataFrame([(k, json.dumps(v, sort_keys=True) if isinstance(v, dict) else v)
                               for k, v in record.items()], columns=["field", "value"])
        parts += [f"<h3>{text(run.label)}</h3>", html_table(fields, f"run_{run.label}"),
                  html_table(files, f"stimulus_files_{run.label}")]
    parts += [_experiment_record(e) for e in experiments]
    return "".join(parts) + "</section>"


def render(runs: Sequence[ReportRun], static: bool, experiments: Sequence[Experiment] = (),
           sweeps: Sequence[SweepTables] = ()) -> str:
    """The whole page: overview, one section per set, inside the network (where there is something to show),
    the sweeps, reproducibility (the parts with nothing to show are left out)."""
    sets = report_sets(runs)
    network = network_section(runs, experiments, static)
    records = bool(runs or experiments)
    links = [*((("overview", "Overview"),) if runs else ()), *((f"set-{k}", s) for k, s in enumerate(sets)),
             *((("network", "Inside the network"),) if network else ()),
             *((f"sweep-{k}", f"Sweep: {s.label}") for k, s in enumerate(sweeps)),
             *((("reproducibility", "Reproducibility"),) if records else ())]
    nav = "".join(f'<li><a href="#{ident}">{text(name)}</a></li>' for ident, name in links)
    head = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>psyling report</title>'
            f'<style>{STYLE}</style>')
    if not static:
        head += f'<script type="text/javascript">{plotly_bundle()}</script>'
    title = ", ".join([r.label for r in runs] + [f"sweep {s.label}" for s in sweeps])
    body = (f'<body><h1>psyling report: {text(title)}</h1><nav><ul>{nav}</ul></nav>'
            + (overview(runs) if runs else "") + "".join(set_section(runs, s, k, static) for k, s in enumerate(sets))
            + network + sweep_sections(sweeps, static)
            + (reproducibility_section(runs, experiments) if records else ""))
    scripts = f"<script>{SORT_JS}</script>" + ("" if static else f"<script>{DRAW_JS}</script>")
    return head + "</head>" + body + scripts + "</body></html>\n"


def build_report(folders: Sequence[Path], out: Path, static: bool = False) -> Path:
    """Write the report of run folders, experiment folders (patching, mediation, SAE ...) and sweeps (a
    ``psyling sweep collect`` folder, or the store holding one) to ``out`` (one HTML file); return its path."""
    found = [(Path(d), collect_folder(Path(d))) for d in folders]
    sweeps = [read_sweep(collected) for _, collected in found if collected is not None]
    run_dirs, experiment_dirs = split_folders([folder for folder, collected in found if collected is None])
    runs = read_report_runs(run_dirs) if run_dirs or not sweeps else []
    page = render(runs, static, read_experiments(experiment_dirs), sweeps)
    return atomic_write(Path(out), lambda tmp: tmp.write_text(page, encoding="utf-8"))
