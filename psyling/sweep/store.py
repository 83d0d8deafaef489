"""The sweep result store: one partitioned parquet dataset per table plus one manifest per finished cell.

Layout under ``root``::

    tables/<table>/model=<m>/revision=<r>/set=<s>/<digest>.parquet   hive partitions, values percent-encoded
    cells/<digest>.json                                             the manifest: a cell is done iff it exists
    failures/<digest>.jsonl                                         one JSON line per failed attempt

Every file is written under a hidden temporary name (a leading ``.``, ending in ``.tmp``: pyarrow, pandas and
``**/*.parquet`` globs ignore it), fsynced and renamed onto its final name, which depends only on the cell's
digest, so a rerun overwrites instead of duplicating. The manifest is written last. ``read_table`` reads only the
files the manifests list; ``clean_orphans`` removes what a crash left behind.
"""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import quote

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import PsylingError
from ..fileio import atomic_write, json_text
from ..hashing import sha256_file

PARTITIONS = ("model", "revision", "set")  # the hive partition columns, in directory order
ADDED = ("step", "settings", "cell")  # columns the store adds to every table file
DIGEST_PATTERN = re.compile(r"[0-9A-Za-z_-]+")


class StoreError(PsylingError):
    """A sweep store that cannot be read or written (a bad root, manifest or cell description)."""


def partition_dir(meta: dict) -> str:
    """The relative hive directory of a cell: ``model=<m>/revision=<r>/set=<s>``, each value percent-encoded."""
    return "/".join(f"{key}={quote(str(meta[key]), safe='')}" for key in PARTITIONS)


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, write_tmp) -> Path:
    """Atomically replace ``path`` with what ``write_tmp(tmp)`` writes, fsyncing the file before the rename and
    the directory after it."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def write_and_sync(tmp: Path) -> None:
        write_tmp(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())

    atomic_write(path, write_and_sync)
    _fsync_dir(path.parent)
    return path


def _one_line(text: str) -> str:
    """``text`` on one line (newlines folded into ' | ')."""
    return " | ".join(part.strip() for part in str(text).splitlines() if part.strip())


class SweepStore:
    """A resumable, crash-safe result store for sweep cells (see the module docstring for the layout)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"{self.root}: the sweep store must be a directory, not a file")
        self.tables_dir = self.root / "tables"
        self.cells_dir = self.root / "cells"
        self.failures_dir = self.root / "failures"

    # -- cells ------------------------------------------------------------------------------------------------
    def manifest_path(self, digest: str) -> Path:
        """Where the manifest of cell ``digest`` lives."""
        if not isinstance(digest, str) or not DIGEST_PATTERN.fullmatch(digest):
            raise StoreError(f"{self.root}: cell digest {digest!r} is not a plain name (letters, digits, _ and -)")
        return self.cells_dir / f"{digest}.json"

    def done(self, digest: str) -> bool:
        """Whether cell ``digest`` is finished, i.e. its manifest exists."""
        return self.manifest_path(digest).is_file()

    def done_digests(self) -> set[str]:
        """The digests of every finished cell."""
        if not self.cells_dir.is_dir():
            return set()
        return {path.stem for path in self.cells_dir.glob("*.json") if not path.name.startswith(".")}

    def _check_meta(self, meta: dict) -> None:
        """One-line error for a cell description the store cannot place."""
        for field in (*PARTITIONS, "digest"):
            value = meta.get(field)
            if value is None or str(value) == "":
                raise StoreError(f"{self.root}: cell meta field {field!r} is missing or empty")
        self.manifest_path(meta["digest"])

    def write_cell(self, meta: dict, tables: dict[str, pd.DataFrame], record: dict) -> Path:
        """Write one finished cell: each table into its partition, then the manifest (last); returns the manifest
        path. A rerun of the same digest replaces the earlier files instead of adding rows."""
        self._check_meta(meta)
        manifest = self.manifest_path(meta["digest"])
        manifest.unlink(missing_ok=True)  # not done while its files change
        self._drop_stale_tables(meta, set(tables))
        files = [self._write_table(name, table, meta) for name, table in tables.items()]
        body = {"meta": meta, "record": record, "files": files, "written": time.time()}
        text = json_text(body)
        return _write_durably(manifest, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def _table_path(self, name: str, meta: dict) -> Path:
        """The final file of table ``name`` for the cell ``meta``."""
        if not DIGEST_PATTERN.fullmatch(name):
            raise StoreError(f"{self.root}: table name {name!r} is not a plain name (letters, digits, _ and -)")
        return self.tables_dir / name / partition_dir(meta) / f"{meta['digest']}.parquet"

    def _drop_stale_tables(self, meta: dict, keep: set[str]) -> None:
        """Remove this cell's files of tables an earlier attempt wrote but this one does not."""
        if not self.tables_dir.is_dir():
            return
        for folder in self.tables_dir.iterdir():
            if folder.is_dir() and folder.name not in keep:
                (folder / partition_dir(meta) / f"{meta['digest']}.parquet").unlink(missing_ok=True)

    def _write_table(self, name: str, table: pd.DataFrame, meta: dict) -> dict:
        """Write one table of a cell (partition columns dropped, step/settings/cell added); its manifest entry."""
        path = self._table_path(name, meta)
        frame = table.drop(columns=[c for c in (*PARTITIONS, *ADDED) if c in table.columns])
        frame = frame.reset_index(drop=True).assign(
            step=pd.array([meta.get("step")] * len(frame), dtype="Int64"),
            settings=str(meta.get("settings_label", "default")), cell=str(meta["digest"]))
        arrow = pa.Table.from_pandas(frame, preserve_index=False)
        _write_durably(path, lambda tmp: pq.write_table(arrow, tmp))
        return {"table": name, "path": path.relative_to(self.root).as_posix(),
                "sha256": sha256_file(path), "rows": len(frame)}

    def manifests(self) -> list[dict]:
        """Every finished cell's manifest, sorted by digest."""
        return [self.read_manifest(digest) for digest in sorted(self.done_digests())]

    def read_manifest(self, digest: str) -> dict:
        """The manifest of cell ``digest``; one-line error naming the file when it is unreadable."""
        path = self.manifest_path(digest)
        try:
            body = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise StoreError(f"{path}: unreadable cell manifest ({_one_line(error)})") from None
        if not isinstance(body, dict) or not {"meta", "record", "files"} <= set(body):
            raise StoreError(f"{path}: cell manifest needs the fields meta, record and files")
        return body

    def cells(self) -> pd.DataFrame:
        """One row per finished cell: its meta (``settings`` = the label, ``settings_json`` = the grid point),
        file and row counts, and the runner's record flattened (nested keys joined by '.'; a record key that
        collides with a meta column is prefixed 'record.')."""
        rows = [_cell_row(body) for body in self.manifests()]
        columns = ["digest", *PARTITIONS, "step", "settings", "settings_json", "set_path", "n_files", "rows",
                   "written"]
        return pd.DataFrame(rows) if rows else pd.DataFrame(columns=columns)

    # -- tables -----------------------------------------------------------------------------------------------
    def read_table(self, name: str) -> pd.DataFrame:
        """Table ``name`` over every finished cell (only the files the manifests list), with model, revision and
        set as str columns first; columns missing from some cells are filled with nulls."""
        parts = [self._read_listed(body, entry) for body in self.manifests()
                 for entry in body["files"] if entry.get("table") == name]
        if not parts:
            return pd.DataFrame(columns=[*PARTITIONS, *ADDED])
        frame = pa.concat_tables(parts, promote_options="permissive").to_pandas()
        frame["step"] = frame["step"].astype("Int64")
        rest = [c for c in frame.columns if c not in PARTITIONS]
        return frame[[*PARTITIONS, *rest]]

    def _read_listed(self, body: dict, entry: dict) -> pa.Table:
        """One listed table file with the cell's partition values appended as string columns."""
        path = self.root / entry["path"]
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowException) as error:
            raise StoreError(f"{path}: unreadable table file of cell {body['meta'].get('digest')} "
                             f"({_one_line(error)})") from None
        table = table.replace_schema_metadata(None)  # each file's pandas metadata lists only its own columns
        for key in PARTITIONS:
            table = table.append_column(key, pa.array([str(body["meta"][key])] * table.num_rows, pa.string()))
        return table

    def clean_orphans(self) -> list[Path]:
        """Delete hidden temporary files and table files no manifest lists (what a crash leaves), then empty
        partition folders; returns the deleted files. Run it while no writer is active."""
        listed = {self.root / entry["path"] for body in self.manifests() for entry in body["files"]}
        removed = [path for path in self._store_files() if _is_orphan(path, listed)]
        for path in removed:
            path.unlink(missing_ok=True)
        _remove_empty_dirs(self.tables_dir)
        return removed

    def _store_files(self) -> Iterable[Path]:
        """Every file under tables/ and the hidden files under cells/ and failures/."""
        if self.tables_dir.is_dir():
            yield from (path for path in self.tables_dir.rglob("*") if path.is_file())
        for folder in (self.cells_dir, self.failures_dir):
            if folder.is_dir():
                yield from (path for path in folder.glob(".*") if path.is_file())

    # -- failures ---------------------------------------------------------------------------------------------
    def failures_path(self, digest: str) -> Path:
        """Where the failure log of cell ``digest`` lives."""
        return self.failures_dir / self.manifest_path(digest).with_suffix(".jsonl").name

    def record_failure(self, meta: dict, error: str, details: str = "") -> None:
        """Append one failed attempt of a cell (its meta, the error on one line, details, time, attempt number)."""
        self._check_meta(meta)
        path = self.failures_path(meta["digest"])
        attempt = len(self._failure_lines(path)) + 1
        line = {"digest": meta["digest"], **{k: meta.get(k) for k in (*PARTITIONS, "step")},
                "settings": meta.get("settings_label", "default"), "error": _one_line(error),
                "details": str(details), "time": time.time(), "attempt": attempt, "meta": meta}
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line, ensure_ascii=False, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def _failure_lines(self, path: Path) -> list[dict]:
        """The attempts logged in one failure file; a torn last line (a crash mid-append) is ignored."""
        if not path.is_file():
            return []
        text = path.read_text(encoding="utf-8")
        lines = text.split("\n")
        entries = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                if number == len(lines):  # no newline after it: the append was cut off
                    continue
                raise StoreError(f"{path}: line {number} is not valid JSON") from None
        return entries

    def failures(self) -> pd.DataFrame:
        """One row per failed cell (its last attempt): digest, model, revision, step, set, settings, error,
        details, time, attempts, and ``resolved`` (True when the cell has been finished since)."""
        columns = ["digest", *PARTITIONS, "step", "settings", "error", "details", "time", "attempts", "resolved"]
        if not self.failures_dir.is_dir():
            return pd.DataFrame(columns=columns)
        done = self.done_digests()
        rows = []
        for path in sorted(self.failures_dir.glob("*.jsonl")):
            attempts = self._failure_lines(path)
            if attempts and not path.name.startswith("."):
                last = attempts[-1]
                rows.append({**{c: last.get(c) for c in columns[:-2]}, "attempts": len(attempts),
                             "resolved": last.get("digest") in done})
        return pd.DataFrame(rows, columns=columns)


def _cell_row(body: dict) -> dict[str, Any]:
    """The cells() row of one manifest."""
    meta = body["meta"]
    row: dict[str, Any] = {"digest": meta.get("digest"), **{k: meta.get(k) for k in (*PARTITIONS, "step")},
                           "settings": meta.get("settings_label", "default"),
                           "settings_json": json.dumps(meta.get("settings", {}), sort_keys=True),
                           "set_path": meta.get("set_path"), "n_files": len(body["files"]),
                           "rows": sum(int(entry.get("rows", 0)) for entry in body["files"]),
                           "written": body.get("written")}
    record = body["record"] if isinstance(body["record"], dict) else {"value": body["record"]}
    flat = pd.json_normalize(record, sep=".").to_dict("records")[0] if record else {}
    for key, value in flat.items():
        row[f"record.{key}" if key in row else key] = value
    return row


def _is_orphan(path: Path, listed: set[Path]) -> bool:
    """A hidden temporary file, or a visible table file that no manifest lists."""
    if path.name.startswith("."):
        return path.name.endswith(".tmp")
    return path.suffix == ".parquet" and path not in listed


def _remove_empty_dirs(folder: Path) -> None:
    """Remove the empty folders below ``folder`` (deepest first), keeping ``folder`` itself."""
    if not folder.is_dir():
        return
    for sub in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(sub.iterdir()):
            sub.rmdir()
