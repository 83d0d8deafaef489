"""The Overview of the HTML report: the leaderboard (sets × models, accuracy with Wilson CIs and the verdicts of
``psyling analyze``), accuracy per phenomenon, the battery's SyntaxGym score and circuits where its file defines
them, and a compact verdict table (present? human direction? size vs humans?)."""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import pandas as pd

from ..errors import PsylingError
from ..runs import run_sets
from ..stats import battery_score_rows, item_passes
from ..stats.compare import accuracy_by
from ..stimuli import load_battery
from .html_parts import html_table, text
from .report_data import ReportRun, leaderboard, report_sets

PHENOMENON_COLUMNS = ["phenomenon", "model", "n_sets", "n_items", "n_passed", "accuracy", "ci_low", "ci_high",
                      "mean_of_sets"]
VERDICT_COLUMNS = ["set", "model", "effect_present", "human_direction", "size_vs_human", "ratio"]


def set_phenomena(run: ReportRun) -> dict[str, str]:
    """Set -> phenomenon: from the analysis' comparison table, else from the reloaded stimulus files; a set whose
    files cannot be reloaded is its own phenomenon."""
    comparison = run.table("comparison")
    if comparison is not None and "phenomenon" in comparison:
        found = {r.set: r.phenomenon for r in comparison.itertuples() if isinstance(r.phenomenon, str) and r.phenomenon}
    else:
        try:
            found = {s.name: s.phenomenon for s in run_sets(run.manifest, run_dir=run.path)[0] if s.phenomenon}
        except PsylingError:
            found = {}
    return {name: found.get(name, name) for name in run.set_names()}


def phenomenon_accuracy(runs: Sequence[ReportRun]) -> pd.DataFrame:
    """Per phenomenon and model: item-weighted accuracy (items pooled over the phenomenon's sets) with its Wilson
    95% CI, and the unweighted mean of the sets' accuracies (``mean_of_sets``)."""
    parts = []
    for run in runs:
        meta = pd.DataFrame(list(set_phenomena(run).items()), columns=["set", "phenomenon"])
        predictions = run.table("predictions")
        predictions = predictions[predictions["set"].isin(meta["set"])]
        if predictions.empty:
            continue
        pooled = accuracy_by(predictions, meta, by="phenomenon")
        per_set = run.table("summary").merge(meta, on="set").groupby("phenomenon")["accuracy"].mean()
        parts.append(pooled.assign(model=run.label, mean_of_sets=pooled["phenomenon"].map(per_set)))
    if not parts:
        return pd.DataFrame(columns=PHENOMENON_COLUMNS)
    return pd.concat(parts, ignore_index=True)[PHENOMENON_COLUMNS]


def run_battery(run: ReportRun) -> str:
    """The battery the run was given ("" when none)."""
    return run.manifest.get("config", {}).get("battery") or run.manifest.get("stimuli", {}).get("battery") or ""


def battery_score(run: ReportRun) -> Optional[pd.DataFrame]:
    """The run's SG score and circuit scores (rows: score, battery, n_suites, value) where its battery defines a
    score; None otherwise (no battery, no ``score:`` block, a battery that no longer loads, or no predictions)."""
    name = run_battery(run)
    try:
        config = load_battery(name).score if name else {}
    except PsylingError:
        return None
    predictions = run.table("predictions")
    if not config or predictions is None or predictions.empty:
        return None
    return battery_score_rows(item_passes(predictions), name, config)


def sg_score_table(runs: Sequence[ReportRun]) -> pd.DataFrame:
    """SG score and circuits (rows) by model (one value column per model); empty when no run's battery defines a
    score."""
    parts = [table.assign(model=run.label) for run in runs if (table := battery_score(run)) is not None]
    if not parts:
        return pd.DataFrame()
    long = pd.concat(parts, ignore_index=True)
    keys = ["score", "battery", "n_suites"]
    wide = long.set_index([*keys, "model"])["value"].unstack("model")
    order = pd.MultiIndex.from_frame(long[keys].drop_duplicates())
    return wide.reindex(index=order, columns=[r.label for r in runs if r.label in wide.columns]).reset_index()


def size_vs_human(row: dict[str, Any]) -> str:
    """The size verdict in words ("" when the set has no human size in the model's predicted unit)."""
    verdict = row.get("size_verdict")
    return verdict if isinstance(verdict, str) else ""


def verdicts(runs: Sequence[ReportRun]) -> pd.DataFrame:
    """Per analysed set and model: effect present (yes/no/reversed), direction relative to humans, size vs humans
    and the ratio predicted / human (NaN where there is none)."""
    rows = []
    for run in runs:
        comparison = run.table("comparison")
        for r in ([] if comparison is None else comparison.to_dict("records")):
            ratio = r.get("ratio")
            rows.append({"set": r["set"], "model": run.label, "effect_present": r.get("present") or "",
                         "human_direction": r.get("direction") or "", "size_vs_human": size_vs_human(r),
                         "ratio": float(ratio) if ratio is not None else math.nan})
    return pd.DataFrame(rows, columns=VERDICT_COLUMNS)


def verdict_cell(row: pd.Series) -> str:
    """One compact cell: "present: yes; as in humans; comparable to humans (ratio 0.85)", or why there is none."""
    if not row["effect_present"]:
        return "no human effect to compare"
    cell = f"present: {row['effect_present']}; {row['human_direction']}"
    if row["size_vs_human"]:
        cell += f"; {row['size_vs_human']}"
        cell += f" (ratio {row['ratio']:.2f})" if math.isfinite(row["ratio"]) else ""
    return cell


def accuracy_with_verdicts(runs: Sequence[ReportRun]) -> pd.DataFrame:
    """The long leaderboard: accuracy [Wilson CI], analyze's one-line verdict and its parts in columns."""
    parts = verdicts(runs).drop(columns=["ratio"])
    board = leaderboard(runs).merge(parts, on=["set", "model"], how="left")
    text_columns = ["effect_present", "human_direction", "size_vs_human"]
    board[text_columns] = board[text_columns].fillna("")
    return board


def wide_by_model(table: pd.DataFrame, index: str, cell: Sequence[str], rows: Sequence[str],
                  runs: Sequence[ReportRun]) -> pd.DataFrame:
    """``cell`` (one string per row of ``table``) as INDEX × model, rows and models in report order."""
    wide = table.assign(cell=list(cell)).pivot(index=index, columns="model", values="cell")
    return wide.reindex(index=list(rows), columns=[r.label for r in runs]).astype(object).fillna("").reset_index()


def ci_cells(table: pd.DataFrame) -> list[str]:
    """Accuracy [low, high] strings."""
    return [f"{a:.3f} [{lo:.3f}, {hi:.3f}]" for a, lo, hi in zip(table["accuracy"], table["ci_low"], table["ci_high"])]


def captioned(title: str, caption: str, table: pd.DataFrame, name: str, table_id: str) -> str:
    """A heading, a one-sentence caption and the sortable table with its CSV link."""
    return f"<h3>{text(title)}</h3><p class=\"caption\">{text(caption)}</p>" + html_table(table, name, table_id)


def phenomena_part(runs: Sequence[ReportRun]) -> str:
    """Phenomena × models, item-weighted accuracy [Wilson CI], and the long table with the mean of sets."""
    table = phenomenon_accuracy(runs)
    if table.empty:
        return ""
    wide = wide_by_model(table, "phenomenon", ci_cells(table), list(dict.fromkeys(table["phenomenon"])),
                         runs)
    return (captioned("Accuracy per phenomenon", "Item-weighted accuracy per phenomenon (items pooled over its sets, "
                      "an item passes when all its predictions hold) with its Wilson 95% CI, by model.", wide,
                      "phenomena", "phenomena")
            + captioned("Accuracy per phenomenon, both averages", "Per phenomenon and model: item-weighted accuracy "
                        "(accuracy, Wilson 95% CI ci_low to ci_high) and the unweighted mean of its sets' accuracies "
                        "(mean_of_sets).", table, "phenomena_long", "phenomena-long"))


def sg_score_part(runs: Sequence[ReportRun]) -> str:
    """The SG score and circuits table, or nothing when no run's battery defines a score."""
    table = sg_score_table(runs)
    if table.empty:
        return ""
    return captioned("SyntaxGym score and circuits", "SG score (Hu et al. 2020): the mean of suite accuracies over "
                     "the battery's scored suites; each circuit averages the accuracies of its suites; one column "
                     "per model.", table, "sg_score", "sg-score")


def verdicts_part(runs: Sequence[ReportRun]) -> str:
    """Sets × models of analyze's verdicts, or nothing when no run has been analysed."""
    table = verdicts(runs)
    if table.empty:
        return ""
    sets = [s for s in report_sets(runs) if s in set(table["set"])]
    wide = wide_by_model(table, "set", [verdict_cell(r) for _, r in table.iterrows()], sets, runs)
    return captioned("Verdicts of psyling analyze", "Per set and model: is the model's effect present (BH q < 0.05), "
                     "does it go the human way, and how big is the predicted effect next to the human one (ratio "
                     "predicted / human).", wide, "verdicts", "verdicts")


def overview(runs: Sequence[ReportRun]) -> str:
    """The Overview section: leaderboard, accuracy with verdicts, phenomena, SG score and verdicts."""
    board = accuracy_with_verdicts(runs)
    wide = wide_by_model(board, "set", ci_cells(board), report_sets(runs), runs)
    return ('<section id="overview"><h2>Overview</h2><p>Click a column header to sort a table.</p>'
            + captioned("Leaderboard", "Accuracy per set (share of items whose predictions all hold) with its "
                        "Wilson 95% CI, by model.", wide, "leaderboard", "leaderboard")
            + captioned("Accuracy with Wilson 95% CIs and verdicts", "Per set and model: items, accuracy with its "
                        "Wilson 95% CI, and the verdict of psyling analyze in one line and "
                        "split into its parts, where the run has been analysed.", board, "accuracy", "accuracy")
            + phenomena_part(runs) + sg_score_part(runs) + verdicts_part(runs) + "</section>")
