"""The report's sweep view, from a ``psyling sweep collect`` folder: the batteries' scores and the leaderboard by
model revision, learning curves (accuracy with its Wilson 95% CI over training steps, the emergence step and its
CI marked) and the emergence table; plotly figures, or PNGs (matplotlib) with ``static``."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import pandas as pd

from ..errors import PsylingError, first_line
from ..sweep.collect import COLLECT_KIND, COLLECT_TABLES, MIN_CHECKPOINTS
from .html_parts import COLOURS, PLOT_CONFIG, csv_link, figure_div, figure_img, finite, html_table, text
from .network import FOLD_ROWS
from .set_pngs import error_lengths, trace_values


@dataclass
class SweepTables:
    """One collect folder: its path, label (the sweep's name), manifest and tables (COLLECT_TABLES)."""
    path: Path
    label: str
    manifest: dict[str, Any]
    tables: dict[str, pd.DataFrame]


def collect_folder(folder: Path) -> Optional[Path]:
    """The collect folder ``folder`` is, or holds as ``collect/`` (a sweep store); None when it is neither."""
    for candidate in (Path(folder), Path(folder) / "collect"):
        try:
            manifest = json.loads((candidate / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(manifest, dict) and manifest.get("kind") == COLLECT_KIND:
            return candidate
    return None


def read_sweep(folder: Path) -> SweepTables:
    """A collect folder's manifest and tables; a one-line error naming a table that is missing or unreadable."""
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    tables = {}
    for name in COLLECT_TABLES:
        path = folder / f"{name}.parquet"
        if not path.is_file():
            raise PsylingError(f"{path}: the sweep's {name} table is missing; run psyling sweep collect again")
        try:
            tables[name] = pd.read_parquet(path)
        except (OSError, ValueError) as exc:
            raise PsylingError(f"{path}: cannot read the sweep's {name} table ({first_line(exc)}); run psyling "
                               f"sweep collect again") from None
    return SweepTables(folder, str(manifest.get("sweep") or folder.parent.name), manifest, tables)


def run_label(table: pd.DataFrame) -> pd.Series:
    """'MODEL REVISION', with ' [SETTINGS]' unless the settings are the defaults."""
    suffix = table["settings"].astype(str).map(lambda s: "" if s == "default" else f" [{s}]")
    return table["model"].astype(str) + " " + table["revision"].astype(str) + suffix


def _wide(table: pd.DataFrame, rows: list[str], value: str) -> pd.DataFrame:
    """``value`` with ``rows`` as rows and one column per run label (by model, then training step)."""
    labelled = table.assign(run=run_label(table))
    wide = labelled.pivot_table(index=rows, columns="run", values=value, aggfunc="first", sort=False)
    order = labelled.sort_values(["model", "step", "revision", "settings"], kind="stable")["run"]
    return wide.reindex(columns=list(dict.fromkeys(order))).reset_index().rename_axis(columns=None)


def _tables_part(sweep: SweepTables) -> str:
    """The battery scores (where a battery defines one) and the leaderboard, each wide with the long CSV."""
    parts, scores, board = [], sweep.tables["battery_scores"], sweep.tables["leaderboard"]
    if not scores.empty:
        parts.append("<h3>Battery scores</h3><p class=\"caption\">The scores the batteries' files define (SG score: "
                     "mean suite accuracy; circuits), per model revision, from each battery's sets only.</p>"
                     + html_table(_wide(scores, ["battery", "score"], "value"), f"{sweep.label}_battery_scores"))
    if not board.empty:
        parts.append("<h3>Leaderboard</h3><p class=\"caption\">Accuracy per set (share of items whose predictions "
                     "all hold) by model revision; the CSV has every Wilson 95% CI and rank.</p>"
                     + html_table(_wide(board, ["set", "phenomenon"], "accuracy"), f"{sweep.label}_leaderboard_wide")
                     + " · the long table, with CIs and ranks: " + csv_link(board, f"{sweep.label}_leaderboard"))
    return "".join(parts)


def curve_level(curves: pd.DataFrame) -> str:
    """The level the learning curves are drawn at: phenomena where any set names one, else sets."""
    return "phenomenon" if (curves["level"] == "phenomenon").any() else "set"


def _drawn_curves(sweep: SweepTables, level: str) -> list[tuple[tuple[str, str], pd.DataFrame, pd.DataFrame]]:
    """Per (model, settings) with at least two known steps: its curves at ``level`` and the emergence rows that
    found a step."""
    curves, fits = sweep.tables["learning_curves"], sweep.tables["emergence"]
    curves = curves[(curves["level"] == level) & curves["step"].notna()]
    found = fits[(fits["level"] == level) & fits["converged"].astype(bool)]
    return [(key, group, found[(found["model"] == key[0]) & (found["settings"] == key[1])])
            for key, group in curves.groupby(["model", "settings"], sort=False) if group["step"].nunique() >= 2]


def _above(upper: pd.Series, lower: pd.Series) -> pd.Series:
    """An error bar's length: ``upper - lower``, 0 where rounding (or a bound at the estimate) makes it negative."""
    return (upper - lower).clip(lower=0.0)


def curve_figure(curves: pd.DataFrame, fits: pd.DataFrame, title: str) -> dict[str, Any]:
    """Accuracy over training steps (log axis), one line per set or phenomenon with Wilson CI bars, and each
    emergence step as a cross with its CI (at the midpoint of the fitted floor and ceiling)."""
    traces = []
    for k, (name, rows) in enumerate(curves.groupby("name", sort=True)):
        colour = COLOURS[k % len(COLOURS)]
        traces.append({"type": "scatter", "mode": "lines+markers", "name": str(name), "legendgroup": str(name),
                       "x": finite(rows["step"].astype(float)), "y": finite(rows["accuracy"]),
                       "error_y": {"type": "data", "array": finite(_above(rows["ci_high"], rows["accuracy"])),
                                   "arrayminus": finite(_above(rows["accuracy"], rows["ci_low"])), "thickness": 1},
                       "line": {"color": colour}, "text": list(rows["revision"].astype(str)),
                       "hovertemplate": "%{text}: step %{x}, accuracy %{y:.3f}<extra>" + text(name) + "</extra>"})
        for fit in fits[fits["name"] == name].itertuples():
            traces.append({"type": "scatter", "mode": "markers", "name": f"{name}: emergence",
                           "legendgroup": str(name), "showlegend": False, "x": [float(fit.step)],
                           "y": [(fit.lo + fit.hi) / 2], "marker": {"symbol": "x", "size": 10, "color": colour},
                           "error_x": {"type": "data", "symmetric": False,
                                       "array": [max(fit.ci_high - fit.step, 0.0)],
                                       "arrayminus": [max(fit.step - fit.ci_low, 0.0)], "thickness": 1}})
    layout = {"title": {"text": title}, "xaxis": {"title": {"text": "training step"}, "type": "log"},
              "yaxis": {"title": {"text": "accuracy (Wilson 95% CI)"}, "range": [-0.02, 1.02]}, "margin": {"t": 50}}
    return {"data": traces, "layout": layout, "config": PLOT_CONFIG}


def curve_png(figure: dict[str, Any], title: str) -> str:
    """``curve_figure``'s traces drawn with matplotlib (the same numbers), as an embedded PNG."""
    from .plots import load_pyplot

    fig, ax = load_pyplot().subplots(figsize=(7.5, 3.8))
    for trace in figure["data"]:
        line = trace["mode"] == "lines+markers"
        error = trace["error_y"] if line else trace["error_x"]
        bars = {"yerr" if line else "xerr": error_lengths(error)}
        colour = trace["line"]["color"] if line else trace["marker"]["color"]
        ax.errorbar(trace_values(trace["x"]), trace_values(trace["y"]), capsize=2, color=colour,
                    marker="o" if line else "x", ms=3 if line else 8, ls="-" if line else "none",
                    label=trace["name"] if line else None, **bars)
    ax.set_xscale("log")
    ax.set(xlabel="training step", ylabel="accuracy (Wilson 95% CI)", ylim=(-0.02, 1.02))
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6, frameon=False, ncol=2)
    fig.tight_layout()
    return figure_img(fig, title)


def _curves_part(sweep: SweepTables, index: int, static: bool) -> str:
    """One learning-curve chart per (model, settings) and the emergence table, or a sentence saying why not."""
    level = curve_level(sweep.tables["learning_curves"])
    drawn = _drawn_curves(sweep, level)
    if not drawn:
        return ("<h3>Learning curves</h3><p class=\"caption\">No model of this sweep has two checkpoints with a "
                "known training step, so there is no learning curve.</p>")
    charts = []
    for k, ((model, settings), curves, fits) in enumerate(drawn):
        title = f"{model}{'' if settings == 'default' else f' [{settings}]'}: accuracy per {level}"
        figure = curve_figure(curves, fits, title)
        charts.append(curve_png(figure, title) if static else figure_div(f"sweep-{index}-curve-{k}", figure))
    fits = sweep.tables["emergence"]
    fitted = fits[fits["n_checkpoints"] >= MIN_CHECKPOINTS]
    table = (html_table(fitted, f"{sweep.label}_emergence") if not fitted.empty else
             f"<p>No emergence step: it needs at least {MIN_CHECKPOINTS} checkpoints with a known step.</p>")
    if len(fitted) > FOLD_ROWS:
        table = f"<details><summary>the table ({len(fitted)} rows)</summary>{table}</details>"
    return ("<h3>Learning curves</h3><p class=\"caption\">Accuracy per " + text(level) + " over training steps "
            "(Wilson 95% CIs); a cross marks the emergence step (the midpoint of a sigmoid over log10 step) with its "
            "item-bootstrap 95% CI.</p>" + "".join(charts) + "<h3>Emergence</h3>" + table)


def sweep_section(sweep: SweepTables, index: int, static: bool) -> str:
    """The section of one collect folder: what it is, its tables, its learning curves."""
    m = sweep.manifest
    about = (f"{m.get('cells_done', '?')} cells from the store {m.get('store', '?')}; emergence CIs from "
             f"{m.get('n_boot', '?')} item-bootstrap resamples (seed {m.get('seed', '?')}); psyling "
             f"{m.get('psyling_version', '?')}.")
    return (f'<section id="sweep-{index}"><h2>Sweep: {text(sweep.label)}</h2><p class="caption">{text(about)}</p>'
            + _tables_part(sweep) + _curves_part(sweep, index, static) + "</section>")


def sweep_sections(sweeps: Sequence[SweepTables], static: bool) -> str:
    """Every collect folder's section, in the order given."""
    return "".join(sweep_section(sweep, k, static) for k, sweep in enumerate(sweeps))
