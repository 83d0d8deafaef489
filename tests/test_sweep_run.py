"""psyling sweep run: the local, process and Ray executors write the same store; a killed driver resumes with only
the missing cells, a killed worker's cell completes on retry, an injected error is recorded while every other cell
finishes, and each (model, revision) is loaded once per worker (psyling/sweep/cells.py, executors.py)."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import psyling
from psyling.sweep import executors
from psyling.sweep.cells import FAILPOINT_ENV
from psyling.sweep.executors import ExecutorConfig, execute
from psyling.sweep.spec import load_sweep
from psyling.sweep.store import SweepStore
from sweep_cases import SETS, TABLES, assert_same_store

def test_local_sweep_equals_a_plain_run_and_reruns_nothing(sweep_file, local_store, tmp_path):
    sweep = load_sweep(sweep_file)
    assert len(sweep.cells) == 8
    again = execute(sweep.cells, local_store, ExecutorConfig("local", progress=False))
    assert again.executed == () and len(again.already_done) == 8
    model = sweep_file.parent / "models" / "gpt2" / "checkpoint-200"
    plain = psyling.run(str(model), stimuli=[SETS[1]], progress=False, max_items=3, cache=False).regions
    stored = local_store.read_table("regions").query(
        "model == 'gpt2' and revision == 'checkpoint-200' and set == 'agreement_simple'")
    stored = stored.sort_values(["item", "condition", "region_number"]).reset_index(drop=True)
    plain = plain.sort_values(["item", "condition", "region_number"]).reset_index(drop=True)
    assert stored["surprisal"].to_numpy() == pytest.approx(plain["surprisal"].to_numpy(), abs=1e-9)
    assert set(local_store.read_table("summary")["step"]) == {100, 200}


def test_each_model_revision_loaded_once_per_worker(local_store):
    cells = local_store.cells()
    loads = cells.groupby(["worker", "model", "revision"])["load_id"].nunique()
    assert (loads == 1).all() and len(loads) == 4


def test_process_executor_writes_the_same_store_one_gpu_per_worker(sweep_file, local_store, tmp_path, monkeypatch):
    monkeypatch.setattr(executors, "visible_gpus", lambda: 2)  # as on a 2-GPU machine: one worker per GPU
    store = SweepStore(tmp_path / "store")
    outcome = execute(load_sweep(sweep_file).cells, store, ExecutorConfig("process", progress=False))
    assert len(outcome.executed) == 8
    assert_same_store(local_store, store)
    cells = store.cells()
    assert cells["worker"].nunique() == 2  # two worker processes shared the four groups
    pinned = cells.groupby("worker")["cuda_visible_devices"].agg(set)
    assert sorted(value for values in pinned for value in values) == ["0", "1"]  # each its own GPU, all along


def test_injected_error_is_recorded_and_the_others_finish(sweep_file, tmp_path, monkeypatch):
    store = SweepStore(tmp_path / "store")
    cells = load_sweep(sweep_file).cells
    monkeypatch.setenv(FAILPOINT_ENV, "raise:agreement_simple")
    outcome = execute(cells, store, ExecutorConfig("local", progress=False))
    assert len(outcome.executed) == 4 and len(outcome.failed) == 4
    failures = store.failures()
    assert len(failures) == 4 and failures["error"].str.contains("injected failure").all()
    assert set(failures["set"]) == {"agreement_simple"} and not failures["resolved"].any()
    monkeypatch.delenv(FAILPOINT_ENV)
    outcome = execute(cells, store, ExecutorConfig("local", progress=False))
    assert len(outcome.executed) == 4 and store.failures()["resolved"].all()


def _sweep_command(sweep_file: Path, store: Path, *extra: str, failpoint: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, FAILPOINT_ENV: failpoint} if failpoint else dict(os.environ)
    env.pop(FAILPOINT_ENV, None) if not failpoint else None
    return subprocess.run([sys.executable, "-m", "psyling.cli", "sweep", "run", str(sweep_file), "--store",
                           str(store), "--quiet", *extra], capture_output=True, text=True, env=env, timeout=600)


def test_killed_driver_resumes_with_only_the_missing_cells(sweep_file, local_store, tmp_path):
    store = tmp_path / "store"
    killed = _sweep_command(sweep_file, store, failpoint="kill-after:3")
    assert killed.returncode == -signal.SIGKILL
    opened = SweepStore(store)
    assert len(opened.done_digests()) == 3
    visible = [p for p in (store / "tables").rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert all(p.stem in opened.done_digests() for p in visible)  # no file of an unfinished cell is visible
    for name in TABLES:
        assert len(pd.read_parquet(store / "tables" / name)) == len(opened.read_table(name))
    resumed = _sweep_command(sweep_file, store)
    assert resumed.returncode == 0, resumed.stderr
    assert "3 already done, 5 run now, 0 failed" in resumed.stdout
    assert_same_store(local_store, SweepStore(store))


def test_killed_worker_process_cell_completes_on_retry(sweep_file, local_store, tmp_path, monkeypatch):
    marker = tmp_path / "killed-once"
    monkeypatch.setenv(FAILPOINT_ENV, f"kill-worker-once:garden_path_npz:{marker}")
    store = SweepStore(tmp_path / "store")
    outcome = execute(load_sweep(sweep_file).cells, store, ExecutorConfig("process", workers=1, progress=False))
    assert marker.exists() and len(outcome.executed) == 8 and not outcome.failed
    assert marker.read_text() in store.done_digests()  # the cell the worker died in was written on retry
    assert_same_store(local_store, store)


def test_plan_status_and_collect_commands_read_the_store(sweep_file, local_store, capsys):
    from psyling.cli import main

    store = ["--store", str(local_store.root)]
    assert main(["sweep", "plan", str(sweep_file), *store]) == 0
    assert "cells: 8 total, 8 done, 0 to run" in capsys.readouterr().out
    assert main(["sweep", "status", str(sweep_file), *store]) == 0
    out = capsys.readouterr().out
    assert "8 of 8 cells done, 0 failed" in out and out.count("checkpoint-") == 4  # one line per model revision
    assert main(["sweep", "collect", str(sweep_file), *store, "--n-boot", "20"]) == 0
    out = capsys.readouterr().out
    board = pd.read_parquet(local_store.root / "collect" / "leaderboard.parquet")
    summary = local_store.read_table("summary")
    assert len(board) == 8 and sorted(board["accuracy"]) == pytest.approx(sorted(summary["accuracy"]))
    for (model, revision), accuracy in board.groupby(["model", "revision"])["accuracy"].mean().items():
        assert f"{model} {revision} [default]: {accuracy:.3f} over 2 sets" in out
    # two checkpoints per model: no curve is fitted
    assert "emergence: no learning curve (it needs a model with at least 3 checkpoints of known step)" in out


def test_status_lists_a_failed_cell_with_its_error(sweep_file, tmp_path, monkeypatch, capsys):
    from psyling.cli import main

    monkeypatch.setenv(FAILPOINT_ENV, "raise:garden_path_npz")
    cells = [c for c in load_sweep(sweep_file).cells if c.model.alias == "gpt2"]
    execute(cells, SweepStore(tmp_path / "store"), ExecutorConfig("local", progress=False))
    assert main(["sweep", "status", str(sweep_file), "--store", str(tmp_path / "store")]) == 0
    out = capsys.readouterr().out
    assert "2 of 8 cells done, 2 failed" in out
    assert out.count("failed: gpt2 checkpoint-") == 2 and "injected failure in set garden_path_npz" in out
