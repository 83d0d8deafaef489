"""The run directory (**contract**): what a run writes, how it is written, how it is read back and listed.

A run directory holds ``manifest.json``, ``tokens`` / ``words`` / ``regions`` / ``predictions.parquet`` and
``summary.csv``; with the logit lens ``lens_regions`` / ``lens_predictions`` / ``lens_emergence.parquet``; with
activation capture ``activations/``; later ``analysis/`` (``psyling analyze``) and ``interp/`` (probes, lens
plots, encoding).

Writing (``RunWriter``): a run is complete or absent. The writer locks the target (a lock file beside it: a
second writer gets a one-line error), checks before any scoring that it can write there (not a file, not a
non-empty folder unless replacing a run, parent writable, space free), builds the run in a hidden sibling
staging folder (captured activations included) and puts it in place in one step: a rename, or for a
replacement an atomic exchange of the two folders, so a process killed at any moment leaves the old run or the
new one, never a mix, and nothing of the replaced run (activations, analysis, interp) survives. Outputs added
to a finished run later (``sub_output``, ``write_sub_output``) are written atomically under the same lock."""
from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import re
import shutil
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import pandas as pd

from .errors import PsylingError
from .fileio import atomic_write, unique_name, write_csv, write_json, write_parquet
from .hashing import sha256_file
from .stimuli import StimulusSet, load_stimuli

MANIFEST = "manifest.json"
SUMMARY = "summary.csv"
TABLES = ("tokens", "words", "regions", "predictions")
LENS_TABLES = ("lens_regions", "lens_predictions", "lens_emergence")
ACTIVATIONS, ANALYSIS, INTERP = "activations", "analysis", "interp"
ANALYSIS_TABLES = ("comparison", "mixed", "accuracy_by_phenomenon")  # analysis/NAME.parquet
INCOMPLETE = ".incomplete"  # present in a folder that is being written (or was, when its writer was killed)
REQUIRED = (MANIFEST, "regions.parquet", "words.parquet", "predictions.parquet")  # what analyze and probe read
MIN_FREE_BYTES = 64 * 2**20
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _fail(path: Path, what: str, exc: OSError) -> PsylingError:
    return PsylingError(f"{path}: {what} ({exc.strerror or exc})")


@contextmanager
def locked(out: Path) -> Iterator[Path]:
    """Hold the lock of run directory ``out`` (``.NAME.lock`` beside it; released when the process dies)."""
    lock = out.parent / f".{out.name}.lock"
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise _fail(out, "cannot write the run directory", exc) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PsylingError(f"{out}: another psyling process is writing this run directory (lock {lock}); "
                               "wait for it to finish or choose another --out") from None
        yield lock
    finally:
        os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders atomically (Linux renameat2 RENAME_EXCHANGE); False where the system cannot."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _discard(folder: Path) -> None:
    """Delete a folder that is no run (marked first, so an interrupted deletion never looks like one)."""
    (folder / INCOMPLETE).touch()
    shutil.rmtree(folder, ignore_errors=True)


def _put_in_place(staging: Path, out: Path) -> None:
    """Make the finished ``staging`` folder the run directory ``out`` in one step."""
    if not out.exists() or not any(out.iterdir()):
        os.replace(staging, out)  # a rename onto a missing or empty folder is atomic
    elif _exchange(staging, out):
        _discard(staging)  # staging now holds the replaced run
    else:  # no atomic exchange here: move the old run aside; ``_recover`` restores it if this is interrupted
        old = out.with_name(unique_name(out.name, "old"))
        os.replace(out, old)
        os.replace(staging, out)
        _discard(old)


def _recover(out: Path) -> None:
    """Clean up after writers that were killed: restore a run moved aside whose replacement never arrived,
    delete staging folders and runs that were replaced (the caller holds the lock)."""
    pattern = re.compile(rf"^\.{re.escape(out.name)}\.\d+-[0-9a-f]{{12}}\.(run|old|sub)$")
    leftovers = sorted(p for p in out.parent.iterdir() if pattern.match(p.name) and p.is_dir())
    old = [p for p in leftovers if p.suffix == ".old" and not (p / INCOMPLETE).exists()]  # not half deleted
    if not out.exists() and old:
        os.replace(old.pop(), out)
    for path in leftovers:
        if path.exists():
            _discard(path)


def _check_target(out: Path, replace_run: bool) -> None:
    """One-line errors for a target that cannot become this run: a file, or a non-empty folder that is not to be
    replaced (only a psyling run is ever replaced)."""
    if out.exists() and not out.is_dir():
        raise PsylingError(f"{out}: exists and is not a folder; choose another --out")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not replace_run:
        raise PsylingError(f"{out}: not empty (it holds a run or other files); give --replace (replace=True) "
                           "to replace the run there, or choose another --out")
    if not (out / MANIFEST).is_file():
        raise PsylingError(f"{out}: not a psyling run directory (no {MANIFEST}); refusing to replace its contents")


def _make_staging(out: Path) -> Path:
    """A hidden sibling folder marked incomplete, after checking that the filesystem takes writes and has room."""
    staging = out.with_name(unique_name(out.name, "run"))
    try:
        staging.mkdir()
        (staging / INCOMPLETE).write_text("being written by psyling\n")
        free = shutil.disk_usage(staging).free
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise _fail(out, "cannot write the run directory", exc) from None
    if free < MIN_FREE_BYTES:
        shutil.rmtree(staging, ignore_errors=True)
        raise PsylingError(f"{out}: only {free / 2**20:.0f} MB free on its filesystem (need at least "
                           f"{MIN_FREE_BYTES // 2**20} MB)")
    return staging


class RunWriter:
    """Writes one run directory: ``with RunWriter(out) as writer`` locks and checks ``out`` and creates the staging
    folder (``writer.activations`` is where captured activations go); ``writer.commit(...)`` writes the outputs
    and puts the run in place. Leaving the block without a commit (an error) leaves ``out`` as it was."""

    def __init__(self, out: Union[str, Path], *, replace: bool = False) -> None:
        self.out = Path(out).expanduser().absolute()
        self.replace = replace
        self.staging: Optional[Path] = None
        self._lock: Optional[Any] = None

    def __enter__(self) -> "RunWriter":
        _check_target(self.out, self.replace)  # cheap errors first; checked again under the lock
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _fail(self.out.parent, "cannot create the folder for --out", exc) from None
        self._lock = locked(self.out)
        self._lock.__enter__()
        try:
            _recover(self.out)
            _check_target(self.out, self.replace)
            self.staging = _make_staging(self.out)
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise
        return self

    @property
    def activations(self) -> Path:
        """Where captured activations are written while scoring (inside the staging folder)."""
        return self.staging / ACTIVATIONS

    def commit(self, manifest: dict[str, Any], tables: dict[str, pd.DataFrame], summary: pd.DataFrame) -> Path:
        """Write ``tables`` (name -> table, as NAME.parquet), the summary and the manifest, then put the run in
        place; returns the run directory."""
        try:
            for name, table in tables.items():
                write_parquet(self.staging / f"{name}.parquet", table)
            write_csv(self.staging / SUMMARY, summary)
            write_json(self.staging / MANIFEST, manifest)
            (self.staging / INCOMPLETE).unlink()
            _put_in_place(self.staging, self.out)
        except OSError as exc:
            raise _fail(self.out, "cannot write the run directory", exc) from None
        self.staging = None
        return self.out

    def __exit__(self, *exc: Any) -> None:
        try:
            if self.staging is not None:
                shutil.rmtree(self.staging, ignore_errors=True)
                self.staging = None
        finally:
            self._lock.__exit__(None, None, None)


def write_run(out: Union[str, Path], manifest: dict[str, Any], tables: dict[str, pd.DataFrame],
              summary: pd.DataFrame, *, replace: bool = False) -> Path:
    """Write a run directory from finished outputs (see ``RunWriter``)."""
    with RunWriter(out, replace=replace) as writer:
        return writer.commit(manifest, tables, summary)


def check_run(run_dir: Union[str, Path], required: Sequence[str] = REQUIRED) -> Path:
    """``run_dir`` as a Path if it is a complete run directory, else a one-line error naming what is wrong."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PsylingError(f"{run_dir}: not a directory (give the --out folder of a psyling run)")
    if (run_dir / INCOMPLETE).exists():
        raise PsylingError(f"{run_dir}: a run directory that is being written or whose writer was interrupted; "
                           "not a complete psyling run")
    missing = [name for name in required if not (run_dir / name).is_file()]
    if missing:
        raise PsylingError(f"{run_dir}: not a complete psyling run directory (missing {', '.join(missing)})")
    return run_dir


def read_manifest(run_dir: Union[str, Path]) -> dict[str, Any]:
    """The run's manifest.json."""
    path = check_run(run_dir, (MANIFEST,)) / MANIFEST
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PsylingError(f"{path}: cannot read the manifest ({exc})") from None


def read_table(run_dir: Union[str, Path], name: str) -> pd.DataFrame:
    """One table of a run: tokens, words, regions, predictions, summary, a lens table, or an analysis table
    (``analysis/comparison``, ``analysis/mixed``, ``analysis/accuracy_by_phenomenon``, ``analysis/verdicts``)."""
    run_dir = check_run(run_dir, (MANIFEST,))
    known = (*TABLES, *LENS_TABLES, "summary", *(f"{ANALYSIS}/{t}" for t in (*ANALYSIS_TABLES, "verdicts")))
    if name not in known:
        raise PsylingError(f"unknown run table {name!r} (choose from {', '.join(known)})")
    csv = name in ("summary", f"{ANALYSIS}/verdicts")
    path = run_dir / f"{name}.{'csv' if csv else 'parquet'}"
    if not path.is_file():
        hint = " (run psyling analyze)" if name.startswith(ANALYSIS) else \
            " (run with --lens)" if name in LENS_TABLES else ""
        raise PsylingError(f"{run_dir}: no {path.name} in this run{hint}")
    try:
        return pd.read_csv(path) if csv else pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise PsylingError(f"{path}: cannot read it ({exc})") from None


def read_analysis(run_dir: Union[str, Path]) -> dict[str, Any]:
    """The run's analysis/analysis.json (linking functions, settings, notes)."""
    path = check_run(run_dir, (MANIFEST,)) / ANALYSIS / "analysis.json"
    if not path.is_file():
        raise PsylingError(f"{path.parent.parent}: not analysed yet (run psyling analyze)")
    return json.loads(path.read_text(encoding="utf-8"))


def read_run(run_dir: Union[str, Path]) -> tuple[dict[str, Any], dict[str, pd.DataFrame]]:
    """The manifest and the regions, words and predictions tables of a complete run directory."""
    run_dir = check_run(run_dir)
    manifest = read_manifest(run_dir)
    tables = {name: read_table(run_dir, name) for name in ("regions", "words", "predictions")}
    for name, column in (("regions", "surprisal"), ("words", "surprisal"), ("predictions", "passed")):
        if column not in tables[name]:
            raise PsylingError(f"{run_dir / (name + '.parquet')}: column {column!r} is missing")
    return manifest, tables


def activations_folder(run_dir: Union[str, Path]) -> Path:
    """The run's activations/ folder (``psyling.interp.load_activations`` reads it)."""
    folder = check_run(run_dir, (MANIFEST,)) / ACTIVATIONS
    if not (folder / "index.parquet").is_file():
        raise PsylingError(f"{folder.parent}: no activations in this run (run psyling run with --activations)")
    return folder


def list_runs(folder: Union[str, Path]) -> list[Path]:
    """The complete run directories at or under ``folder``, sorted (hidden folders and the subfolders of a run
    are not searched)."""
    found = []
    for root, dirs, _ in os.walk(folder):
        path = Path(root)
        if (path / MANIFEST).is_file() and not (path / INCOMPLETE).exists():
            found.append(path)
            dirs.clear()
        else:
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    return sorted(found)


def _same_run(run_dir: Path, expected: Optional[dict[str, Any]]) -> None:
    """Under the lock: the run is still the one whose manifest the caller read (not replaced meanwhile)."""
    if expected is not None and read_manifest(run_dir) != expected:
        raise PsylingError(f"{run_dir}: the run was replaced while this was being computed; run the command again")


@contextmanager
def sub_output(run_dir: Union[str, Path], name: str, expected: Optional[dict[str, Any]] = None) -> Iterator[Path]:
    """A fresh folder to fill with RUN_DIR/NAME (e.g. ``analysis``); when the block ends without an error it
    replaces RUN_DIR/NAME in one step (nothing of the previous one stays), under the run's lock. ``expected``:
    the manifest the outputs were computed from; a run replaced since is an error, not a mixed run."""
    run_dir = check_run(Path(run_dir).absolute(), (MANIFEST,))
    with locked(run_dir):
        _same_run(run_dir, expected)
        _recover(run_dir / name)
        staging = run_dir / unique_name(name, "sub")
        try:
            staging.mkdir()
            yield staging
            _put_in_place(staging, run_dir / name)
        except OSError as exc:
            raise _fail(run_dir / name, "cannot write", exc) from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def write_sub_output(run_dir: Union[str, Path], relpath: str, write: Callable[[Path], Any],
                     expected: Optional[dict[str, Any]] = None) -> Path:
    """Write one file into a finished run (e.g. ``interp/probe_number.parquet``) atomically, under the run's
    lock: ``write(path)`` gets a temporary path with the file's suffix. ``expected`` as for ``sub_output``."""
    run_dir = check_run(Path(run_dir).absolute(), (MANIFEST,))
    target = run_dir / relpath
    with locked(run_dir):
        _same_run(run_dir, expected)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            return atomic_write(target, write, keep_suffix=True)
        except OSError as exc:
            raise _fail(target, "cannot write", exc) from None


def _absolute(path: Optional[str]) -> Optional[str]:
    """An existing file's resolved absolute path; anything else (no source, a description) as it is."""
    return str(Path(path).resolve()) if path and Path(path).exists() else path


def located_stimuli(stimuli: dict[str, Any]) -> dict[str, Any]:
    """A manifest's stimuli entry with absolute paths (files and their digests, paths, set sources) and the working
    directory they were given in (``cwd``), so that the run can be analysed from any directory."""
    return {**stimuli, "cwd": os.getcwd(), "files": {_absolute(p): d for p, d in stimuli.get("files", {}).items()},
            **({"paths": [_absolute(p) for p in stimuli["paths"]]} if "paths" in stimuli else {}),
            "sets": [{**s, "source": _absolute(s.get("source"))} if "source" in s else s
                     for s in stimuli.get("sets", [])]}


def recorded_path(path: str, stimuli: dict[str, Any], run_dir: Optional[Path] = None) -> Path:
    """A stimulus path as the manifest records it, found on disk: an absolute one as it is; a relative one (older
    runs) under the run's recorded ``cwd``, else the run directory's parent, else the current directory."""
    recorded = Path(path)
    bases: list[Path] = []
    if not recorded.is_absolute():
        bases = [Path(stimuli["cwd"])] if stimuli.get("cwd") else []
        bases += [Path(run_dir).resolve().parent] if run_dir is not None else []
        bases = list(dict.fromkeys([*bases, Path.cwd()]))
    candidates = [base / recorded for base in bases] or [recorded]
    found = next((candidate for candidate in candidates if candidate.exists()), None)
    if found is None:
        where = f" under {', '.join(map(str, bases))}" if bases else ""
        raise PsylingError(f"stimulus file {path} (recorded in the run manifest) not found{where}; give the stimuli "
                           "with --stimuli")
    return found


def run_sets(manifest: dict[str, Any], stimuli: Sequence[Union[str, Path]] = (),
             run_dir: Optional[Path] = None) -> tuple[list[StimulusSet], list[str]]:
    """Reload the run's stimulus sets (from ``stimuli`` or the files its manifest lists, ``recorded_path``), in run
    order, with the run's ``max_items``; plus notes (changed or missing files and sets)."""
    recorded = manifest.get("stimuli", {})
    # the files the sets were loaded from (a manifest's items CSV is read through its YAML)
    sources = list(dict.fromkeys(s["source"] for s in recorded.get("sets", []) if s.get("source")))
    paths = [Path(p) for p in stimuli] or [recorded_path(p, recorded, run_dir) for p in sources]
    absent = [p for p in paths if not p.exists()]
    if absent:
        raise PsylingError(f"stimulus file {absent[0]} not found")
    notes = [] if stimuli else [f"{p}: changed since the run (sha256 differs); analysing the current file"
                                for p, digest in _recorded_files(recorded, run_dir).items()
                                if p.is_file() and sha256_file(p) != digest]
    loaded = load_stimuli(paths)
    by_name = {s.name: s for s in loaded.sets}
    names = [s["name"] for s in recorded.get("sets", [])]
    limit = recorded.get("max_items")
    sets = [replace(by_name[n], items=by_name[n].items[:limit]) if limit else by_name[n]
            for n in names if n in by_name]
    notes += [f"set {n}: scored in the run but not found in the stimulus files; skipped" for n in names
              if n not in by_name]
    return sets, notes + loaded.errors


def _recorded_files(recorded: dict[str, Any], run_dir: Optional[Path]) -> dict[Path, str]:
    """The files the run read, found on disk (``recorded_path``), with their recorded sha256; missing ones left out."""
    found = {}
    for path, digest in recorded.get("files", {}).items():
        try:
            found[recorded_path(path, recorded, run_dir)] = digest
        except PsylingError:
            continue
    return found
