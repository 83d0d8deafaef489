"""SAE latents that carry a set's contrast: paired tests per latent across items (BH across latents), effect sizes
and AUROC against each factor; each chosen latent's top-activating contexts (in the stimuli and, streamed in
bounded memory, in the training text); and k-sparse probes on latents (Gurnee et al. 2023) beside dense probes.

Inputs are in memory: ``latents`` [n_rows, d_sae] (one row per item x condition, the latents at the critical
region) and ``meta`` (n_rows rows: set, item, condition, ...). Sign convention: a factor's levels are taken in the
order the set's ``factors`` first name them (``level_a``, then ``level_b``); ``difference`` = level_b - level_a,
and AUROC is the probability that a row at level_b has a higher activation than a row at level_a (ties count
half), so both are positive when the latent is more active at level_b (e.g. mismatch over match)."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from itertools import combinations
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import sparse, stats

from ..errors import PsylingError
from ..stats.compare import benjamini_hochberg
from ..stimuli.schema import StimulusSet
from .probes import group_bootstrap, logistic_oof, majority_oof, group_folds, labels_from_conditions, probe_layers
from .sae import SparseAutoencoder

TESTS = ("wilcoxon", "t")
EXACT_BELOW = 50  # items below which the signed-rank p is exact (no zero or tied differences), as in R
META_COLUMNS = ("set", "item", "condition")
CONTRAST_COLUMNS = ["set", "factor", "level_a", "level_b", "latent", "n_items", "mean_a", "mean_b", "difference",
                    "d_z", "p_value", "q_value", "significant", "auroc", "active_a", "active_b", "test"]
TOP_COLUMNS = ["latent", "rank", "activation", "set", "item", "condition", "position", "text"]
SPARSE_COLUMNS = ["probe", "site", "k", "accuracy", "ci_low", "ci_high", "n", "n_excluded", "unconverged",
                  "chosen", "in_every_fold"]
Key = tuple[str, str, str]


@dataclass(frozen=True)
class ContrastConfig:
    """``alpha``: the q-value below which a latent is ``significant``; ``min_active``: rows of the set on which a
    latent must be active (> 0) to be tested; ``test``: ``wilcoxon`` (signed-rank, the default: sparse latents
    are zero-inflated and skewed, so a t test's normality fails) or ``t`` (paired t test)."""
    alpha: float = 0.05
    min_active: int = 1
    test: str = "wilcoxon"

    def __post_init__(self) -> None:
        if self.test not in TESTS:
            raise PsylingError(f"unknown paired test {self.test!r} (choose from {', '.join(TESTS)})")
        if not 0 < self.alpha < 1:
            raise PsylingError(f"alpha must lie in (0, 1) (got {self.alpha})")
        if self.min_active < 1:
            raise PsylingError(f"min_active must be at least 1 (got {self.min_active})")


def _require(table: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise PsylingError(f"{what} lacks column(s) {', '.join(missing)}")


def _checked(latents: object, meta: pd.DataFrame, columns: Sequence[str] = META_COLUMNS) -> np.ndarray:
    """``latents`` as a 2-D array with one row per ``meta`` row; ``meta`` must have ``columns``."""
    array = latents.detach().cpu().numpy() if isinstance(latents, torch.Tensor) else np.asarray(latents)
    if array.ndim != 2 or array.shape[0] != len(meta) or array.shape[1] == 0:
        raise PsylingError(f"latents: expected an array of shape [{len(meta)}, d_sae], got {array.shape}")
    _require(meta, columns, "latent meta")
    return array


def _wilcoxon(differences: np.ndarray) -> np.ndarray:
    """Two-sided signed-rank p per column, chosen per column as R's ``wilcox.test``: exact below EXACT_BELOW
    items when no difference is zero or tied, else the normal approximation (zeros dropped, tie and continuity
    corrections). scipy's own choice is made once for all columns, so it is not used."""
    n, m = differences.shape
    magnitudes = np.sort(np.abs(differences), axis=0)
    untied = (magnitudes[0] > 0) & (np.diff(magnitudes, axis=0) != 0).all(axis=0)
    exact = untied & (n < EXACT_BELOW)
    p = np.empty(m)
    if exact.any():
        p[exact] = stats.wilcoxon(differences[:, exact], axis=0, method="exact").pvalue
    if (~exact).any():
        p[~exact] = stats.wilcoxon(differences[:, ~exact], axis=0, zero_method="wilcox", correction=True,
                                   method="asymptotic").pvalue
    return p


def paired_p_values(differences: np.ndarray, test: str = "wilcoxon") -> np.ndarray:
    """Two-sided p per column of ``differences`` [n_items, m]: the Wilcoxon signed-rank test (``_wilcoxon``) or
    the one-sample t test of the differences. A column of zeros gives 1; a t test of constant non-zero
    differences gives 0; fewer than two items give NaN. Each column's p depends on that column only."""
    n, m = differences.shape
    if n < 2:
        return np.full(m, np.nan)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        if test == "wilcoxon":
            p = _wilcoxon(differences)
        else:
            p = stats.ttest_1samp(differences, 0.0, axis=0).pvalue
    p = np.asarray(p, dtype=float)
    return np.where((differences == 0).all(axis=0), 1.0, p)


def effect_size_dz(differences: np.ndarray) -> np.ndarray:
    """Cohen's d_z per column: mean / sd (ddof 1) of the paired differences; NaN when sd is 0 or n < 2."""
    if differences.shape[0] < 2:
        return np.full(differences.shape[1], np.nan)
    sd = differences.std(axis=0, ddof=1)
    mean = differences.mean(axis=0)
    return np.divide(mean, sd, out=np.full(mean.shape, np.nan), where=sd > 0)


def auroc(values: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """AUROC of each column of ``values`` [n, m] for the rows where ``positive`` is True against the others, by
    the rank-sum formula with average ranks (a tie counts half); NaN when either class is empty."""
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return np.full(values.shape[1], np.nan)
    ranks = stats.rankdata(values, axis=0)
    return (ranks[positive].sum(axis=0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _item_means(values: np.ndarray, item_codes: np.ndarray, at_level: np.ndarray, n_items: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Per item, the mean of ``values`` over its rows at a level ([n_items, m]) and whether it has any."""
    rows = np.flatnonzero(at_level)
    membership = sparse.csr_matrix((np.ones(len(rows)), (item_codes[rows], rows)), shape=(n_items, len(values)))
    counts = np.asarray(membership.sum(axis=1)).ravel()
    sums = np.asarray(membership @ values)
    return sums / np.maximum(counts, 1)[:, None], counts > 0


def _set_rows(latents: np.ndarray, meta: pd.DataFrame, stim: StimulusSet, config: ContrastConfig
              ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The set's rows with finite latents (meta, values of the tested latents as float64, their indices)."""
    if not stim.factors:
        raise PsylingError(f"set {stim.name}: declares no factors, so no contrast to test (add factors to its "
                           "manifest)")
    in_set = (meta["set"] == stim.name).to_numpy()
    finite = np.isfinite(latents).all(axis=1)
    rows = np.flatnonzero(in_set & finite)
    if len(rows) == 0:
        raise PsylingError(f"set {stim.name}: no rows with finite latents in the latent meta")
    values = latents[rows].astype(np.float64)
    tested = np.flatnonzero((values > 0).sum(axis=0) >= config.min_active)
    return meta.iloc[rows].reset_index(drop=True), values[:, tested], tested


def _level_contrast(values: np.ndarray, item_codes: np.ndarray, labels: np.ndarray, level_a: str, level_b: str,
                    test: str, where: str) -> dict[str, np.ndarray]:
    """The columns of one level pair (all latents at once), without q-values."""
    n_items = int(item_codes.max()) + 1
    mean_a, has_a = _item_means(values, item_codes, labels == level_a, n_items)
    mean_b, has_b = _item_means(values, item_codes, labels == level_b, n_items)
    paired = has_a & has_b
    if not paired.any():
        raise PsylingError(f"{where}: no item has rows at both levels {level_a!r} and {level_b!r}")
    differences = mean_b[paired] - mean_a[paired]
    rows = (labels == level_a) | (labels == level_b)
    return {"n_items": np.full(values.shape[1], int(paired.sum())), "mean_a": mean_a[paired].mean(axis=0),
            "mean_b": mean_b[paired].mean(axis=0), "difference": differences.mean(axis=0),
            "d_z": effect_size_dz(differences), "p_value": paired_p_values(differences, test),
            "auroc": auroc(values[rows], labels[rows] == level_b),
            "active_a": (values[labels == level_a] > 0).mean(axis=0),
            "active_b": (values[labels == level_b] > 0).mean(axis=0)}


def contrast_latents(latents: object, meta: pd.DataFrame, stim: StimulusSet,
                     config: ContrastConfig = ContrastConfig()) -> pd.DataFrame:
    """One row per factor x level pair x latent (active on at least ``min_active`` of the set's rows): the paired
    per-item difference (level_b - level_a, each level's conditions averaged, so for a 2x2 the other factor is
    averaged out), each level's mean, d_z, the paired test's p, BH q across latents and level pairs (per set x
    factor), AUROC (rows, level_b vs level_a), the fraction of rows active per level and n_items (items with
    rows at both levels). Sorted by q, then |d_z| (largest first). CONTRAST_COLUMNS."""
    array = _checked(latents, meta)
    rows, values, tested = _set_rows(array, meta.reset_index(drop=True), stim, config)
    conditions = list(stim.conditions)
    item_codes = pd.factorize(rows["item"])[0]
    parts = []
    for factor, levels in stim.factors.items():
        try:
            labels = labels_from_conditions(rows, {factor: list(levels)}, conditions, factor).to_numpy()
        except PsylingError as exc:
            raise PsylingError(f"set {stim.name}: {exc}") from None
        pairs = []
        for level_a, level_b in combinations(list(dict.fromkeys(levels)), 2):
            columns = _level_contrast(values, item_codes, labels, level_a, level_b, config.test,
                                      f"set {stim.name}: factor {factor!r}")
            pairs.append(pd.DataFrame({"set": stim.name, "factor": factor, "level_a": level_a, "level_b": level_b,
                                       "latent": tested, **columns}))
        table = pd.concat(pairs, ignore_index=True)
        table["q_value"] = benjamini_hochberg(table["p_value"].to_numpy())
        parts.append(table)
    out = pd.concat(parts, ignore_index=True).assign(test=config.test)
    out["significant"] = out["q_value"] < config.alpha
    order = np.lexsort((-out["d_z"].abs().fillna(-1).to_numpy(), out["q_value"].fillna(np.inf).to_numpy()))
    return out.iloc[order][CONTRAST_COLUMNS].reset_index(drop=True)


class RunningTop:
    """The ``n`` highest positive activations of each of ``m`` latents seen so far, with their row numbers, in
    memory O(m x n): higher activation first, then the lower row number (so batching does not change it)."""

    def __init__(self, m: int, n: int) -> None:
        if n < 1:
            raise PsylingError(f"top contexts: n must be at least 1 (got {n})")
        self.n = n
        self.values = np.full((m, 0), -np.inf)
        self.rows = np.zeros((m, 0), dtype=np.int64)

    def update(self, rows: np.ndarray, activations: np.ndarray) -> None:
        """Merge a batch: row numbers [b] and their activations [b, m]. Only the batch's candidates are sorted:
        per latent, the values at or above both its batch's n-th largest and the n-th kept so far."""
        values = np.where(activations > 0, activations, -np.inf).T.astype(np.float64)
        numbers = np.broadcast_to(np.asarray(rows, dtype=np.int64), values.shape)
        if values.shape[1] > self.n:
            floor = np.partition(values, -self.n, axis=1)[:, -self.n]
            if self.values.shape[1] == self.n:
                floor = np.maximum(floor, self.values[:, -1])
            values = np.where(values >= floor[:, None], values, -np.inf)
            width = int(np.isfinite(values).sum(axis=1).max())
            if width == 0:
                return
            keep = np.argpartition(-values, width - 1, axis=1)[:, :width]
            values, numbers = np.take_along_axis(values, keep, axis=1), np.take_along_axis(numbers, keep, axis=1)
        values = np.concatenate([self.values, values], axis=1)
        numbers = np.concatenate([self.rows, numbers], axis=1)
        order = np.lexsort((numbers, -values), axis=-1)[:, :self.n]
        self.values = np.take_along_axis(values, order, axis=1)
        self.rows = np.take_along_axis(numbers, order, axis=1)

    def table(self, chosen: np.ndarray) -> pd.DataFrame:
        """latent, rank (from 1), activation, row: the kept positive activations."""
        keep = np.isfinite(self.values)
        latent_index, rank = np.nonzero(keep)
        return pd.DataFrame({"latent": chosen[latent_index], "rank": rank + 1,
                             "activation": self.values[keep], "row": self.rows[keep]})


def _chosen(chosen: Iterable[int], d_sae: int) -> np.ndarray:
    latents = np.asarray(list(chosen), dtype=np.int64)
    if latents.size == 0 or latents.min() < 0 or latents.max() >= d_sae:
        raise PsylingError(f"top contexts: chosen latents must be indices in 0..{d_sae - 1} (got "
                           f"{latents.tolist()})")
    return latents


def _with_rows(top: pd.DataFrame, meta: pd.DataFrame) -> pd.DataFrame:
    """The running-top table joined with its rows' set, item, condition, position and text (TOP_COLUMNS)."""
    picked = meta.iloc[top["row"].to_numpy()].reset_index(drop=True)
    out = top.drop(columns="row").reset_index(drop=True)
    for column in TOP_COLUMNS[3:]:
        out[column] = picked[column].to_numpy() if column in picked.columns else None
    return out[TOP_COLUMNS]


def stimulus_top_contexts(latents: object, meta: pd.DataFrame, chosen: Iterable[int], n: int = 10
                          ) -> pd.DataFrame:
    """Each chosen latent's ``n`` top-activating stimulus rows (positive activations only; TOP_COLUMNS, position
    and text from ``meta`` where it has them)."""
    array = _checked(latents, meta)
    latents_chosen = _chosen(chosen, array.shape[1])
    top = RunningTop(len(latents_chosen), n)
    values = np.nan_to_num(array[:, latents_chosen].astype(np.float64), nan=0.0)
    top.update(np.arange(len(array)), values)
    return _with_rows(top.table(latents_chosen), meta.reset_index(drop=True))


def text_top_contexts(sae: SparseAutoencoder, batches: Iterable[tuple[np.ndarray, np.ndarray]],
                      index: pd.DataFrame, chosen: Iterable[int], n: int = 10) -> pd.DataFrame:
    """Each chosen latent's ``n`` top-activating tokens of the training text, streamed: ``batches`` yields (index
    row numbers, activation rows [b, d_in]) as ``ActivationReader.iter_batches``; each batch is fully encoded
    (TopK needs every pre-activation; BatchTopK per token, as at inference) and only a running top-n is kept.
    ``index``: set, item, condition, position, text per row number. TOP_COLUMNS."""
    latents_chosen = _chosen(chosen, sae.config.d_sae)
    _require(index, TOP_COLUMNS[3:], "activation index")
    top = RunningTop(len(latents_chosen), n)
    selected = torch.as_tensor(latents_chosen, device=sae.W_enc.device)
    was_training = sae.training
    sae.eval()
    try:
        with torch.no_grad():
            for numbers, rows in batches:
                numbers = np.asarray(numbers, dtype=np.int64)
                if len(numbers) and (numbers.min() < 0 or numbers.max() >= len(index)):
                    raise PsylingError(f"top contexts: batch row numbers outside the index (0..{len(index) - 1})")
                x = rows if isinstance(rows, torch.Tensor) else torch.as_tensor(np.require(rows, requirements="W"))
                x = x.to(sae.W_enc.device)
                z = sae.encode(x).index_select(1, selected)
                top.update(numbers, z.to(torch.float64).cpu().numpy())
    finally:
        sae.train(was_training)
    return _with_rows(top.table(latents_chosen), index.reset_index(drop=True))


def sentences_of(sets: Iterable[StimulusSet]) -> dict[Key, str]:
    """(set, item, condition) -> the condition's text, the text whose character spans are the token texts."""
    return {(stim.name, item.id, name): condition.text for stim in sets for item in stim.items
            for name, condition in item.conditions.items()}


def _spans(sentence: str, tokens: Sequence[str]) -> Optional[list[tuple[int, int]]]:
    """Each token's character span in ``sentence``, found left to right; None when one is not found."""
    spans, position = [], 0
    for token in tokens:
        start = sentence.find(token, position)
        if start < 0:
            return None
        spans.append((start, start + len(token)))
        position = start + len(token)
    return spans


def context_string(sentence: str, tokens: Sequence[str], position: int, window: int = 60) -> str:
    """``sentence`` with token ``position`` of ``tokens`` (its texts, in order) marked «so», trimmed to ``window``
    characters either side ("…" where cut). Tokens not found in the sentence in order: their join by spaces."""
    if not 0 <= position < len(tokens):
        raise PsylingError(f"context: token position {position} outside 0..{len(tokens) - 1}")
    spans = _spans(sentence, tokens)
    if spans is None:
        sentence = " ".join(tokens)
        spans = _spans(sentence, tokens)
    start, end = spans[position]
    left = ("…" if start > window else "") + sentence[max(0, start - window):start]
    right = sentence[end:end + window] + ("…" if len(sentence) - end > window else "")
    return f"{left}«{sentence[start:end]}»{right}"


def mark_contexts(top: pd.DataFrame, index: pd.DataFrame, sentences: Mapping[Key, str], window: int = 60
                  ) -> pd.DataFrame:
    """``top`` (from ``text_top_contexts``) with a ``context`` column: each row's token marked in its sentence
    (``sentences``: (set, item, condition) -> text, e.g. ``sentences_of(sets)``; the token texts come from the
    token-level ``index``)."""
    keys = list(zip(top["set"], top["item"], top["condition"]))
    missing = [key for key in dict.fromkeys(keys) if key not in sentences]
    if missing:
        raise PsylingError(f"contexts: no sentence for set={missing[0][0]} item={missing[0][1]} "
                           f"condition={missing[0][2]}")
    wanted = pd.MultiIndex.from_tuples(list(dict.fromkeys(keys)), names=list(META_COLUMNS))
    rows = index[pd.MultiIndex.from_frame(index[list(META_COLUMNS)]).isin(wanted)].sort_values("position")
    tokens = {key: ({p: k for k, p in enumerate(group["position"])}, list(group["text"].astype(str)))
              for key, group in rows.groupby(list(META_COLUMNS), sort=False)}
    contexts = []
    for key, position in zip(keys, top["position"]):
        where, texts = tokens.get(key, ({}, []))
        if position not in where:
            raise PsylingError(f"contexts: the index has no token at position {position} for set={key[0]} "
                               f"item={key[1]} condition={key[2]}")
        contexts.append(context_string(sentences[key], texts, where[position], window))
    return top.assign(context=contexts)


def _class_spread(x: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """Per column, the largest minus the smallest class mean (|mean difference| for two classes)."""
    counts = np.bincount(y, minlength=n_classes).astype(float)
    sums = np.zeros((n_classes, x.shape[1]))
    np.add.at(sums, y, x)
    present = counts > 0
    means = sums[present] / counts[present][:, None]
    return means.max(axis=0) - means.min(axis=0)


def _sparse_rows(latents: np.ndarray, y: np.ndarray, splits: list, ks: Sequence[int], max_iter: int
                 ) -> tuple[dict[str, np.ndarray], dict[int, list[list[int]]], dict[int, int]]:
    """Out-of-fold correctness per k, the latents chosen in each fold (ranked on the training fold only) and
    the fits that did not converge."""
    n_classes = int(y.max()) + 1
    predicted = {k: np.empty_like(y) for k in ks}
    chosen = {k: [] for k in ks}
    unconverged = dict.fromkeys(ks, 0)
    for train, test in splits:
        ranking = np.argsort(-_class_spread(latents[train], y[train], n_classes), kind="stable")
        for k in ks:
            picked = np.sort(ranking[:k])
            fold_prediction, failed = logistic_oof(latents[:, picked], y, [(train, test)], max_iter)
            predicted[k][test] = fold_prediction[test]
            chosen[k].append(picked.tolist())
            unconverged[k] += failed
    correct = {f"k={k}": (predicted[k] == y).astype(float) for k in ks}
    return correct, chosen, unconverged


def _dense_rows(dense: dict[str, np.ndarray], meta: pd.DataFrame, label: str, group: str, folds: int, seed: int,
                max_iter: int) -> list[dict]:
    """The dense probe's out-of-fold accuracy per site (``probe_layers``: same rows and folds)."""
    table = probe_layers(dense, meta, label, group=group, folds=folds, control=None, n_permutations=0, seed=seed,
                         max_iter=max_iter)
    unconverged = table[table["metric"] == "unconverged"].set_index("site")["value"]
    return [{"probe": "dense", "site": row.site, "k": int(np.shape(dense[row.site])[1]), "accuracy": row.value,
             "ci_low": row.ci_low, "ci_high": row.ci_high, "n": row.n, "n_excluded": row.n_excluded,
             "unconverged": int(unconverged.get(row.site, 0))}
            for row in table[table["metric"] == "accuracy"].itertuples()]


def sparse_probes(latents: object, meta: pd.DataFrame, label: str, ks: Sequence[int] = (1, 2, 4, 8, 16),
                  group: str = "item", folds: int = 5, seed: int = 0, dense: Optional[dict[str, np.ndarray]] = None,
                  max_iter: int = 1000) -> pd.DataFrame:
    """k-sparse probes on latents (Gurnee et al. 2023): in each training fold, rank latents by the spread of
    their class means (|mean difference| for two classes), keep the top k and fit the standardised logistic
    regression of ``probe_layers`` on them; GroupKFold on ``group`` (no item in train and test). One row per k
    (``chosen``: the latents of each fold; ``in_every_fold``), a ``majority`` row (the training fold's majority
    class) and, with ``dense`` (site -> [n, d]), a ``dense`` row per site. CIs: 95% group bootstrap.
    SPARSE_COLUMNS."""
    array = _checked(latents, meta, (label, group))
    ks = sorted(dict.fromkeys(int(k) for k in ks))
    if not ks or ks[0] < 1 or ks[-1] > array.shape[1]:
        raise PsylingError(f"sparse probes: k must lie in 1..{array.shape[1]} (got {ks})")
    keep = meta[[label, group]].notna().all(axis=1).to_numpy()
    rows = np.flatnonzero(keep)
    y, classes = pd.factorize(meta[label].to_numpy()[rows])
    if len(classes) < 2:
        raise PsylingError(f"sparse probes: label column {label!r} has fewer than two classes")
    x = array[rows].astype(np.float64)
    if not np.isfinite(x).all():
        raise PsylingError("sparse probes: latents contain NaN or infinite values")
    groups = meta[group].to_numpy()[rows]
    splits = group_folds(groups, folds)
    correct, chosen, unconverged = _sparse_rows(x, y, splits, ks, max_iter)
    correct["majority"] = (majority_oof(y, splits) == y).astype(float)
    cis = group_bootstrap(correct, pd.factorize(groups)[0], np.random.default_rng(seed))
    common = {"site": "", "n": len(rows), "n_excluded": int((~keep).sum())}
    records = [{"probe": "sparse", "k": k, "accuracy": float(correct[f"k={k}"].mean()), **common,
                "ci_low": cis[f"k={k}"][0], "ci_high": cis[f"k={k}"][1], "unconverged": unconverged[k],
                "chosen": chosen[k], "in_every_fold": sorted(set.intersection(*map(set, chosen[k])))} for k in ks]
    records.append({"probe": "majority", "k": 0, "accuracy": float(correct["majority"].mean()), **common,
                    "ci_low": cis["majority"][0], "ci_high": cis["majority"][1], "unconverged": 0})
    if dense:
        records += _dense_rows(dense, meta, label, group, folds, seed, max_iter)
    return pd.DataFrame.from_records(records, columns=SPARSE_COLUMNS)
