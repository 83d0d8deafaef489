"""The score cache: token-level results (and captured activations) of each forward batch, content-addressed.

An entry's folder is named by a fingerprint of everything that changes the numbers besides the tokens (model
weights digest or revision, tokenizer vocabulary, dtype, device type, convention, context token, capture and
lens settings, psyling version); a file in it is named by the digest of one batch's tokens and structure. Files
are written to a temporary name and renamed, so a run killed at any moment leaves only whole files, and
``resume`` picks up every batch it finished."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import zipfile
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from ..cache import cache_dir
from ..fileio import atomic_write

log = logging.getLogger("psyling")
UNREADABLE = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)  # a truncated, empty or foreign file
Output = dict[str, Any]  # logprob, log_bow, log_nonbow, activations {site: array}, lens {layer: (lp, lb, ln)}


def fingerprint_digest(fingerprint: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str).encode()).hexdigest()


def scores_root() -> Path:
    """``PSYLING_SCORE_CACHE`` if set, else ``scores`` in the cache directory."""
    env = os.environ.get("PSYLING_SCORE_CACHE")
    return Path(env) if env else cache_dir() / "scores"


class ScoreStore:
    """Batch results under ``root/<fingerprint digest>/``; ``read`` False writes without reusing (a fresh run
    that stays resumable), True also reuses what is there (``--resume``)."""

    def __init__(self, fingerprint: dict[str, Any], *, read: bool, root: Optional[Path] = None) -> None:
        self.folder = (root or scores_root()) / fingerprint_digest(fingerprint)[:24]
        self.folder.mkdir(parents=True, exist_ok=True)
        info = self.folder / "info.json"
        if not info.exists():
            atomic_write(info, lambda p: p.write_text(json.dumps(fingerprint, indent=2, default=str)))
        self.read = read
        self.hits = self.writes = self.corrupt = 0
        self.writable = True

    @classmethod
    def open(cls, fingerprint: dict[str, Any], *, read: bool, root: Optional[Path] = None) -> Optional["ScoreStore"]:
        """The store, or None with a warning when its folder cannot be created or written (e.g. read-only):
        the run then goes on without a cache."""
        try:
            return cls(fingerprint, read=read, root=root)
        except OSError as exc:
            log.warning("score cache unusable (%s): running without it", exc)
            return None

    def _path(self, digest: str) -> Path:
        return self.folder / f"{digest[:40]}.npz"

    def get(self, digest: str) -> Optional[list[Output]]:
        """The stored outputs of a batch, or None (not stored, not reading, or unreadable: a corrupt entry is
        counted in ``corrupt``, reported, and recomputed by the caller)."""
        path = self._path(digest)
        if not self.read or not path.exists():
            return None
        try:
            with np.load(path) as data:
                outs = _unpack({k: data[k] for k in data.files})
        except UNREADABLE as exc:
            self.corrupt += 1
            log.warning("score cache entry %s is unreadable (%s): recomputing it", path.name,
                        type(exc).__name__)
            return None
        self.hits += 1
        return outs

    def put(self, digest: str, outs: list[Output]) -> None:
        """Store a batch's outputs; a failed write (disk full, read-only) warns once and stops writing."""
        if not self.writable:
            return
        try:
            atomic_write(self._path(digest), lambda p: _save_npz(p, _pack(outs)))
        except OSError as exc:
            self.writable = False
            log.warning("cannot write the score cache (%s): going on without writing it", exc)
            return
        self.writes += 1


def through(store: Optional[ScoreStore], digest: Callable[[], str],
            compute: Callable[[], list[Output]]) -> tuple[list[Output], bool]:
    """A unit of work's outputs, from ``store`` when it has them (True), else computed and stored (False);
    with no store, computed. ``digest`` is only called when there is a store."""
    if store is None:
        return compute(), False
    key = digest()
    outs = store.get(key)
    if outs is not None:
        return outs, True
    outs = compute()
    store.put(key, outs)
    return outs, False


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def _pack(outs: list[Output]) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for j, out in enumerate(outs):
        arrays[f"{j}|logprob"] = out["logprob"]
        arrays[f"{j}|log_bow"] = out["log_bow"]
        arrays[f"{j}|log_nonbow"] = np.asarray(out["log_nonbow"])
        for site, value in (out.get("activations") or {}).items():
            arrays[f"{j}|act|{site}"] = value
        for layer, (lp, lb, ln) in (out.get("lens") or {}).items():
            arrays[f"{j}|lens|{layer}|logprob"], arrays[f"{j}|lens|{layer}|log_bow"] = lp, lb
            arrays[f"{j}|lens|{layer}|log_nonbow"] = np.asarray(ln)
    return arrays


def _unpack(arrays: dict[str, np.ndarray]) -> list[Output]:
    outs: dict[int, Output] = {}
    for key, value in arrays.items():
        parts = key.split("|")
        out = outs.setdefault(int(parts[0]), {})
        if parts[1] == "act":
            out.setdefault("activations", {})[parts[2]] = value
        elif parts[1] == "lens":
            out.setdefault("lens_parts", {}).setdefault(int(parts[2]), {})[parts[3]] = value
        else:
            out[parts[1]] = float(value) if parts[1] == "log_nonbow" else value
    for out in outs.values():
        lens = out.pop("lens_parts", None)
        if lens:
            out["lens"] = {layer: (p["logprob"], p["log_bow"], float(p["log_nonbow"])) for layer, p in lens.items()}
    return [outs[j] for j in range(len(outs))]


def _scoring(info: dict[str, Any]) -> str:
    """How an entry scored: a causal LM's convention, or a masked LM's variant ("?" when unrecorded)."""
    return info.get("convention") or (f"masked {info['variant']}" if "variant" in info else "?")


def list_entries(root: Optional[Path] = None, model: Optional[str] = None) -> list[dict[str, Any]]:
    """One row per cache entry (all, or those whose model id contains ``model``): model, dtype, convention,
    batches stored, size in MB, last written; "?" for what an unreadable info.json does not say."""
    rows = []
    base = root or scores_root()
    for folder in sorted(p for p in base.glob("*") if p.is_dir()) if base.exists() else []:
        try:
            info = json.loads((folder / "info.json").read_text())
        except (OSError, ValueError):
            info = {}
        model_id = str(info.get("model", {}).get("id") or "?")
        if model is not None and model not in model_id:
            continue
        files = list(folder.glob("*.npz"))
        rows.append({"entry": folder.name, "model": model_id, "dtype": info.get("dtype") or "?",
                     "convention": _scoring(info), "capture": bool(info.get("capture_sites")),
                     "batches": len(files), "mb": round(sum(f.stat().st_size for f in files) / 2**20, 2),
                     "last_written": time.strftime("%Y-%m-%d %H:%M", time.localtime(
                         max((f.stat().st_mtime for f in files), default=folder.stat().st_mtime)))})
    return rows


def clear_entries(model: Optional[str] = None, root: Optional[Path] = None) -> int:
    """Delete cache entries (all, or those whose model id contains ``model``); returns how many."""
    rows = list_entries(root, model)
    for row in rows:
        shutil.rmtree((root or scores_root()) / row["entry"], ignore_errors=True)
    return len(rows)
