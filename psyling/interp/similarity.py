"""Representational similarity per layer: condition x condition dissimilarity matrices of pooled region or
sentence vectors, averaged over items and compared with a theoretical or human dissimilarity matrix."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.stats import rankdata

from ..errors import PsylingError
from ..stats.compare import benjamini_hochberg
from .probes import check_features, site_layer

METRICS = ("correlation", "euclidean")
RSA_COLUMNS = ["site", "layer", "rho", "p_value", "q_value", "n_items", "n_items_excluded", "n_conditions",
               "n_permutations", "exact"]


def factor_rdm(factors: dict[str, list[str]], conditions: list[str], factor: str | None = None) -> pd.DataFrame:
    """A theoretical dissimilarity matrix from a set's design: for each pair of conditions, the number of factors
    (or only ``factor``) whose levels differ."""
    names = [factor] if factor is not None else list(factors)
    for name in names:
        if name not in factors:
            raise PsylingError(f"factor_rdm: no factor {name!r} (have: {', '.join(factors) or 'none'})")
        if len(factors[name]) != len(conditions):
            raise PsylingError(f"factor_rdm: factor {name!r} gives {len(factors[name])} levels for "
                               f"{len(conditions)} conditions")
    levels = np.array([list(factors[name]) for name in names], dtype=object)  # [factors, conditions]
    distance = (levels[:, :, None] != levels[:, None, :]).sum(axis=0).astype(float)
    return pd.DataFrame(distance, index=list(conditions), columns=list(conditions))


def _cells(meta: pd.DataFrame, conditions: list[str], set_name: str | None, pool: str,
           position: int | None) -> tuple[sparse.csr_matrix, list, int]:
    """A [items x conditions, n] averaging matrix over the rows of each complete item (every condition present),
    the items kept, and the number of items excluded for a missing condition."""
    missing = [c for c in ("set", "item", "condition", "pool", "position") if c not in meta.columns]
    if missing:
        raise PsylingError(f"representational similarity: meta lacks column(s) {', '.join(missing)}")
    sets = pd.unique(meta["set"])
    if set_name is None and len(sets) > 1:
        raise PsylingError(f"representational similarity: meta holds several sets ({', '.join(map(str, sets))}); "
                           "choose one with set_name")
    mask = (meta["pool"] == pool) & meta["condition"].isin(conditions)
    if set_name is not None:
        mask &= meta["set"] == set_name
    if position is not None:
        mask &= meta["position"] == position
    rows = np.flatnonzero(mask.to_numpy())
    if len(rows) == 0:
        raise PsylingError(f"representational similarity: no {pool} rows for set {set_name or sets[0]!r}, "
                           f"position {position}, conditions {', '.join(conditions)}")
    chosen = meta.iloc[rows]
    if chosen["item"].isna().any():
        raise PsylingError("representational similarity: meta has rows without an item")
    if position is not None and chosen.duplicated(["item", "condition"]).any():
        raise PsylingError(f"representational similarity: several {pool} rows at position {position} for one "
                           "item and condition")
    present = chosen.groupby("item")["condition"].nunique()
    complete = present[present == len(conditions)].index
    kept = chosen["item"].isin(complete).to_numpy()
    items = list(complete)
    item_code = pd.Index(items).get_indexer(chosen["item"][kept])
    cond_code = pd.Index(conditions).get_indexer(chosen["condition"][kept])
    cell = item_code * len(conditions) + cond_code
    counts = np.bincount(cell, minlength=len(items) * len(conditions))
    averaging = sparse.csr_matrix((1.0 / counts[cell], (cell, rows[kept])),
                                  shape=(len(items) * len(conditions), len(meta)))
    return averaging, items, len(present) - len(complete)


def _mean_rdm(vectors: np.ndarray, metric: str) -> np.ndarray:
    """Mean over items of the condition x condition dissimilarities; ``vectors``: [items, conditions, d]."""
    if metric == "correlation":
        centred = vectors - vectors.mean(axis=2, keepdims=True)
        norms = np.linalg.norm(centred, axis=2, keepdims=True)
        if (norms == 0).any():
            raise PsylingError("representational similarity: a constant vector has no correlation distance")
        unit = centred / norms
        per_item = 1.0 - unit @ unit.transpose(0, 2, 1)
    else:
        gram = vectors @ vectors.transpose(0, 2, 1)
        squared = np.diagonal(gram, axis1=1, axis2=2)
        per_item = np.sqrt(np.clip(squared[:, :, None] + squared[:, None, :] - 2 * gram, 0.0, None))
    return per_item.mean(axis=0)


def condition_rdms(features: dict[str, np.ndarray], meta: pd.DataFrame, conditions: list[str],
                   set_name: str | None = None, pool: str = "region", position: int | None = None,
                   metric: str = "correlation") -> dict[str, pd.DataFrame]:
    """Per site, the condition x condition dissimilarity matrix averaged over items: per item, 1 - Pearson r
    (``metric="correlation"``) or the Euclidean distance between the vectors of the ``pool`` unit (the meta's
    ``pool`` column: region, word or token) at ``position`` (e.g. a region number), or, with ``position=None``,
    between the means of all its rows of each item and condition (a sentence vector). Items lacking a condition
    are left out (``layer_rsa`` counts them)."""
    return _rdms(features, meta, list(conditions), set_name, pool, position, metric)[0]


def _rdms(features: dict[str, np.ndarray], meta: pd.DataFrame, conditions: list[str], set_name: str | None,
          pool: str, position: int | None, metric: str) -> tuple[dict[str, pd.DataFrame], int, int]:
    if metric not in METRICS:
        raise PsylingError(f"representational similarity: unknown metric {metric!r} (choose from: "
                           f"{', '.join(METRICS)})")
    sites = check_features(features, len(meta))
    averaging, items, excluded = _cells(meta, conditions, set_name, pool, position)
    if not items:
        raise PsylingError("representational similarity: no item has all of the conditions "
                           f"{', '.join(conditions)}")
    out = {}
    for site in sites:
        pooled = averaging @ np.asarray(features[site], dtype=np.float64)
        if not np.isfinite(pooled).all():
            raise PsylingError(f"features[{site!r}]: contains NaN or infinite values")
        rdm = _mean_rdm(pooled.reshape(len(items), len(conditions), -1), metric)
        out[site] = pd.DataFrame(rdm, index=conditions, columns=conditions)
    return out, len(items), excluded


def _theory_matrix(theory: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    theory = theory.rename(index=str, columns=str)
    conditions = list(theory.index)
    if sorted(conditions) != sorted(theory.columns) or len(set(conditions)) != len(conditions):
        raise PsylingError("layer_rsa: the theory matrix needs the same conditions as index and columns")
    values = theory.loc[:, conditions].to_numpy(dtype=float)
    if len(conditions) < 3:
        raise PsylingError("layer_rsa: the theory matrix needs at least three conditions")
    if not np.isfinite(values).all() or not np.allclose(values, values.T):
        raise PsylingError("layer_rsa: the theory matrix must be finite and symmetric")
    return conditions, values


def _permutations(n: int, n_permutations: int, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """All orderings of ``n`` conditions when there are at most ``n_permutations`` (exact test), else random ones."""
    if math.factorial(n) <= n_permutations:
        return np.array(list(itertools.permutations(range(n)))), True
    return np.array([rng.permutation(n) for _ in range(n_permutations)]), False


def layer_rsa(features: dict[str, np.ndarray], meta: pd.DataFrame, theory: pd.DataFrame,
              set_name: str | None = None, pool: str = "region", position: int | None = None,
              metric: str = "correlation", n_permutations: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per site, Spearman's rho between the upper triangles of the item-averaged dissimilarity matrix
    (``condition_rdms``) and ``theory`` (a condition x condition DataFrame, e.g. ``factor_rdm`` or human
    dissimilarities; its conditions are the ones compared). One row per site (RSA_COLUMNS).

    ``p_value``: one-sided permutation test of rho, relabelling the conditions of the model matrix (rows and
    columns together): all c! relabellings when c! <= ``n_permutations`` (``exact``; p = share with rho >=
    observed, so its floor is the share of relabellings that leave the theory unchanged, e.g. 8/24 for a 2x2
    design), else ``n_permutations`` random ones with p = (1 + #null >= observed) / (1 + n_permutations).
    ``q_value``: Benjamini-Hochberg over sites. Items missing a condition are excluded and counted. A site whose
    averaged matrix is constant above the diagonal gets rho and p NaN."""
    conditions, values = _theory_matrix(theory)
    rdms, n_items, excluded = _rdms(features, meta, conditions, set_name, pool, position, metric)
    upper = np.triu_indices(len(conditions), k=1)
    theory_ranks = rankdata(values[upper])
    if np.ptp(theory_ranks) == 0:
        raise PsylingError("layer_rsa: the theory matrix is constant above the diagonal")
    orders, exact = _permutations(len(conditions), n_permutations, np.random.default_rng(seed))
    centred_theory = theory_ranks - theory_ranks.mean()
    records, pvalues = [], []
    for site, rdm in rdms.items():
        model = rdm.to_numpy()
        candidates = np.array([model[np.ix_(o, o)][upper] for o in orders])  # [permutations, pairs]
        stacked = np.vstack([model[upper], candidates])
        ranks = rankdata(stacked, axis=1)
        ranks -= ranks.mean(axis=1, keepdims=True)
        denominator = np.linalg.norm(ranks, axis=1) * np.linalg.norm(centred_theory)
        with np.errstate(invalid="ignore", divide="ignore"):
            rhos = ranks @ centred_theory / denominator
        rho, null = rhos[0], rhos[1:]
        hits = np.sum(null >= rho - 1e-12)
        p = np.nan if np.isnan(rho) else hits / len(null) if exact else (1 + hits) / (1 + len(null))
        pvalues.append(p)
        records.append({"site": site, "layer": site_layer(site), "rho": rho, "p_value": p, "n_items": n_items,
                        "n_items_excluded": excluded, "n_conditions": len(conditions),
                        "n_permutations": len(null), "exact": exact})
    table = pd.DataFrame.from_records(records)
    table["q_value"] = benjamini_hochberg(pvalues)
    return table[RSA_COLUMNS]
