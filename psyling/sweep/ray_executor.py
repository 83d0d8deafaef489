"""The Ray executor (Ray Core, the ``sweep`` extra): one actor per GPU of the cluster (or ``workers`` CPU actors
when it has none) that keeps its model loaded; each actor takes whole (model, revision) groups. An actor that
dies (killed, out of host memory) is restarted and its task retried, up to ``retries`` times; a retried group
skips the cells the store already has. Durability is the store's: Ray keeps no state psyling relies on."""
from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Optional

from ..errors import PsylingError, first_line
from ..progress import steps
from .cells import FAILPOINT_ENV, Worker
from .spec import Cell
from .store import SweepStore


class CellActor:
    """A Ray actor's body: a ``Worker`` on the store, kept across tasks (so is the model it holds)."""

    def __init__(self, root: str, env: dict[str, str]) -> None:
        os.environ.update(env)  # the driver's fault injection (tests); actors start from the raylet's environment
        self.worker = Worker(SweepStore(Path(root)))

    def run_group(self, cells: list[Cell]) -> list[Optional[str]]:
        """Run one (model, revision) group; the digests written (None for a cell that failed)."""
        return self.worker.run_cells(cells)


def _ray() -> Any:
    """The ray module, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise PsylingError("the ray executor needs Ray: pip install 'psyling[sweep]' (or use --executor "
                           "local|process)") from None
    return ray


def _answers(address: str) -> None:
    """A one-line error unless something listens at a ``host:port`` address (``ray.init`` would retry for
    minutes); other forms ("auto", ``ray://…``) are left to Ray."""
    host, sep, port = address.rpartition(":")
    if "://" in address or not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except OSError as exc:
        raise PsylingError(f"no Ray cluster answers at {address} ({exc.strerror or exc}): start one there with "
                           f"`ray start --head`, or leave out --address to start a local one") from None


def _start(ray: Any, address: Optional[str]) -> None:
    """Join ``address`` (or start a local cluster) unless Ray is already initialised in this process. A local
    cluster's workers run at normal priority (Ray's default niceness 15 lets any other job take their CPU)."""
    if ray.is_initialized():
        return
    if address is None:
        os.environ.setdefault("RAY_worker_niceness", "0")
    else:
        _answers(address)
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    except (ConnectionError, ValueError, RuntimeError) as exc:
        where = f"join the Ray cluster at {address}" if address else "start a local Ray cluster"
        raise PsylingError(f"could not {where}: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    """The error's first line, with the last line of its innermost cause (Ray wraps a failed connection twice);
    a rejected token says how to give one."""
    chain = [exc]
    while chain[-1].__cause__ is not None:
        chain.append(chain[-1].__cause__)
    if any("InvalidAuthToken" in str(e) or "AuthenticationError" in str(e) for e in chain):
        return (f"{first_line(exc)}: the cluster uses token authentication; set RAY_AUTH_MODE=token and its "
                f"token (RAY_AUTH_TOKEN, or ~/.ray/auth_token) in this environment")
    lines = [line.strip() for line in str(chain[-1]).splitlines() if line.strip()]
    detail = lines[-1] if lines else type(chain[-1]).__name__
    return first_line(exc) if len(chain) == 1 else f"{first_line(exc)} ({detail[:300]})"


def _balanced(groups: list[list[Cell]], n: int) -> list[list[list[Cell]]]:
    """The groups dealt to ``n`` actors, largest first, each to the actor with the fewest cells so far."""
    queues: list[list[list[Cell]]] = [[] for _ in range(n)]
    for group in sorted(groups, key=len, reverse=True):
        min(queues, key=lambda q: sum(map(len, q))).append(group)
    return queues


def run_ray(groups: list[list[Cell]], store: SweepStore, config: Any) -> None:
    """Run the groups on Ray actors; a group whose actor died more than ``retries`` times is reported."""
    ray = _ray()
    _start(ray, config.address)
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    n = min(config.workers or max(1, gpus), len(groups))
    cpus = max(1, int(resources.get("CPU", 1)) // n)  # Ray gives an actor as many torch threads as CPUs
    options = {"num_gpus": 1, "num_cpus": cpus} if gpus else {"num_cpus": cpus}
    actor_class = ray.remote(max_restarts=config.retries, max_task_retries=config.retries)(CellActor)
    env = {FAILPOINT_ENV: os.environ[FAILPOINT_ENV]} if FAILPOINT_ENV in os.environ else {}
    actors = [actor_class.options(**options).remote(str(store.root), env) for _ in range(n)]
    refs = [actor.run_group.remote(group) for actor, queue in zip(actors, _balanced(groups, n)) for group in queue]
    lost = []
    for ref in steps(refs, "sweep groups", unit="group", shown=config.progress):
        try:
            ray.get(ref)
        except ray.exceptions.RayActorError as exc:
            lost.append(first_line(exc))
    for actor in actors:
        ray.kill(actor)
    if lost:
        raise PsylingError(f"sweep: {len(lost)} group(s) lost their Ray worker more than {config.retries} times "
                           f"(psyling sweep status lists the cells not done): {lost[0]}")
