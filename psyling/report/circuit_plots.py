"""PNG heatmaps of activation-patching results: effect per layer and region, and per layer and head.

The input is a tidy summary table with one row per (set, site, region, direction): columns set, site, kind
('resid', 'attn', 'mlp', 'head', 'neuron'), layer, head (-1 when the row is not one head), region ('all' among
them), direction ('denoise' or 'noise'), effect (a recovery or disruption ratio, may be NaN), ci_low, ci_high
and n_items. Layer 0 (the embeddings) is drawn at the bottom, as in a model's stack of blocks."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from ..errors import PsylingError
from .plots import load_pyplot

REQUIRED = ("set", "site", "kind", "layer", "head", "region", "direction", "effect")
COLOURBAR = {"denoise": "recovery R", "noise": "disruption D"}
ANNOTATE_MAX = (40, 8)  # write the values in the cells when the grid has at most this many rows and columns


def _selection(summary: pd.DataFrame, **where: object) -> pd.DataFrame:
    """The rows of ``summary`` whose columns equal ``where``; a one-line error when columns or rows are missing."""
    missing = [c for c in REQUIRED if c not in summary.columns]
    if missing:
        raise PsylingError(f"patching summary lacks column(s) {', '.join(missing)}")
    if where.get("direction") is not None and where["direction"] not in COLOURBAR:
        raise PsylingError(f"unknown patching direction {where['direction']!r} (choose from denoise, noise)")
    mask = np.ones(len(summary), dtype=bool)
    for column, value in where.items():
        mask &= (summary[column] == value).to_numpy()
    if not mask.any():
        chosen = ", ".join(f"{column}={value!r}" for column, value in where.items())
        raise PsylingError(f"patching summary has no rows{' for ' + chosen if chosen else ''}")
    return summary[mask]


def unit_rows(rows: pd.DataFrame) -> pd.Series:
    """Whether each row patches one head or one neuron (a site ``kind.L.N``) rather than a whole site."""
    return (rows["head"].astype(int) >= 0) | (rows["site"].astype(str).str.count(r"\.") == 2)


def value_grid(rows: pd.DataFrame, column: str, column_values: Sequence) -> tuple[np.ndarray, list[int]]:
    """Effects as a [layer, column value] array (NaN where no row) and its layers, ascending."""
    doubled = rows[rows.duplicated(["layer", column], keep=False)]
    if len(doubled):
        first = doubled.iloc[0]
        cell = doubled[(doubled["layer"] == first["layer"]) & (doubled[column] == first[column])]
        raise PsylingError(f"patching summary has {len(cell)} rows for layer {first['layer']} and {column} "
                           f"{first[column]!r} (sites {', '.join(map(str, cell['site']))}): one per cell is needed")
    layers = sorted(int(layer) for layer in rows["layer"].unique())
    table = rows.assign(layer=rows["layer"].astype(int), effect=rows["effect"].astype(float))
    wide = table.pivot(index="layer", columns=column, values="effect")
    return wide.reindex(index=layers, columns=list(column_values)).to_numpy(dtype=float), layers


def _annotate(ax, grid: np.ndarray, limit: float) -> None:
    """Write each finite value in its cell, white on dark colours."""
    for (row, col), value in np.ndenumerate(grid):
        if np.isfinite(value):
            ax.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if abs(value) > 0.6 * limit else "black")


def _draw(grid: np.ndarray, layers: list[int], columns: list[str], path: Path, *, x_label: str,
          direction: str, title: str) -> Path:
    """A diverging heatmap centred at 0 (limits symmetric, at least ±1; NaN grey), layer 0 at the bottom."""
    plt = load_pyplot()
    import matplotlib

    finite = grid[np.isfinite(grid)]
    limit = max(1.0, float(np.abs(finite).max()) if finite.size else 1.0)
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="0.7")
    n_rows, n_cols = grid.shape
    numbered = n_rows <= ANNOTATE_MAX[0] and n_cols <= ANNOTATE_MAX[1]
    row_height = 0.28 if numbered else 0.16
    fig, ax = plt.subplots(figsize=(min(3.0 + 0.8 * n_cols, 20.0), min(1.6 + row_height * n_rows, 24.0)))
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=-limit, vmax=limit, origin="lower",
                      aspect="auto", interpolation="nearest")
    if numbered:
        _annotate(ax, grid, limit)
    step = max(1, int(np.ceil(n_rows / 40)))
    ax.set_yticks(np.arange(0, n_rows, step), [str(layer) for layer in layers[::step]], fontsize=7)
    slanted = n_cols > 4
    ax.set_xticks(np.arange(n_cols), columns, rotation=30 if slanted else 0, ha="right" if slanted else "center",
                  fontsize=7)
    ax.set_ylabel("layer")
    ax.set_xlabel(x_label)
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax).set_label(COLOURBAR[direction])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def _default_title(rows: pd.DataFrame, what: str) -> str:
    """'<set>: <what> (n = <items> items)', the item count where the table has one."""
    counted = "n_items" in rows.columns and rows["n_items"].notna().any()
    items = f" (n = {int(rows['n_items'].max())} items)" if counted else ""
    return f"{rows['set'].iloc[0]}: {what}{items}"


def region_columns(rows: pd.DataFrame, regions_order: Optional[Sequence[str]]) -> list[str]:
    """The regions in ``regions_order``, else in order of first appearance with 'all' last."""
    present = list(dict.fromkeys(rows["region"].astype(str)))
    if regions_order is None:
        return [r for r in present if r != "all"] + (["all"] if "all" in present else [])
    absent = [r for r in regions_order if r not in present]
    if absent:
        raise PsylingError(f"patching summary has no rows for region(s) {', '.join(map(str, absent))}")
    return [str(r) for r in regions_order]


def layer_region_heatmap(summary: pd.DataFrame, path: Path, *, set_name: str, direction: str, kind: str,
                         regions_order: Optional[Sequence[str]] = None, title: Optional[str] = None) -> Path:
    """Effect of patching each layer's whole ``kind`` site (rows; layer 0 at the bottom) in each region
    (columns) of one set and direction. Rows of single heads or neurons are left out (see layer_head_heatmap)."""
    rows = _selection(summary, set=set_name, direction=direction, kind=kind)
    rows = rows[~unit_rows(rows)].assign(region=lambda t: t["region"].astype(str))
    if rows.empty:
        raise PsylingError(f"patching summary has only single-unit rows for set={set_name!r}, "
                           f"direction={direction!r}, kind={kind!r}: no whole-site rows to plot by region")
    columns = region_columns(rows, regions_order)
    grid, layers = value_grid(rows[rows["region"].isin(columns)], "region", columns)
    return _draw(grid, layers, columns, path, x_label="region", direction=direction,
                 title=title or _default_title(rows, f"{kind} patching, {direction}"))


def layer_head_heatmap(summary: pd.DataFrame, path: Path, *, set_name: str, direction: str, region: str,
                       title: Optional[str] = None) -> Path:
    """Effect of patching each attention head (columns) of each layer (rows; the lowest layer at the bottom)
    in one region of one set and direction."""
    rows = _selection(summary, set=set_name, direction=direction, kind="head", region=region)
    rows = rows[rows["head"].astype(int) >= 0].assign(head=lambda t: t["head"].astype(int))
    if rows.empty:
        raise PsylingError(f"patching summary has no single-head rows for set={set_name!r}, "
                           f"direction={direction!r}, region={region!r}")
    heads = list(range(int(rows["head"].max()) + 1))
    grid, layers = value_grid(rows, "head", heads)
    return _draw(grid, layers, [str(h) for h in heads], path, x_label="head", direction=direction,
                 title=title or _default_title(rows, f"heads in region {region}, {direction}"))


def _file_name(*parts: object) -> str:
    """'patching_<parts>.png' with every character outside [A-Za-z0-9_.-] replaced by '_'."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", "_".join(["patching", *map(str, parts)])) + ".png"


def circuit_heatmaps(summary: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Every heatmap the summary holds: a layer x region grid per (set, kind, direction) with whole-site rows
    (``patching_{set}_{kind}_{direction}.png``) and a layer x head grid per (set, region, direction) with
    single-head rows (``patching_{set}_heads_{region}_{direction}.png``). Single neurons get no grid."""
    _selection(summary)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    units = unit_rows(summary)
    plans = [(_file_name(s, k, d), layer_region_heatmap, {"set_name": s, "direction": d, "kind": k})
             for (s, k, d) in dict.fromkeys(zip(summary.loc[~units, "set"], summary.loc[~units, "kind"],
                                                summary.loc[~units, "direction"]))]
    heads = summary[units & (summary["kind"] == "head")]
    plans += [(_file_name(s, "heads", r, d), layer_head_heatmap, {"set_name": s, "direction": d, "region": r})
              for (s, r, d) in dict.fromkeys(zip(heads["set"], heads["region"], heads["direction"]))]
    names = [name for name, _, _ in plans]
    clash = next((name for name in names if names.count(name) > 1), None)
    if clash:
        raise PsylingError(f"two patching heatmaps would both be written to {clash}: rename a set or region")
    return [plot(summary, out_dir / name, **settings) for name, plot, settings in plans]
