"""The runs of an HTML report read into plain tables: leaderboard, designs, region profiles, human comparisons and
reproducibility records (``psyling.report.html`` renders them)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd

from ..errors import PsylingError
from ..runs import ANALYSIS, read_manifest, read_run, read_table, run_sets
from ..stats.human import mean_ci
from ..stimuli.formula import FormulaError, Node, Term, parse_formula
from .plots import empty_regions

ANALYSIS_READ = ("comparison", "mixed", "verdicts")


@dataclass
class ReportRun:
    """One run of the report: its folder, label (model id, made unique), manifest and tables."""
    path: Path
    label: str
    manifest: dict[str, Any]
    tables: dict[str, pd.DataFrame]
    critical: dict[str, str] = field(default_factory=dict)  # set -> the human block's region

    def table(self, name: str) -> Optional[pd.DataFrame]:
        """A table of the run (``summary``, ``regions``, ``comparison`` ...), or None when the run has none."""
        return self.tables.get(name)

    def set_names(self) -> list[str]:
        """The run's sets in run order."""
        return [s["name"] for s in self.manifest.get("stimuli", {}).get("sets", [])]

    def conditions(self, set_name: str) -> list[str]:
        """The set's conditions in the order of the stimulus file."""
        for entry in self.manifest.get("stimuli", {}).get("sets", []):
            if entry["name"] == set_name:
                return list(entry.get("conditions", []))
        return []


def _analysis_tables(run_dir: Path) -> dict[str, pd.DataFrame]:
    """The run's analysis tables that exist (``psyling analyze`` writes them)."""
    found = {}
    for name in ANALYSIS_READ:
        suffix = "csv" if name == "verdicts" else "parquet"
        if (run_dir / ANALYSIS / f"{name}.{suffix}").is_file():
            found[name] = read_table(run_dir, f"{ANALYSIS}/{name}")
    return found


def _critical_regions(manifest: dict[str, Any], run_dir: Path, tables: dict[str, pd.DataFrame]) -> dict[str, str]:
    """Set -> critical region: the analysis' human region, else the reloaded stimulus set's human block."""
    comparison = tables.get("comparison")
    if comparison is not None and "human_region" in comparison:
        return {r.set: r.human_region for r in comparison.itertuples() if isinstance(r.human_region, str)
                and r.human_region}
    try:
        sets, _ = run_sets(manifest, run_dir=run_dir)
    except PsylingError:
        return {}
    return {s.name: s.human.region for s in sets if s.human and s.human.region in s.regions}


def read_report_run(run_dir: Path, label: str) -> ReportRun:
    """Read one run folder (manifest, summary, regions, predictions and its analysis tables when present)."""
    run_dir = Path(run_dir)
    manifest, tables = read_run(run_dir)
    tables = {"summary": read_table(run_dir, "summary"), "regions": tables["regions"],
              "predictions": tables["predictions"], **_analysis_tables(run_dir)}
    return ReportRun(run_dir, label, manifest, tables, _critical_regions(manifest, run_dir, tables))


def read_report_runs(run_dirs: Sequence[Path]) -> list[ReportRun]:
    """The runs in the order given, each labelled by its model id (with its folder name when ids repeat)."""
    if not run_dirs:
        raise PsylingError("psyling report: give at least one run directory")
    ids = [read_manifest(d).get("model", {}).get("id", Path(d).name) for d in run_dirs]
    labels = [f"{i} ({Path(d).name})" if ids.count(i) > 1 else i for i, d in zip(ids, run_dirs)]
    if len(set(labels)) < len(labels):
        labels = [f"{label} [{k + 1}]" for k, label in enumerate(labels)]
    return [read_report_run(Path(d), label) for d, label in zip(run_dirs, labels)]


def report_sets(runs: Sequence[ReportRun]) -> list[str]:
    """Every set of the report, in the order the runs list them."""
    return list(dict.fromkeys(name for run in runs for name in run.set_names()))


def leaderboard(runs: Sequence[ReportRun]) -> pd.DataFrame:
    """One row per set and model: accuracy with its Wilson 95% CI and the analysis' verdict where present."""
    rows = []
    for run in runs:
        summary = run.table("summary")
        verdicts = run.table("verdicts")
        said = {} if verdicts is None else dict(zip(verdicts["set"], verdicts["verdict"]))
        for r in summary.itertuples():
            rows.append({"set": r.set, "model": run.label, "n_items": int(r.n_items), "accuracy": r.accuracy,
                         "ci_low": r.ci_low, "ci_high": r.ci_high, "verdict": said.get(r.set, "")})
    return pd.DataFrame(rows, columns=["set", "model", "n_items", "accuracy", "ci_low", "ci_high", "verdict"])


def design(run: ReportRun, set_name: str) -> pd.DataFrame:
    """The set's design: one row per condition, one column per region, holding the first item's text."""
    regions = run.table("regions")
    cells = regions[regions["set"] == set_name]
    first = cells[cells["item"] == cells["item"].iloc[0]]
    table = first.pivot_table(index="condition", columns="region_number", values="text", aggfunc="first")
    names = first.drop_duplicates("region_number").set_index("region_number")["region"]
    table.columns = [names[k] for k in table.columns]
    order = [c for c in run.conditions(set_name) if c in table.index] or sorted(table.index)
    return table.loc[order].reset_index()


def profile(run: ReportRun, set_name: str) -> pd.DataFrame:
    """Mean region surprisal per condition and region over items with its t 95% CI (regions without text left
    out, as in the PNG profile): columns condition, region_number, region, n, mean, ci_low, ci_high."""
    regions = run.table("regions")
    cells = regions[regions["set"] == set_name]
    cells = cells.assign(surprisal=cells["surprisal"].mask(empty_regions(cells)))
    names = cells.drop_duplicates("region_number").set_index("region_number")["region"]
    rows = []
    for cond in [c for c in run.conditions(set_name) if c in set(cells["condition"])]:
        for number in sorted(names.index):
            values = cells.loc[(cells["condition"] == cond) & (cells["region_number"] == number), "surprisal"]
            mean, low, high, _ = mean_ci(values.dropna().to_numpy())
            rows.append({"condition": cond, "region_number": int(number), "region": names[number],
                         "n": int(values.notna().sum()), "mean": mean, "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows, columns=["condition", "region_number", "region", "n", "mean", "ci_low", "ci_high"])


def item_points(run: ReportRun, set_name: str, region: str) -> pd.DataFrame:
    """Each item's surprisal at ``region`` per condition (a region without text is NaN, not a measurement):
    columns condition, item, item_index (the item's position in the run), surprisal; conditions in set order."""
    regions = run.table("regions")
    cells = regions[(regions["set"] == set_name) & (regions["region"] == region)]
    cells = cells.assign(surprisal=cells["surprisal"].mask(empty_regions(cells)))
    position = {item: k for k, item in enumerate(dict.fromkeys(cells["item"]))}
    rows = [cells[cells["condition"] == cond] for cond in run.conditions(set_name)]
    table = pd.concat(rows) if rows else cells.iloc[:0]
    points = pd.DataFrame({"condition": table["condition"], "item": table["item"],
                           "item_index": table["item"].map(position), "surprisal": table["surprisal"]})
    return points.reset_index(drop=True)


def _terms(node: Node) -> list[Term]:
    """The (region; %condition%) terms of a parsed formula, left to right."""
    if isinstance(node, Term):
        return [node]
    return [t for child in ("operand", "left", "right") if hasattr(node, child) for t in _terms(getattr(node, child))]


def predicted_region(run: ReportRun, set_name: str) -> str:
    """The first named (or numbered) region the set's predictions compare, or "" when they only use ``*``."""
    regions = run.table("regions")
    names = regions.loc[regions["set"] == set_name].drop_duplicates("region_number")
    by_number = {str(k): r for k, r in zip(names["region_number"], names["region"])}
    predictions = run.table("predictions")
    for formula in dict.fromkeys(predictions.loc[predictions["set"] == set_name, "prediction"]):
        try:
            terms = _terms(parse_formula(formula))
        except FormulaError:
            continue
        for term in terms:
            region = by_number.get(term.region.strip(), term.region.strip())
            if region in set(names["region"]):
                return region
    return ""


def human_comparison(runs: Sequence[ReportRun], set_name: str) -> pd.DataFrame:
    """Per model: the effect in bits, the prediction in the human unit and the published human effect (empty when
    no run has an analysis with a human size for the set)."""
    columns = ["model", "effect", "model_bits", "model_ci_low", "model_ci_high", "predicted", "predicted_ci_low",
               "predicted_ci_high", "unit", "human_size", "human_ci_low", "human_ci_high", "present", "direction"]
    rows = []
    for run in runs:
        comparison = run.table("comparison")
        if comparison is None:
            continue
        for r in comparison[comparison["set"] == set_name].to_dict("records"):
            if r.get("human_size") is not None and np.isfinite(r["human_size"]):
                rows.append({"model": run.label, **{c: r.get(c) for c in columns[1:]}})
    return pd.DataFrame(rows, columns=columns)


def reproducibility(run: ReportRun) -> dict[str, Any]:
    """What identifies the run: model, weights digest, tokenizer, settings, invariance check and stimulus files."""
    manifest = run.manifest
    model = manifest.get("model", {})
    settings = {k: v for k, v in manifest.get("settings", {}).items() if k not in ("cache", "prefix_reuse")}
    return {"run": run.path.name, "model": model, "sha256": model.get("sha256", ""),
            "tokenizer": manifest.get("tokenizer", {}), "settings": settings,
            "invariance_check": manifest.get("invariance_check", {}),
            "environment": manifest.get("environment", {}), "psyling_version": manifest.get("psyling_version", ""),
            "files": manifest.get("stimuli", {}).get("files", {})}
