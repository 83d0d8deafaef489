"""Collecting a sweep store: leaderboard, learning curves (set and pooled phenomenon) and emergence, on a fake
store whose item passes are known."""
import json
import math
from pathlib import Path

import pandas as pd
import pytest

import psyling

from psyling.stats.accuracy import wilson_interval
from psyling.sweep.collect import CollectOptions, battery_score_table, collect, emergence_table, leaderboard, learning_curves
from psyling.sweep.spec import BatteryScore

SET_SIZES = {"s1": 4, "s2": 6}
PHENOMENON = {"s1": "agreement", "s2": "agreement"}
# (model, step) -> passing items per set: the first k items of the set pass, the others fail
PASSING = {("a", 100): {"s1": 0, "s2": 0}, ("a", 1000): {"s1": 2, "s2": 3}, ("a", 10000): {"s1": 4, "s2": 6},
           ("b", 100): {"s1": 2, "s2": 1}, ("b", 1000): {"s1": 2, "s2": 5}, ("b", 10000): {"s1": 2, "s2": 2},
           ("c", 100): {"s1": 1, "s2": 1}, ("c", 1000): {"s1": 3, "s2": 4}}  # c: only two checkpoints
CELL_KEYS = ["model", "revision", "set", "step", "settings", "cell"]


class FakeStore:
    """The two reads collect uses, shaped as SweepStore returns them (partition columns + step/settings/cell)."""

    def __init__(self, passing=PASSING, root="store"):
        self.passing, self.root = passing, Path(root)

    def done_digests(self) -> set:
        return {cell["cell"] for cell, _ in self._cells()}

    def _cells(self):
        for (model, step), counts in self.passing.items():
            for set_name, k in counts.items():
                cell = {"model": model, "revision": f"step{step}", "set": set_name, "step": step,
                        "settings": "default", "cell": f"{model}-{step}-{set_name}"}
                yield cell, k

    def cells(self) -> pd.DataFrame:
        return pd.DataFrame([cell for cell, _ in self._cells()], columns=CELL_KEYS)

    def read_table(self, name: str) -> pd.DataFrame:
        rows = []
        for cell, k in self._cells():
            n = SET_SIZES[cell["set"]]
            if name == "items":
                rows += [{**cell, "item": str(i), "passed": i < k} for i in range(n)]
            else:
                low, high = wilson_interval(k, n)
                rows.append({**cell, "phenomenon": PHENOMENON[cell["set"]], "n_items": n, "accuracy": k / n,
                             "ci_low": low, "ci_high": high, "n_unevaluable": 0})
        return pd.DataFrame(rows)


def test_leaderboard_accuracies_equal_the_hand_counts():
    board = leaderboard(FakeStore())
    assert len(board) == len(PASSING) * len(SET_SIZES)
    for row in board.itertuples():
        k, n = PASSING[(row.model, row.step)][row.set], SET_SIZES[row.set]
        assert (row.n_items, row.n_passed, row.phenomenon) == (n, k, "agreement")
        assert row.accuracy == pytest.approx(k / n)
        assert (row.ci_low, row.ci_high) == pytest.approx(wilson_interval(k, n))
    s2 = board[board["set"] == "s2"]
    assert s2.iloc[0][["model", "step", "rank"]].tolist() == ["a", 10000, 1]  # 6/6 is the best on s2


def test_phenomenon_pools_the_items_of_its_sets():
    curves = learning_curves(FakeStore())
    pooled = curves[curves["level"] == "phenomenon"]
    assert set(pooled["name"]) == {"agreement"} and len(pooled) == len(PASSING)
    for row in pooled.itertuples():
        k = sum(PASSING[(row.model, row.step)].values())
        assert (row.n_items, row.n_passed) == (10, k)
        assert row.accuracy == pytest.approx(k / 10)
        assert (row.ci_low, row.ci_high) == pytest.approx(wilson_interval(k, 10))
    b_1000 = pooled[(pooled["model"] == "b") & (pooled["step"] == 1000)].iloc[0]
    assert b_1000.accuracy == pytest.approx(0.7) != pytest.approx((2 / 4 + 5 / 6) / 2)  # pooled, not averaged
    a_set = curves[(curves["level"] == "set") & (curves["model"] == "a") & (curves["name"] == "s1")]
    assert a_set["step"].tolist() == [100, 1000, 10000] and a_set["accuracy"].tolist() == [0.0, 0.5, 1.0]


def test_emergence_table_fits_three_checkpoints_and_notes_fewer():
    table = emergence_table(FakeStore(), n_boot=10, seed=0).set_index(["model", "level", "name"])
    assert len(table) == 3 * 3  # three models × (two sets + one phenomenon)
    few = table.loc["c"]
    assert few["note"].str.startswith("fewer than 3 checkpoints").all()
    assert few["step"].isna().all() and not few["converged"].any() and (few["n_checkpoints"] == 2).all()
    rising = table.loc[("a", "set", "s1")]  # 0, 1/2, 1 at log10 steps 2, 3, 4: midpoint 10^3
    assert rising["converged"] and rising["log10_step"] == pytest.approx(3.0, abs=0.05)
    assert rising["n_checkpoints"] == 3 and rising["n_items"] == 4
    flat = table.loc[("b", "set", "s1")]  # 2 of 4 at every step
    assert not flat["converged"] and "flat curve" in flat["note"] and math.isnan(flat["step"])


def test_collect_writes_tables_that_read_back_equal(tmp_path):
    store = FakeStore(root=tmp_path / "store")
    scores = (BatteryScore("b", {"exclude": ["s2"]}, ("s1", "s2")),)
    paths = collect(store, tmp_path / "collect", CollectOptions(n_boot=5, seed=0, scores=scores, sweep="fake"))
    names = ["leaderboard", "learning_curves", "emergence", "battery_scores"]
    assert sorted(paths) == sorted([f"{n}.{ext}" for n in names for ext in ("parquet", "csv")] + ["manifest.json"])
    manifest = json.loads(paths["manifest.json"].read_text())
    assert manifest == {"kind": "sweep-collect", "sweep": "fake", "store": str(tmp_path.resolve() / "store"),
                        "cells_done": len(PASSING) * len(SET_SIZES), "n_boot": 5, "seed": 0,
                        "battery_scores": ["b"], "tables": names, "psyling_version": psyling.__version__}
    assert sorted(p.name for p in (tmp_path / "collect").iterdir()) == sorted(paths)  # no temporary files left
    expected = {"leaderboard": leaderboard(store), "learning_curves": learning_curves(store),
                "emergence": emergence_table(store, n_boot=5, seed=0),
                "battery_scores": battery_score_table(store, scores)}
    for name, table in expected.items():
        pd.testing.assert_frame_equal(pd.read_parquet(paths[f"{name}.parquet"]), table)
        from_csv = pd.read_csv(paths[f"{name}.csv"])
        assert list(from_csv.columns) == list(table.columns) and len(from_csv) == len(table)
        numeric = table.select_dtypes("number").columns
        pd.testing.assert_frame_equal(from_csv[numeric], table[numeric], check_dtype=False)


def test_an_empty_store_gives_empty_tables():
    empty = FakeStore(passing={})
    assert leaderboard(empty).empty and learning_curves(empty).empty
    table = emergence_table(empty, n_boot=5)
    assert table.empty and "note" in table.columns
