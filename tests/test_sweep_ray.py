"""The Ray executor on this machine: ``ray.init(num_cpus=2, num_gpus=2)`` declares two logical GPUs, so the sweep
runs on two GPU actors; the store equals the local executor's, each (model, revision) is loaded once per actor,
and an actor killed mid-cell is restarted and the cell completes on retry."""
import pandas as pd
import pytest
import ray

from psyling.sweep.cells import FAILPOINT_ENV
from psyling.sweep.executors import ExecutorConfig, execute
from psyling.sweep.spec import load_sweep
from psyling.sweep.store import SweepStore
from sweep_cases import assert_same_store


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


def test_ray_store_equals_local_and_loads_once_per_actor(cluster, sweep_file, local_store, tmp_path):
    store = SweepStore(tmp_path / "store")
    outcome = execute(load_sweep(sweep_file).cells, store, ExecutorConfig("ray", progress=False))
    assert len(outcome.executed) == 8 and not outcome.failed
    assert_same_store(local_store, store)
    cells = store.cells()
    assert cells["worker"].nunique() == 2  # one actor per logical GPU
    loads = cells.groupby(["worker", "model", "revision"])["load_id"].nunique()
    assert (loads == 1).all() and len(loads) == 4
    assert (cells.groupby(["model", "revision"])["worker"].nunique() == 1).all()  # a group stays on one actor
    pinned = cells.groupby("worker")["cuda_visible_devices"].agg(set)  # Ray gives each actor its own GPU
    assert sorted(value for values in pinned for value in values) == ["0", "1"]


def test_ray_actor_killed_mid_cell_is_retried(cluster, sweep_file, local_store, tmp_path, monkeypatch):
    marker = tmp_path / "killed-once"
    monkeypatch.setenv(FAILPOINT_ENV, f"kill-worker-once:agreement_simple:{marker}")
    store = SweepStore(tmp_path / "store")
    outcome = execute(load_sweep(sweep_file).cells, store, ExecutorConfig("ray", progress=False))
    assert marker.exists() and len(outcome.executed) == 8 and not outcome.failed
    assert marker.read_text() in store.done_digests()
    assert_same_store(local_store, store)
    assert isinstance(store.failures(), pd.DataFrame) and store.failures().empty
