"""PNG plots of sparse autoencoders: L0 against the fraction of variance unexplained (one point per SAE or
checkpoint), and per set the d_z of the latents that carry its contrasts (``contrast_latents``'s table)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import PsylingError
from .plots import load_pyplot

TOP_REQUIRED = ("set", "factor", "level_a", "level_b", "latent", "d_z", "q_value")
ALPHA = 0.05


def _require(table: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise PsylingError(f"{what}: table lacks column(s) {', '.join(missing)}")
    if table.empty:
        raise PsylingError(f"{what}: the table has no rows")


def l0_fvu_figure(metrics: pd.DataFrame):
    """The L0 (log scale) vs FVU scatter of ``metrics`` (columns l0, fvu, label), one labelled point per row."""
    _require(metrics, ("l0", "fvu", "label"), "L0 vs FVU plot")
    l0 = metrics["l0"].to_numpy(dtype=float)
    fvu = metrics["fvu"].to_numpy(dtype=float)
    if not (np.isfinite(l0) & (l0 > 0) & np.isfinite(fvu)).all():
        raise PsylingError("L0 vs FVU plot: l0 must be positive and l0, fvu finite in every row")
    plt = load_pyplot()
    fig, ax = plt.subplots(figsize=(5.0, 3.8))
    ax.scatter(l0, fvu, s=24, color="tab:blue", zorder=3)
    for x, y, label in zip(l0, fvu, metrics["label"].astype(str)):
        ax.annotate(label, (x, y), xytext=(4, 3), textcoords="offset points", fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("L0 (active latents per token, log scale)")
    ax.set_ylabel("FVU (fraction of variance unexplained)")
    ax.set_title(f"sparsity vs reconstruction ({len(metrics)} SAEs)", fontsize=9)
    ax.grid(True, which="both", color="0.9", lw=0.6, zorder=0)
    fig.tight_layout()
    return fig


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    load_pyplot().close(fig)
    return Path(path)


def plot_l0_fvu(metrics: pd.DataFrame, path: Path) -> Path:
    """Write ``l0_fvu_figure`` to ``path`` (PNG)."""
    return _save(l0_fvu_figure(metrics), path)


def top_rows(rows: pd.DataFrame, n: int) -> pd.DataFrame:
    """The first ``n`` latents by q (smallest first), then |d_z| (largest first)."""
    order = np.lexsort((-rows["d_z"].abs().fillna(-1).to_numpy(), rows["q_value"].fillna(np.inf).to_numpy()))
    return rows.iloc[order[:n]]


def top_latents_figure(table: pd.DataFrame, set_name: str, n: int = 10, alpha: float = ALPHA):
    """Bars of d_z of set ``set_name``'s top ``n`` latents, one panel per factor and level pair; each bar's tick
    names the latent and its q, and bars with q < ``alpha`` are blue with a star."""
    _require(table, TOP_REQUIRED, "top latents plot")
    rows = table[table["set"] == set_name]
    if rows.empty:
        raise PsylingError(f"top latents plot: no rows for set {set_name!r}")
    contrasts = list(dict.fromkeys(zip(rows["factor"], rows["level_a"], rows["level_b"])))
    plt = load_pyplot()
    fig, axes = plt.subplots(len(contrasts), 1, squeeze=False,
                             figsize=(max(5.0, 0.55 * n + 2), 2.9 * len(contrasts)))
    for ax, (factor, level_a, level_b) in zip(axes[:, 0], contrasts):
        top = top_rows(rows[(rows["factor"] == factor) & (rows["level_a"] == level_a) & (rows["level_b"] == level_b)], n)
        d_z = top["d_z"].to_numpy(dtype=float)
        significant = (top["q_value"] < alpha).to_numpy()
        x = np.arange(len(top))
        ax.bar(x, np.nan_to_num(d_z), color=np.where(significant, "tab:blue", "0.6"))
        for position in np.flatnonzero(significant):
            value = np.nan_to_num(d_z[position])
            ax.annotate("*", (position, value), ha="center", va="bottom" if value >= 0 else "top")
        ax.axhline(0, color="0.3", lw=0.8)
        ticks = [f"{latent}\nq={q:.2g}" for latent, q in zip(top["latent"], top["q_value"])]
        ax.set_xticks(x, ticks, fontsize=7)
        ax.set_ylabel(f"d_z ({level_b} - {level_a})", fontsize=8)
        ax.set_title(f"{set_name}: {factor} (blue, *: q < {alpha:g})", fontsize=9)
    axes[-1, 0].set_xlabel("latent")
    fig.tight_layout()
    return fig


def _file_name(set_name: str) -> str:
    """'sae_top_latents_<set>.png' with every character outside [A-Za-z0-9_.-] replaced by '_'."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"sae_top_latents_{set_name}") + ".png"


def plot_top_latents(table: pd.DataFrame, out: Path, n: int = 10, alpha: float = ALPHA) -> list[Path]:
    """One PNG per set of ``table`` in ``out`` (``sae_top_latents_<set>.png``): ``top_latents_figure``."""
    _require(table, TOP_REQUIRED, "top latents plot")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sets = list(dict.fromkeys(table["set"].astype(str)))
    names = [_file_name(s) for s in sets]
    clash = next((name for name in names if names.count(name) > 1), None)
    if clash:
        raise PsylingError(f"two sets' top-latent plots would both be written to {clash}: rename a set")
    return [_save(top_latents_figure(table, s, n, alpha), out / name) for s, name in zip(sets, names)]
