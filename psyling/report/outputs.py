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


def write_tables(out: Path, manifest: dict[str, Any], tables: dict[str, pd.DataFrame], summary: pd.DataFrame) -> None:
    """Write the given tables as parquet, the summary as CSV and the manifest as JSON."""
    out.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        _atomic_write(out / f"{name}.parquet", lambda p, t=table: t.to_parquet(p, index=False))
    _atomic_write(out / "summary.csv", lambda p: summary.to_csv(p, index=False))
    _atomic_write(out / "manifest.json",
                  lambda p: p.write_text(json.dumps(manifest, indent=2, ensure_ascii=False, default=str) + "\n"))
