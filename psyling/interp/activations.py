"""Pooled activations on disk: streamed in shards while scoring, with an index table, loaded back as arrays.

Layout of ``DIR/activations/``: ``index.parquet`` (one row per pooled unit: set, item, condition, unit, position,
text, shard, row) and, per site, ``SITE/shard-NNNNN.npy`` arrays [rows, d]; a shard is written whenever the
buffered rows of all sites reach ``shard_bytes`` (32 MiB), so memory does not grow with the number of stimuli.
Every site holds the same units in the same order, so row k of every site belongs to index row k.
``spec.json`` records what was captured.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from ..errors import PsylingError
from ..measures.alignment import Alignment
from ..models.capture import parse_site

POOLS = ("word", "region")
METHODS = ("mean", "first", "last")
INDEX_COLUMNS = ["set", "item", "condition", "unit", "position", "text", "shard", "row"]


def pool_tokens(values: np.ndarray, groups: Sequence[int], n_groups: int, method: str = "mean") -> np.ndarray:
    """[n_groups, d] pooled rows from token rows ``values`` [n_tokens, d]; ``groups[t]`` is token t's unit.
    A unit without tokens (e.g. an empty region) gets NaN."""
    groups = np.asarray(groups)
    out = np.full((n_groups, values.shape[1]), np.nan, dtype=np.float32)
    for g in range(n_groups):
        rows = np.flatnonzero(groups == g)
        if len(rows):
            picked = values[rows].astype(np.float32)
            out[g] = picked.mean(0) if method == "mean" else picked[0] if method == "first" else picked[-1]
    return out


class ActivationWriter:
    """Receives token activations request by request, pools them per word or region and writes shards."""

    def __init__(self, out: Path, sites: list[str], pool: str = "word", method: str = "mean",
                 dtype: str = "float32", shard_bytes: int = 32 * 2**20) -> None:
        if pool not in POOLS:
            raise PsylingError(f"unknown pooling unit {pool!r} (choose from {', '.join(POOLS)})")
        if method not in METHODS:
            raise PsylingError(f"unknown pooling method {method!r} (choose from {', '.join(METHODS)})")
        self.out, self.sites, self.pool, self.method = Path(out), sites, pool, method
        self.dtype, self.shard_bytes = np.dtype(dtype), shard_bytes
        self.row_bytes = 0  # bytes of one pooled unit over all sites, known after the first request
        self.index: list[tuple] = []
        self.buffer: dict[str, list[np.ndarray]] = {site: [] for site in sites}
        self.buffered, self.shard = 0, 0
        for site in sites:
            (self.out / site).mkdir(parents=True, exist_ok=True)

    def add(self, key: tuple[str, str, str], activations: dict[str, np.ndarray], alignment: Alignment,
            region_texts: Sequence[str]) -> None:
        """Pool one request's activations (key = set, item, condition) by its word or region alignment."""
        if self.pool == "word":
            groups, labels = alignment.token_word, alignment.words
            positions = list(range(len(labels)))
        else:
            groups, labels = alignment.token_region, list(region_texts)
            positions = [k + 1 for k in range(len(labels))]
        for site in self.sites:
            self.buffer[site].append(pool_tokens(activations[site], groups, len(labels), self.method)
                                     .astype(self.dtype))
        self.row_bytes = self.row_bytes or sum(self.buffer[s][-1][0].nbytes for s in self.sites)
        for position, text in zip(positions, labels):
            self.index.append((*key, self.pool, position, text, self.shard, self.buffered))
            self.buffered += 1
        if self.buffered * self.row_bytes >= self.shard_bytes:  # bounded buffer: memory stays flat
            self.flush()

    def flush(self) -> None:
        if not self.buffered:
            return
        for site in self.sites:
            np.save(self.out / site / f"shard-{self.shard:05d}.npy", np.concatenate(self.buffer[site]))
            self.buffer[site] = []
        self.shard, self.buffered = self.shard + 1, 0

    def close(self, spec: dict) -> Path:
        """Write the last shard, the index and spec.json; returns the activations folder."""
        self.flush()
        pd.DataFrame(self.index, columns=INDEX_COLUMNS).to_parquet(self.out / "index.parquet", index=False)
        (self.out / "spec.json").write_text(json.dumps({**spec, "sites": self.sites, "pool": self.pool,
                                                        "method": self.method, "dtype": str(self.dtype)},
                                                       indent=2) + "\n")
        return self.out


def _folder(path: Path) -> Path:
    path = Path(path)
    if (path / "activations" / "index.parquet").is_file():
        path = path / "activations"
    if not (path / "index.parquet").is_file():
        raise PsylingError(f"{path}: no activations here (run psyling run with --activations)")
    return path


def activation_sites(path: Path) -> list[str]:
    """Captured site names in layer order."""
    spec = json.loads((_folder(path) / "spec.json").read_text())
    return sorted(spec["sites"], key=lambda s: (parse_site(s)[1], parse_site(s)[0]))


def load_activations(path: Path, sites: Optional[Sequence[str]] = None, sets: Optional[Sequence[str]] = None,
                     as_torch: bool = False) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """(meta, {site: [n, d] array}) for a run directory or its activations folder; rows of every array follow
    ``meta`` (index rows, optionally only some sets)."""
    folder = _folder(path)
    index = pd.read_parquet(folder / "index.parquet")
    available = activation_sites(folder)
    sites = list(sites) if sites else available
    missing = [s for s in sites if s not in available]
    if missing:
        raise PsylingError(f"{folder}: site {missing[0]!r} was not captured (captured: {', '.join(available)})")
    keep = index["set"].isin(sets).to_numpy() if sets else np.ones(len(index), bool)
    features = {}
    for site in sites:
        shards = sorted((folder / site).glob("shard-*.npy"))
        stacked = np.concatenate([np.load(f) for f in shards]) if shards else np.zeros((0, 0))
        if len(stacked) != len(index):
            raise PsylingError(f"{folder / site}: {len(stacked)} rows for {len(index)} index rows (incomplete run?)")
        features[site] = stacked[keep]
    if as_torch:
        import torch
        features = {k: torch.from_numpy(v) for k, v in features.items()}
    return index[keep].drop(columns=["shard", "row"]).reset_index(drop=True), features
