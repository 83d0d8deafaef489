"""Running sweep cells in a worker: the worker keeps one model loaded while the cells of that model and revision
pass through (and one scorer per scoring settings, with its invariance check made once), scores each cell's set
in memory and writes its tables to the store; it returns only the cell's digest."""
from __future__ import annotations

import os
import signal
import socket
import time
import traceback
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional, Sequence

import pandas as pd

from ..api import gather_stimuli, load, score_with
from ..config import RunConfig
from ..errors import PsylingError, first_line
from ..models import LanguageModel, Scorer, make_scorer
from ..stats import item_passes
from ..stimuli import StimulusSet
from .spec import Cell
from .store import SweepStore

# Fault injection for the tests of the retry and resume paths (never set in normal use): "raise:SET" fails the
# cells of SET; "kill-after:N" SIGKILLs this process after it has written N cells; "kill-worker-once:SET:MARKER"
# SIGKILLs the worker at the first cell of SET while the file MARKER does not exist (and creates it).
FAILPOINT_ENV = "PSYLING_SWEEP_FAILPOINT"
STORE_TABLES = ("summary", "items", "predictions", "regions")


@dataclass
class LoadedModel:
    """The model a worker holds: which (alias, revision), the load's id and how long loading took."""
    key: tuple[str, str]
    lm: LanguageModel
    load_id: str
    seconds: float


@dataclass
class Worker:
    """One worker's state: its id (host:pid), the model it holds, its scorers (by scoring options) with the
    invariance check each made, the stimulus sets it has read, and what it has done."""
    store: SweepStore
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    held: Optional[LoadedModel] = None
    scorers: dict[str, Scorer] = field(default_factory=dict)
    checks: dict[str, dict] = field(default_factory=dict)
    sets: dict[tuple, StimulusSet] = field(default_factory=dict)
    loads: int = 0
    written: int = 0

    def holding(self, cell: Cell) -> LoadedModel:
        """The cell's model, loaded unless it is the one held (the previous one is released first)."""
        key = (cell.model.alias, cell.model.revision)
        if self.held is None or self.held.key != key:
            self.held, self.scorers, self.checks = None, {}, {}
            t0 = time.perf_counter()
            lm = load(cell.config().model)
            self.held = LoadedModel(key, lm, uuid.uuid4().hex[:12], time.perf_counter() - t0)
            self.loads += 1
        return self.held

    def scorer(self, config: RunConfig, lm: LanguageModel) -> tuple[str, Scorer]:
        """The scorer for these scoring options (made once per model), with its key in ``scorers``/``checks``."""
        key = repr(config.scoring)
        if key not in self.scorers:
            self.scorers[key] = make_scorer(lm, config.scoring, progress=False)
        return key, self.scorers[key]

    def stimulus_set(self, cell: Cell, config: RunConfig) -> StimulusSet:
        """The cell's set, read from its file once per worker (the same set serves every model and revision)."""
        key = (cell.set_path, cell.set_name, config.reader_options)
        if key not in self.sets:
            self.sets[key] = cell_set(cell, config)
        return self.sets[key]

    def run_cell(self, cell: Cell) -> Optional[str]:
        """Score one cell and write it (skipped when the store has it); a failure is recorded in the store's
        failures table and gives None, so that the sweep goes on."""
        if self.store.done(cell.digest):
            return cell.digest
        try:
            _failpoint(cell)
            held = self.holding(cell)
            tables, record = self._score(cell, held)
            self.store.write_cell(cell.meta(), tables, record)
        except PsylingError as exc:
            self.store.record_failure(cell.meta(), first_line(exc))
            return None
        except Exception as exc:  # a model or library error in one cell must not stop the sweep
            self.store.record_failure(cell.meta(), f"{type(exc).__name__}: {exc}".splitlines()[0],
                                      traceback.format_exc())
            return None
        self.written += 1
        _failpoint_after(self.written)
        return cell.digest

    def run_cells(self, cells: Sequence[Cell]) -> list[Optional[str]]:
        """Run cells in order (group them by model and revision so each is loaded once)."""
        return [self.run_cell(cell) for cell in cells]

    def _score(self, cell: Cell, held: LoadedModel) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
        """The cell's store tables and its record (worker, load, timings, tokens, invariance, model digest)."""
        config = cell.config()
        stim = self.stimulus_set(cell, config)
        key, scorer = self.scorer(config, held.lm)
        t0 = time.perf_counter()
        result = score_with(replace(config, stimuli=()), scorer, [stim], self.checks.get(key))
        if result.errors and result.predictions.empty:
            raise PsylingError(result.errors[0])
        if key not in self.checks:
            self.checks[key] = {**result.manifest["invariance_check"], "made_in_cell": cell.digest}
        timings = result.manifest["timings"]
        summary = result.summary.assign(phenomenon=stim.phenomenon)
        tables = {"summary": summary, "items": item_passes(result.predictions),
                  "predictions": result.predictions, "regions": result.regions}
        record = {"worker": self.worker_id, "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                  "load_id": held.load_id, "load_s": round(held.seconds, 3),
                  "loads_in_worker": self.loads, "seconds": round(time.perf_counter() - t0, 3),
                  "tokens_scored": timings["tokens_scored"], "tokens_per_s": timings["tokens_per_s"],
                  "model_info": result.manifest["model"], "settings": result.manifest["settings"],
                  "invariance_check": self.checks[key], "errors": result.errors}
        return tables, record


def cell_set(cell: Cell, config: RunConfig) -> StimulusSet:
    """The cell's stimulus set, read from its file (``score_with`` cuts it to ``max_items``)."""
    loaded = gather_stimuli([cell.set_path], None, config.reader_options)
    chosen = [s for s in loaded.sets if s.name == cell.set_name]
    if not chosen:
        raise PsylingError(f"{cell.set_path}: no set named {cell.set_name!r} (found "
                           f"{', '.join(s.name for s in loaded.sets) or 'none'})")
    return chosen[0]


def _failpoint(cell: Cell) -> None:
    """The fault injected before a cell (``FAILPOINT_ENV``), if any."""
    kind, _, rest = os.environ.get(FAILPOINT_ENV, "").partition(":")
    if kind == "raise" and rest == cell.set_name:
        raise PsylingError(f"injected failure in set {cell.set_name} ({FAILPOINT_ENV})")
    if kind == "kill-worker-once":
        name, _, marker = rest.partition(":")
        if name == cell.set_name and not Path(marker).exists():
            Path(marker).write_text(cell.digest)
            os.kill(os.getpid(), signal.SIGKILL)


def _failpoint_after(written: int) -> None:
    """SIGKILL this process once it has written N cells, when ``FAILPOINT_ENV`` is ``kill-after:N``."""
    kind, _, rest = os.environ.get(FAILPOINT_ENV, "").partition(":")
    if kind == "kill-after" and written >= int(rest):
        os.kill(os.getpid(), signal.SIGKILL)
