"""``psyling sweep run --executor ray --address`` joins a cluster that is already running: a head node started with
``ray start --head --num-gpus 2`` (two logical GPUs on this CPU machine). The sweep runs on that cluster's two GPU
actors (a cluster psyling started itself here would have no GPU, hence one actor) and its store equals the local
executor's. Joining without the cluster's token, or where no cluster answers, is a one-line error."""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from psyling.sweep.cells import FAILPOINT_ENV
from psyling.sweep.store import SweepStore
from sweep_cases import assert_same_store

RAY_CLI = [sys.executable, "-c", "import sys; from ray.scripts.scripts import main; sys.exit(main())"]
TOKEN = "0123456789abcdef" * 4  # the head's authentication token (Ray 2.60 clusters use token auth)
PROBE = "import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR'); print(ray.cluster_resources())"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    """This environment without fault injection or Ray's authentication settings, plus ``extra``."""
    drop = (FAILPOINT_ENV, "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS")
    return {**{k: v for k, v in os.environ.items() if k not in drop}, **extra}


AUTHENTICATED = dict(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=TOKEN)


def _wait_until_up(address: str, head: subprocess.Popen, seconds: float = 120) -> None:
    """Poll until the head's GCS port is open and a client sees its two GPUs (or fail with ray start's output)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if head.poll() is not None:
            pytest.fail(f"ray start exited with {head.returncode}: {head.stderr.read()[-2000:]}")
        probe = subprocess.run([sys.executable, "-c", PROBE, address], capture_output=True, text=True,
                               env=_env(**AUTHENTICATED), timeout=120)
        if probe.returncode == 0 and "'GPU': 2.0" in probe.stdout:
            return
        time.sleep(2)
    pytest.fail(f"the Ray head at {address} did not come up in {seconds} s")


@pytest.fixture(scope="module")
def head_address():
    """A Ray head node with token authentication, in its own process group (``ray start --block``), stopped with
    it after the module's tests. Its own temp dir keeps /tmp/ray/ray_current_cluster (which a later plain
    ``ray.init()`` would join) untouched."""
    port, temp = _free_port(), tempfile.mkdtemp(prefix="psyray-", dir="/tmp")  # short: Ray's socket paths live here
    head = subprocess.Popen([*RAY_CLI, "start", "--head", "--block", f"--port={port}", f"--temp-dir={temp}",
                             "--num-cpus=2",
                             "--num-gpus=2", "--include-dashboard=false", "--disable-usage-stats"],
                            env=_env(**AUTHENTICATED), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    address = f"127.0.0.1:{port}"
    try:
        _wait_until_up(address, head)
        yield address
    finally:
        os.killpg(head.pid, 15)
        head.wait(timeout=60)
        shutil.rmtree(temp, ignore_errors=True)


def _sweep(sweep_file, store, *extra: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "psyling.cli", "sweep", "run", str(sweep_file), "--store", str(store),
                           "--executor", "ray", "--quiet", *extra], capture_output=True, text=True, env=env,
                          timeout=600)


def _one_line_error(failed: subprocess.CompletedProcess) -> str:
    assert failed.returncode != 0 and "Traceback" not in failed.stderr, failed.stderr[-2000:]
    return failed.stderr.strip().splitlines()[-1]


def test_sweep_joins_an_existing_cluster(head_address, sweep_file, local_store, tmp_path):
    done = _sweep(sweep_file, tmp_path / "store", "--address", head_address, env=_env(**AUTHENTICATED))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "8 run now, 0 failed" in done.stdout
    store = SweepStore(tmp_path / "store")
    assert_same_store(local_store, store)
    assert store.cells()["worker"].nunique() == 2  # the head's two logical GPUs: its actors, not a new cluster's


def test_joining_without_the_token_is_a_one_line_error(head_address, sweep_file, tmp_path):
    line = _one_line_error(_sweep(sweep_file, tmp_path / "store", "--address", head_address, env=_env()))
    assert f"could not join the Ray cluster at {head_address}" in line and "RAY_AUTH_MODE=token" in line
    assert not (tmp_path / "store" / "cells").exists() or not any((tmp_path / "store" / "cells").iterdir())


def test_an_address_without_a_cluster_is_a_one_line_error(sweep_file, tmp_path):
    address = f"127.0.0.1:{_free_port()}"
    line = _one_line_error(_sweep(sweep_file, tmp_path / "store", "--address", address, env=_env()))
    assert f"no Ray cluster answers at {address}" in line
