"""Activations on disk: streamed in shards while scoring, with an index table; read back memory-mapped.

Layout of ``DIR/activations/``: ``index.parquet`` (one row per stored unit: set, item, condition, pool, position,
text, shard, row) and, per site, ``SITE/shard-NNNNN.npy`` arrays [rows, d]. The unit (``pool``) is a word or a
region, whose token activations are pooled by ``method`` (mean, first or last token; position: the word index
from 0, the region number from 1), or a token: one row per scored token, the context token excluded (position:
the token's index in the text, as ``token_index`` in tokens.parquet; text: its character span of the condition
text; ``method`` does not apply and is recorded as null). A shard is written whenever the buffered rows of all
sites reach ``shard_bytes`` (32 MiB), so memory does not grow with the number of stimuli. Every site holds the
same units in the same order, so row k of every site belongs to index row k. ``spec.json`` records what was
captured.

``ActivationReader`` memory-maps the shards and reads rows of a site by range, row numbers or mask, or in
batches (in order or shuffled) with one batch in memory; ``load_activations`` reads whole sites into memory.
Folders written before the index column ``unit`` was renamed ``pool`` still load.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np
import pandas as pd

from ..errors import PsylingError
from ..measures.alignment import Alignment
from ..models.hooks import site_order

POOLS = ("word", "region", "token")
METHODS = ("mean", "first", "last")
INDEX_COLUMNS = ["set", "item", "condition", "pool", "position", "text", "shard", "row"]
Selection = Union[None, slice, Sequence[int], Sequence[bool], np.ndarray]


def sorted_sites(sites: object) -> list[str]:
    """Site names in the order the model computes them (``psyling.models.hooks.site_order``)."""
    return sorted(sites, key=site_order)


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
    """Receives token activations request by request, pools them per word or region (or keeps every token) and
    writes shards."""

    def __init__(self, out: Path, sites: list[str], pool: str = "word", method: str = "mean",
                 dtype: str = "float32", shard_bytes: int = 32 * 2**20) -> None:
        if pool not in POOLS:
            raise PsylingError(f"unknown pooling unit {pool!r} (choose from {', '.join(POOLS)})")
        if method not in METHODS:
            raise PsylingError(f"unknown pooling method {method!r} (choose from {', '.join(METHODS)})")
        self.out, self.sites, self.pool = Path(out), sites, pool
        self.method = None if pool == "token" else method  # token rows are not pooled
        self.dtype, self.shard_bytes = np.dtype(dtype), shard_bytes
        self.row_bytes = 0  # bytes of one stored unit over all sites, known after the first request
        self.index: list[tuple] = []
        self.buffer: dict[str, list[np.ndarray]] = {site: [] for site in sites}
        self.buffered, self.shard = 0, 0
        for site in sites:
            (self.out / site).mkdir(parents=True, exist_ok=True)

    @property
    def spec(self) -> dict[str, Any]:
        """What is stored: sites, pool, method (None for tokens) and dtype."""
        return {"sites": self.sites, "pool": self.pool, "method": self.method, "dtype": str(self.dtype)}

    def _units(self, key: tuple, alignment: Alignment, region_texts: Sequence[str], token_texts: Sequence[str],
               n_tokens: int) -> tuple[list[str], list[int], Optional[Sequence[int]]]:
        """(texts, positions, token -> unit groups) of one request's units; groups None: one unit per token."""
        if self.pool == "token":
            if len(token_texts) != n_tokens:
                raise PsylingError(f"set={key[0]} item={key[1]} condition={key[2]}: token activations need the "
                                   f"text of each token ({len(token_texts)} texts for {n_tokens} tokens)")
            return list(token_texts), list(range(n_tokens)), None
        if self.pool == "word":
            return list(alignment.words), list(range(len(alignment.words))), alignment.token_word
        return list(region_texts), [k + 1 for k in range(len(region_texts))], alignment.token_region

    def add(self, key: tuple[str, str, str], activations: dict[str, np.ndarray], alignment: Alignment,
            region_texts: Sequence[str], token_texts: Sequence[str] = ()) -> None:
        """Store one request's token activations (key = set, item, condition; rows = its text's tokens), pooled
        by its word or region alignment; pool "token" keeps every row and needs ``token_texts``, the character
        span of each token in the condition text."""
        texts, positions, groups = self._units(key, alignment, region_texts, token_texts, len(alignment.token_word))
        pooled = {site: activations[site] if groups is None else
                  pool_tokens(activations[site], groups, len(texts), self.method) for site in self.sites}
        self.store(key, pooled, texts, positions)

    def store(self, key: tuple[str, str, str], rows: dict[str, np.ndarray], texts: Sequence[str],
              positions: Sequence[int]) -> None:
        """Store already pooled rows (one per unit, every site) with their texts and positions."""
        for site in self.sites:
            self.buffer[site].append(np.asarray(rows[site]).astype(self.dtype))
        if len(texts) and not self.row_bytes:
            self.row_bytes = sum(self.buffer[s][-1][0].nbytes for s in self.sites)
        for position, text in zip(positions, texts):
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
        """Write the last shard, the index and spec.json (``spec`` plus what is stored); returns the folder."""
        self.flush()
        pd.DataFrame(self.index, columns=INDEX_COLUMNS).to_parquet(self.out / "index.parquet", index=False)
        (self.out / "spec.json").write_text(json.dumps({**spec, **self.spec}, indent=2) + "\n")
        return self.out


def _folder(path: Path) -> Path:
    path = Path(path)
    if (path / "activations" / "index.parquet").is_file():
        path = path / "activations"
    if not (path / "index.parquet").is_file():
        raise PsylingError(f"{path}: no activations here (run psyling run with --activations)")
    return path


def _read_spec(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / "spec.json").read_text())
    except (OSError, ValueError) as exc:
        raise PsylingError(f"{folder / 'spec.json'}: unreadable ({exc})") from None


def activation_sites(path: Path) -> list[str]:
    """Captured site names in the order the model computes them."""
    return sorted_sites(_read_spec(_folder(path))["sites"])


class ActivationReader:
    """An activations folder (a run directory or its ``activations/``) with memory-mapped shards: ``meta`` (one
    row per stored unit), ``sites``, ``spec``; rows of a site are read only from the shards that hold them."""

    def __init__(self, path: Path) -> None:
        self.folder = _folder(path)
        self.spec = _read_spec(self.folder)
        self.sites = sorted_sites(self.spec["sites"])
        self.index = pd.read_parquet(self.folder / "index.parquet").rename(columns={"unit": "pool"})
        self._maps: dict[str, list[np.ndarray]] = {}
        self._starts: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.index)

    @property
    def meta(self) -> pd.DataFrame:
        """The index rows without their storage columns (shard, row)."""
        return self.index.drop(columns=["shard", "row"])

    def check_sites(self, sites: Optional[Sequence[str]] = None) -> list[str]:
        """``sites`` (None: every captured site), each of which must have been captured."""
        chosen = list(sites) if sites else self.sites
        missing = [s for s in chosen if s not in self.sites]
        if missing:
            raise PsylingError(f"{self.folder}: site {missing[0]!r} was not captured "
                               f"(captured: {', '.join(self.sites)})")
        return chosen

    def shards(self, site: str) -> list[np.ndarray]:
        """The shards of ``site`` as read-only memory maps, in row order (opened once)."""
        if site not in self._maps:
            self.check_sites([site])
            maps = [np.load(f, mmap_mode="r") for f in sorted((self.folder / site).glob("shard-*.npy"))]
            starts = np.cumsum([0] + [len(m) for m in maps])
            if starts[-1] != len(self.index):
                raise PsylingError(f"{self.folder / site}: {starts[-1]} rows for {len(self.index)} index rows "
                                   "(incomplete run?)")
            self._maps[site], self._starts[site] = maps, starts
        return self._maps[site]

    def numbers(self, selection: Selection = None) -> np.ndarray:
        """Index row numbers of a selection (None: all; a slice, row numbers, or a boolean mask over the rows), as
        a new array."""
        n = len(self)
        if selection is None:
            return np.arange(n)
        if isinstance(selection, slice):
            return np.arange(n)[selection]
        chosen = np.asarray(selection)
        if chosen.dtype == bool:
            if chosen.shape != (n,):
                raise PsylingError(f"{self.folder}: a mask of shape {chosen.shape} for {n} index rows")
            return np.flatnonzero(chosen)
        if chosen.size == 0:
            return np.zeros(0, dtype=np.int64)
        if chosen.dtype.kind not in "iu" or chosen.ndim != 1 or chosen.min() < 0 or chosen.max() >= n:
            raise PsylingError(f"{self.folder}: row numbers must be integers in 0..{n - 1}")
        return chosen.astype(np.int64)

    def rows(self, site: str, selection: Selection = None) -> np.ndarray:
        """The selected rows of ``site`` in memory ([k, d], in the selection's order)."""
        return self._gather(site, self.numbers(selection))

    def _gather(self, site: str, numbers: np.ndarray) -> np.ndarray:
        maps, starts = self.shards(site), self._starts[site]
        out = np.empty((len(numbers), maps[0].shape[1] if maps else 0), dtype=maps[0].dtype if maps else np.float32)
        shard = np.searchsorted(starts, numbers, side="right") - 1
        order = np.argsort(shard, kind="stable")
        bounds = np.searchsorted(shard[order], np.arange(len(maps) + 1))
        for k, m in enumerate(maps):
            chosen = order[bounds[k]:bounds[k + 1]]
            if len(chosen):
                out[chosen] = m[numbers[chosen] - starts[k]]
        return out

    def iter_batches(self, site: str, batch_rows: int, shuffle: bool = False, seed: int = 0,
                     selection: Selection = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(index row numbers, rows [k, d]) of ``site`` in batches of ``batch_rows`` (the last may be smaller):
        in index order, or with ``shuffle`` in a random order fixed by ``seed``; every selected row comes exactly
        once. Memory: one batch, plus the row order (8 bytes per row)."""
        if batch_rows < 1:
            raise PsylingError(f"batch_rows must be at least 1 (got {batch_rows})")
        numbers = self.numbers(selection)
        if shuffle:
            np.random.default_rng(seed).shuffle(numbers)
        self.shards(site)
        for start in range(0, len(numbers), batch_rows):
            chunk = numbers[start:start + batch_rows]
            yield chunk, self._gather(site, chunk)


def load_activations(path: Path, sites: Optional[Sequence[str]] = None, sets: Optional[Sequence[str]] = None,
                     as_torch: bool = False) -> tuple[pd.DataFrame, dict[str, Any]]:
    """(meta, {site: [n, d] array}) for a run directory or its activations folder, in memory; rows of every array
    follow ``meta`` (index rows, optionally only some sets). ``ActivationReader`` reads without loading."""
    reader = ActivationReader(path)
    chosen = reader.check_sites(sites)
    keep = reader.index["set"].isin(sets).to_numpy() if sets else None
    features: dict[str, Any] = {site: reader.rows(site, keep) for site in chosen}
    if as_torch:
        import torch
        features = {k: torch.from_numpy(v) for k, v in features.items()}
    meta = reader.meta if keep is None else reader.meta[keep]
    return meta.reset_index(drop=True), features
