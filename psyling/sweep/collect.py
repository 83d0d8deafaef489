"""Collect a sweep's store into tables: a leaderboard across models, learning curves per set and phenomenon across
checkpoints, the step at which each set / phenomenon emerges (psyling.stats.emergence), and the scores the sweep's
batteries define (syntaxgym2020's SG score and circuits) per model.

Everything is computed from the store's item-level ``items`` table (set, item, passed per cell); a set's
phenomenon comes from the ``summary`` table. A phenomenon's accuracy pools the items of all its sets (an item is
identified by set and item id)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd

from .. import __version__
from ..fileio import write_csv, write_json, write_parquet
from ..stats.accuracy import wilson_interval
from ..stats.emergence import EmergenceFit, emergence
from ..stats.sg_score import SCORE_COLUMNS, battery_score_rows
from .spec import BatteryScore

MIN_CHECKPOINTS = 3
ACCURACY_COLUMNS = ["n_items", "n_passed", "accuracy", "ci_low", "ci_high"]
LEADERBOARD_COLUMNS = ["model", "revision", "step", "settings", "set", "phenomenon", *ACCURACY_COLUMNS, "rank"]
CURVE_KEYS = ["model", "settings", "level", "name"]
CURVE_COLUMNS = [*CURVE_KEYS, "revision", "step", *ACCURACY_COLUMNS]
FIT_FIELDS = list(EmergenceFit.__dataclass_fields__)
EMERGENCE_COLUMNS = [*CURVE_KEYS, "n_checkpoints", "n_items", *FIT_FIELDS]
ITEM_COLUMNS = ["model", "revision", "step", "settings", "set", "item", "passed"]
RUN_KEYS = ["model", "revision", "step", "settings"]
COLLECT_KIND = "sweep-collect"
COLLECT_TABLES = ("leaderboard", "learning_curves", "emergence", "battery_scores")
BATTERY_SCORE_COLUMNS = [*RUN_KEYS, *SCORE_COLUMNS, "n_suites_in_battery"]


def _items(store) -> pd.DataFrame:
    """The store's evaluable item passes (one row per cell × item) with each set's phenomenon ("" if none);
    empty where no finished cell wrote an items table."""
    items = store.read_table("items")
    if "passed" not in items.columns:
        return pd.DataFrame(columns=[*ITEM_COLUMNS, "phenomenon"])
    items = items.dropna(subset=["passed"]).assign(passed=lambda t: t["passed"].astype(bool))
    items = items.assign(step=pd.to_numeric(items["step"], errors="coerce").astype("Int64"))
    return items[ITEM_COLUMNS].merge(_phenomena(store), on="set", how="left").fillna({"phenomenon": ""})


def _phenomena(store) -> pd.DataFrame:
    """set -> phenomenon, from the summary table (the first non-empty phenomenon a set has)."""
    summary = store.read_table("summary")
    if "phenomenon" not in summary.columns:
        return pd.DataFrame({"set": summary["set"].unique(), "phenomenon": ""})
    named = summary.dropna(subset=["phenomenon"])
    named = named[named["phenomenon"].astype(str) != ""]
    return named.drop_duplicates("set")[["set", "phenomenon"]]


def _accuracy(items: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """n_items, n_passed, accuracy and the Wilson 95% interval per group of ``keys``."""
    grouped = items.groupby(keys, dropna=False, sort=True)["passed"]
    table = pd.DataFrame({"n_items": grouped.size(), "n_passed": grouped.sum().astype(int)}).reset_index()
    table["accuracy"] = table["n_passed"] / table["n_items"]
    bounds = [wilson_interval(int(k), int(n)) for k, n in zip(table["n_passed"], table["n_items"])]
    table["ci_low"], table["ci_high"] = [b[0] for b in bounds], [b[1] for b in bounds]
    return table


def leaderboard(store) -> pd.DataFrame:
    """Accuracy per (model, revision, settings, set), ranked within each set and settings (1 = best)."""
    items = _items(store)
    table = _accuracy(items, ["model", "revision", "step", "settings", "set", "phenomenon"])
    table["rank"] = table.groupby(["set", "settings"])["accuracy"].rank(ascending=False, method="min")
    table["rank"] = table["rank"].astype("Int64")
    return table.sort_values(["set", "settings", "rank", "model", "revision"], ignore_index=True)[
        LEADERBOARD_COLUMNS]


def _levels(items: pd.DataFrame) -> pd.DataFrame:
    """Items labelled by level: once per set (level "set"), once per phenomenon with its sets' items pooled
    (level "phenomenon"; the item id becomes set/item so that pooled items stay distinct)."""
    by_set = items.assign(level="set", name=items["set"])
    named = items[items["phenomenon"] != ""]
    by_phenomenon = named.assign(level="phenomenon", name=named["phenomenon"],
                                 item=named["set"].astype(str) + "/" + named["item"].astype(str))
    return pd.concat([by_set, by_phenomenon], ignore_index=True)


def learning_curves(store) -> pd.DataFrame:
    """Accuracy with its Wilson CI per (model, settings, set or phenomenon, checkpoint), in step order."""
    table = _accuracy(_levels(_items(store)), [*CURVE_KEYS, "step", "revision"])
    return table.sort_values([*CURVE_KEYS, "step", "revision"], ignore_index=True)[CURVE_COLUMNS]


def _emergence_row(keys: tuple, group: pd.DataFrame, n_boot: int, seed: int) -> dict:
    """One emergence row: the fit, or a note where the curve has fewer than MIN_CHECKPOINTS steps."""
    timed = group.dropna(subset=["step"])
    n_steps = timed["step"].nunique()
    row = {**dict(zip(CURVE_KEYS, keys)), "n_checkpoints": n_steps, "n_items": group["item"].nunique()}
    if n_steps < MIN_CHECKPOINTS:
        nan = float("nan")
        note = f"fewer than {MIN_CHECKPOINTS} checkpoints ({n_steps} with a known step)"
        return {**row, **EmergenceFit(nan, nan, nan, nan, nan, nan, nan, False, note, n_steps).to_dict()}
    items = timed.assign(step=timed["step"].astype(float))[["step", "item", "passed"]]
    return {**row, **emergence(items, n_boot=n_boot, seed=seed).to_dict()}


def emergence_table(store, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """The emergence step (sigmoid midpoint over log10 step, item-bootstrap CI) per (model, settings, set or
    phenomenon); a note instead where there are fewer than three checkpoints."""
    groups = _levels(_items(store)).groupby(CURVE_KEYS, sort=True)
    rows = [_emergence_row(keys, group, n_boot, seed) for keys, group in groups]
    return pd.DataFrame(rows, columns=EMERGENCE_COLUMNS)


def battery_score_table(store, scores: Sequence[BatteryScore]) -> pd.DataFrame:
    """Each battery score (e.g. syntaxgym2020's SG score and circuits) per (model, revision, settings), from the
    items of the battery's sets only, as ``psyling run --battery`` computes it, in training-step order (not the
    revision names' order); ``n_suites_in_battery`` is the number of suites the score would average once every
    cell is done (fewer ``n_suites`` means cells missing)."""
    items, parts = _items(store), []
    for score in scores:
        mine = items[items["set"].isin(set(score.sets))]
        expected = len(set(score.sets) - set(score.config.get("exclude", ())))
        for keys, group in mine.groupby(RUN_KEYS, dropna=False, sort=True):
            rows = battery_score_rows(group[["set", "item", "passed"]], score.battery, score.config)
            parts.append(rows.assign(**dict(zip(RUN_KEYS, keys)), n_suites_in_battery=expected))
    if not parts:
        return pd.DataFrame(columns=BATTERY_SCORE_COLUMNS)
    table = pd.concat(parts, ignore_index=True)[BATTERY_SCORE_COLUMNS]
    return table.sort_values(["battery", "model", "step", "revision", "settings"], kind="stable", ignore_index=True)


@dataclass(frozen=True)
class CollectOptions:
    """How to collect: the item-bootstrap resamples and seed of the emergence CIs, the scores the sweep's
    batteries define, and the sweep's name (for the manifest)."""
    n_boot: int = 1000
    seed: int = 0
    scores: tuple[BatteryScore, ...] = ()
    sweep: str = ""


def collect(store, out: Path, options: CollectOptions = CollectOptions()) -> dict[str, Path]:
    """Write leaderboard, learning_curves, emergence and battery_scores as parquet and CSV under ``out``
    (atomically), and a manifest.json (kind ``sweep-collect``: sweep, store, cells, options, version) that
    ``psyling report`` reads; returns {file name: path}."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tables = {"leaderboard": leaderboard(store), "learning_curves": learning_curves(store),
              "emergence": emergence_table(store, n_boot=options.n_boot, seed=options.seed),
              "battery_scores": battery_score_table(store, options.scores)}
    paths = {}
    for name, table in tables.items():
        paths[f"{name}.parquet"] = write_parquet(out / f"{name}.parquet", table)
        paths[f"{name}.csv"] = write_csv(out / f"{name}.csv", table)
    manifest = {"kind": COLLECT_KIND, "sweep": options.sweep, "store": str(Path(store.root).resolve()),
                "cells_done": len(store.done_digests()), "n_boot": options.n_boot, "seed": options.seed,
                "battery_scores": [score.battery for score in options.scores], "tables": list(tables),
                "psyling_version": __version__}
    paths["manifest.json"] = write_json(out / "manifest.json", manifest)
    return paths
