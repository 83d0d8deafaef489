"""The run directory contract: manifest.json, tokens/words/regions/predictions parquet, summary.csv."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

TABLES = ("tokens", "words", "regions", "predictions")


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def write_run(out: Path, manifest: dict[str, Any], tables: dict[str, pd.DataFrame], summary: pd.DataFrame) -> None:
    """Write all outputs of a run into ``out`` (created if needed); each file is replaced atomically."""
    write_tables(out, manifest, {name: tables[name] for name in TABLES}, summary)


def write_parquet(path: Path, table: pd.DataFrame) -> None:
    """Write a table as parquet, replacing the file atomically."""
    _atomic_write(path, lambda p: table.to_parquet(p, index=False))


def write_csv(path: Path, table: pd.DataFrame) -> None:
    """Write a table as CSV, replacing the file atomically."""
    _atomic_write(path, lambda p: table.to_csv(p, index=False))


def write_json(path: Path, value: Any) -> None:
    """Write JSON (indented, UTF-8), replacing the file atomically."""
    _atomic_write(path, lambda p: p.write_text(json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n",
                                               encoding="utf-8"))


def write_tables(out: Path, manifest: dict[str, Any], tables: dict[str, pd.DataFrame], summary: pd.DataFrame) -> None:
    """Write the given tables as parquet, the summary as CSV and the manifest as JSON."""
    out.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        write_parquet(out / f"{name}.parquet", table)
    write_csv(out / "summary.csv", summary)
    write_json(out / "manifest.json", manifest)
