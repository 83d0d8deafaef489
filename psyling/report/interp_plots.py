"""PNG plots of layer-wise analyses (probes, encoding, representational similarity): a metric curve per layer and
bars per site. Tables are tidy (site, layer, metric, value, optional ci_low / ci_high, as from ``probe_layers``)
or wide (site, layer and one column per metric, with optional ``{metric}_ci_low`` / ``{metric}_ci_high``)."""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from ..errors import PsylingError
from ..stimuli.formula import BinOp, Node, Term, evaluate, parse_formula, terms
from .plots import load_pyplot

MAX_ORDERED_TERMS = 8  # prediction_chance enumerates the orderings of at most this many cells (8! = 40,320)

SIGNIFICANCE = ("q_value", "p_value")  # the column marking a site in layer_bars, first present wins


def _long(table: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Rows site, layer, kind, metric, value, ci_low, ci_high for ``metrics`` from a tidy or wide layer table."""
    missing = [c for c in ("site", "layer") if c not in table.columns]
    if missing:
        raise PsylingError(f"layer plot: table lacks column(s) {', '.join(missing)}")
    if {"metric", "value"} <= set(table.columns):
        out = table[table["metric"].isin(metrics)].copy()
        for column in ("ci_low", "ci_high"):
            out[column] = out[column] if column in out.columns else np.nan
    else:
        parts = []
        for metric in metrics:
            if metric in table.columns:
                parts.append(pd.DataFrame({"site": table["site"], "layer": table["layer"], "metric": metric,
                                           "value": table[metric],
                                           "ci_low": table.get(f"{metric}_ci_low", np.nan),
                                           "ci_high": table.get(f"{metric}_ci_high", np.nan)}))
        out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["metric"])
    absent = [m for m in metrics if m not in set(out["metric"])]
    if absent:
        raise PsylingError(f"layer plot: no values for metric(s) {', '.join(absent)}")
    out["kind"] = out["site"].astype(str).str.split(".").str[0]
    return out.sort_values(["layer", "site"], kind="stable")


def _comparisons(node: Node) -> list[BinOp]:
    """The comparisons (< > =) of a formula."""
    if not isinstance(node, BinOp):
        return []
    own = [node] if node.op in ("<", ">", "=") else []
    return own + _comparisons(node.left) + _comparisons(node.right)


def _plain_orderings(trees: list[Node]) -> Optional[list[Term]]:
    """The distinct terms, when every comparison of ``trees`` is between two plain terms (<, >) and there are at
    most ``MAX_ORDERED_TERMS``; else None."""
    found = [c for tree in trees for c in _comparisons(tree)]
    if not found or any(c.op == "=" or not isinstance(c.left, Term) or not isinstance(c.right, Term) for c in found):
        return None
    distinct = list(dict.fromkeys(t for tree in trees for t in terms(tree)))
    return distinct if len(distinct) <= MAX_ORDERED_TERMS else None


def _independent_chance(node: Node) -> float:
    """Chance of a formula with each comparison an independent fair coin (``&``: product, ``|``: either)."""
    if isinstance(node, BinOp) and node.op == "&":
        return _independent_chance(node.left) * _independent_chance(node.right)
    if isinstance(node, BinOp) and node.op == "|":
        left, right = _independent_chance(node.left), _independent_chance(node.right)
        return left + right - left * right
    return 0.5


def prediction_chance(formulas: Sequence[str]) -> float:
    """The accuracy expected by chance when an item passes only if all ``formulas`` hold (as the lens and
    SyntaxGym accuracies count): the fraction of the orderings of the compared (region; condition) cells under
    which all hold, every ordering equally likely (exact when every comparison is between two cells: 0.25 for
    two comparisons of four cells, 1/6 for a < b & b < c); otherwise each comparison is taken as an independent
    fair coin (0.5 per comparison in a conjunction)."""
    trees = [parse_formula(f) for f in formulas]
    if not trees:
        raise PsylingError("chance level: no prediction formulas")
    cells = _plain_orderings(trees)
    if cells is None:
        return float(np.prod([_independent_chance(tree) for tree in trees]))
    held = 0
    orderings = list(itertools.permutations(range(len(cells))))
    for ranks in orderings:
        value = dict(zip(cells, ranks))
        held += all(evaluate(tree, value.__getitem__) for tree in trees)
    return held / len(orderings)


def layer_curve(table: pd.DataFrame, metrics: list[str], path: Path, title: str,
                chance: float | None = None) -> Path:
    """One line per metric (and per site kind: resid, attn, mlp) over layers, with shaded 95% CIs where the table
    has them, and a dashed chance line at ``chance`` or, when None, at the mean ``majority`` baseline of a probe
    table (none when neither exists)."""
    plt = load_pyplot()
    long = _long(table, list(metrics))
    if chance is None and "majority" not in metrics and {"metric", "value"} <= set(table.columns):
        majority = table.loc[table["metric"] == "majority", "value"]
        chance = float(majority.mean()) if len(majority) else None
    kinds = list(dict.fromkeys(long["kind"]))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.18 * long["layer"].nunique() + 3.5), 3.6))
    for metric in metrics:
        for kind in kinds:
            cells = long[(long["metric"] == metric) & (long["kind"] == kind)]
            if cells.empty:
                continue
            label = metric if len(kinds) == 1 else f"{metric} ({kind})"
            line, = ax.plot(cells["layer"], cells["value"], marker="o", ms=3, label=label)
            if cells["ci_low"].notna().any():
                ax.fill_between(cells["layer"], cells["ci_low"], cells["ci_high"], color=line.get_color(),
                                alpha=0.2, lw=0)
    if chance is not None:
        ax.axhline(chance, color="0.4", ls="--", lw=1, label=f"chance ({chance:.2f})")
    ax.set_xlabel("layer (0 = embeddings)")
    ax.set_ylabel(" / ".join(metrics))
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def layer_bars(table: pd.DataFrame, metric: str, path: Path, title: str, level: float = 0.05) -> Path:
    """Bars of ``metric`` per site in layer order (95% CI whiskers where present); a star marks the sites whose
    q-value (else p-value) is below ``level``."""
    plt = load_pyplot()
    long = _long(table, [metric])
    marks = next((m for m in SIGNIFICANCE if m in table.columns or
                  ("metric" in table.columns and (table["metric"] == m).any())), None)
    significant = set()
    if marks is not None:
        flags = _long(table, [marks])
        significant = set(flags.loc[flags["value"] < level, "site"])
    x = np.arange(len(long))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.25 * len(long) + 2), 3.6))
    has_ci = long["ci_low"].notna().to_numpy()
    ax.bar(x, long["value"], color=["tab:blue" if s in significant else "0.6" for s in long["site"]])
    if has_ci.any():
        ax.errorbar(x[has_ci], long["value"][has_ci], fmt="none", ecolor="k", capsize=2,
                    yerr=[(long["value"] - long["ci_low"])[has_ci], (long["ci_high"] - long["value"])[has_ci]])
    for position, (site, value) in enumerate(zip(long["site"], long["value"])):
        if site in significant:
            ax.annotate("*", (position, value), ha="center", va="bottom" if value >= 0 else "top")
    ax.axhline(0, color="0.3", lw=0.8)
    ax.set_xticks(x, long["site"], rotation=90, fontsize=7)
    ax.set_ylabel(metric)
    note = f" (blue, *: {marks} < {level:g})" if marks else ""
    ax.set_title(title + note, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
