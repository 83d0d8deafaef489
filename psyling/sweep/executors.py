"""Where a sweep's cells run: ``local`` (this process), ``process`` (one worker process per visible GPU, or
``workers``) and ``ray`` (Ray Core: one actor per GPU that keeps its model loaded). Every executor runs only the
cells the store does not have, hands whole (model, revision) groups to one worker so each is loaded once per
worker, retries a group whose worker died, and lets the workers write the store (they return digests only)."""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Optional, Sequence

from ..errors import PsylingError
from ..progress import steps
from .cells import Worker
from .spec import Cell
from .store import SweepStore

EXECUTORS = ("local", "process", "ray")


@dataclass(frozen=True)
class ExecutorConfig:
    """How to run: ``kind`` (EXECUTORS), ``workers`` (None: one per visible GPU, at least one), ``address`` (Ray:
    join this cluster; None: start a local one unless Ray is already initialised), ``retries`` (times a group
    is rerun after its worker died) and ``progress``."""
    kind: str = "local"
    workers: Optional[int] = None
    address: Optional[str] = None
    retries: int = 2
    progress: bool = True

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise PsylingError(f"unknown executor {self.kind!r} (choose from {', '.join(EXECUTORS)})")
        if self.workers is not None and self.workers < 1:
            raise PsylingError(f"--workers must be at least 1 (got {self.workers})")


@dataclass(frozen=True)
class SweepOutcome:
    """What one ``execute`` did: cells it ran and wrote, cells already done, cells that failed this time."""
    executed: tuple[str, ...]
    already_done: tuple[str, ...]
    failed: tuple[str, ...]


def model_groups(cells: Sequence[Cell]) -> list[list[Cell]]:
    """The cells grouped by (model alias, revision), in order: the unit a worker takes."""
    key = lambda c: (c.model.alias, c.model.revision)  # noqa: E731
    return [list(group) for _, group in groupby(sorted(cells, key=key), key=key)]


def visible_gpus() -> int:
    """The GPUs this process may use (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def execute(cells: Sequence[Cell], store: SweepStore, config: ExecutorConfig = ExecutorConfig()) -> SweepOutcome:
    """Run the cells the store does not have with the chosen executor; orphan files of cells that never
    finished (a driver killed mid-write) are removed first."""
    store.clean_orphans()
    done = store.done_digests()
    todo = [c for c in cells if c.digest not in done]
    if todo and config.kind == "ray":
        from .ray_executor import run_ray

        run_ray(model_groups(todo), store, config)
    elif todo:
        {"local": _run_local, "process": _run_processes}[config.kind](model_groups(todo), store, config)
    now = store.done_digests()
    return SweepOutcome(tuple(c.digest for c in todo if c.digest in now),
                        tuple(c.digest for c in cells if c.digest in done),
                        tuple(c.digest for c in todo if c.digest not in now))


def _run_local(groups: list[list[Cell]], store: SweepStore, config: ExecutorConfig) -> None:
    """Every group in this process, one after the other."""
    worker = Worker(store)
    cells = [cell for group in groups for cell in group]
    for cell in steps(cells, "sweep cells", unit="cell", shown=config.progress):
        worker.run_cell(cell)


def _process_group(root: str, cells: list[Cell]) -> list[Optional[str]]:
    """A worker process's task: one (model, revision) group."""
    global _WORKER
    if _WORKER is None or str(_WORKER.store.root) != root:
        _WORKER = Worker(SweepStore(Path(root)))
    return _WORKER.run_cells(cells)


_WORKER: Optional[Worker] = None


def _pin_device(devices: "multiprocessing.queues.Queue") -> None:
    """Worker process start: take one GPU index (CUDA_VISIBLE_DEVICES) before CUDA is first used."""
    device = devices.get()
    if device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(device)


def _run_processes(groups: list[list[Cell]], store: SweepStore, config: ExecutorConfig) -> None:
    """One worker process per visible GPU (or ``workers``); a pool broken by a dead worker is rebuilt and the
    unfinished groups rerun, up to ``retries`` times."""
    gpus = visible_gpus()
    n = config.workers or max(1, gpus)
    context = multiprocessing.get_context("spawn")
    before = failure_counts(store)
    for _ in range(config.retries + 1):
        pending = unfinished(groups, store, before)
        if not pending:
            return
        devices = context.Queue()
        for k in range(n):
            devices.put(k if gpus else None)
        try:
            with ProcessPoolExecutor(n, mp_context=context, initializer=_pin_device, initargs=(devices,)) as pool:
                futures = [pool.submit(_process_group, str(store.root), g) for g in pending]
                for future in steps(futures, "sweep groups", unit="group", shown=config.progress):
                    future.result()
            return
        except BrokenProcessPool:
            continue
    raise PsylingError(f"sweep: a worker process died {config.retries + 1} times; the cells it held are not done "
                       f"(psyling sweep status lists them)")


def failure_counts(store: SweepStore) -> dict[str, int]:
    """Recorded failures per cell digest (attempts)."""
    failures = store.failures()
    return {} if failures.empty else dict(zip(failures["digest"], failures["attempts"]))


def unfinished(groups: list[list[Cell]], store: SweepStore, before: dict[str, int]) -> list[list[Cell]]:
    """The cells of each group still to run: not done, and not failed (with an error) since ``before``."""
    done, now = store.done_digests(), failure_counts(store)
    pending = [[c for c in g if c.digest not in done and now.get(c.digest, 0) == before.get(c.digest, 0)]
               for g in groups]
    return [g for g in pending if g]
