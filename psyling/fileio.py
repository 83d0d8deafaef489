"""Atomic file writes: a file is written under a unique temporary name beside it, then renamed over its target,
so a reader (or a process killed mid-write) only ever sees the old file or the new one, and parallel writers
never share a temporary name."""
from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any, Callable

import pandas as pd


def unique_name(name: str, kind: str) -> str:
    """A hidden sibling name for ``name`` that no other process or thread picks: ``.NAME.PID-RANDOM.KIND``."""
    return f".{name}.{os.getpid()}-{secrets.token_hex(6)}.{kind}"


def atomic_write(path: Path, write: Callable[[Path], Any], keep_suffix: bool = False) -> Path:
    """Call ``write(tmp)`` on a fresh temporary sibling of ``path`` (hidden, ending in ``.tmp`` so that globs for
    the target's suffix never see it; ``keep_suffix``: in ``.tmp`` plus the target's suffix, for writers that infer
    the format from it, e.g. plots), then rename it onto ``path``; the temporary file is removed if ``write``
    fails."""
    path = Path(path)
    tmp = path.with_name(unique_name(path.name, "tmp") + (path.suffix if keep_suffix else ""))
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_parquet(path: Path, table: pd.DataFrame) -> Path:
    """A table as parquet (no index), replacing the file atomically."""
    return atomic_write(path, lambda p: table.to_parquet(p, index=False))


def write_csv(path: Path, table: pd.DataFrame) -> Path:
    """A table as CSV (no index), replacing the file atomically."""
    return atomic_write(path, lambda p: table.to_csv(p, index=False))


def json_text(value: Any) -> str:
    """What psyling's JSON files hold: indented, UTF-8, non-JSON values as strings, a final newline."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n"


def write_json(path: Path, value: Any) -> Path:
    """JSON (``json_text``), replacing the file atomically."""
    text = json_text(value)
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))
