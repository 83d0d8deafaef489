"""Linear probes per layer with item-grouped cross-validation, a Hewitt & Liang (2019) control task, a majority
baseline, group-bootstrap CIs and permutation p-values; plus the helpers the other layer analyses share (site
layer and order, feature checks, grouped folds, restricted permutations)."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ..errors import PsylingError
from ..models.hooks import parse_site
from ..progress import steps
from ..stats.compare import benjamini_hochberg
from .activations import sorted_sites

CONTROLS = ("shuffle_within_type",)
N_BOOT = 1000        # group-bootstrap resamples for the accuracy CIs
PERMUTATION_ALPHA = 1.0  # ridge penalty of the permutation classifier, times the number of training rows
PROBE_COLUMNS = ["site", "layer", "metric", "value", "ci_low", "ci_high", "n", "n_excluded"]


def site_layer(site: str) -> int:
    """The layer number of a site name such as ``resid.12``, ``attn.3`` or ``head.3.5`` (``resid.0``: embeddings)."""
    return parse_site(site).layer


def check_features(features: dict[str, np.ndarray], n: int) -> list[str]:
    """Validate ``features`` (site -> [n, d] array, ``n`` rows as in the metadata); return the sites in order."""
    if not features:
        raise PsylingError("features: no activation sites given")
    for site, array in features.items():
        shape = np.shape(array)
        if len(shape) != 2 or shape[0] != n or shape[1] == 0:
            raise PsylingError(f"features[{site!r}]: expected an array of shape [{n}, d], got {shape}")
    return sorted_sites(features)


def site_matrix(features: dict[str, np.ndarray], site: str, rows: np.ndarray) -> np.ndarray:
    """The selected rows of one site as float64 (one site at a time keeps memory flat); non-finite values raise."""
    matrix = np.asarray(features[site])[rows].astype(np.float64)
    if not np.isfinite(matrix).all():
        raise PsylingError(f"features[{site!r}]: contains NaN or infinite values")
    return matrix


def group_folds(groups: np.ndarray, folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """GroupKFold splits (train rows, test rows): no group is ever in both the training and the test rows."""
    n_groups = len(pd.unique(groups))
    if folds < 2 or n_groups < folds:
        raise PsylingError(f"cross-validation: {folds} folds need at least {max(folds, 2)} groups, have {n_groups} "
                           "(lower folds)")
    return list(GroupKFold(n_splits=folds).split(np.zeros(len(groups)), groups=groups))


def group_permutation(groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random row order that respects the groups: whole groups trade places with groups of the same size, and
    rows are shuffled within each group. ``values[order]`` keeps every value with a group-mate's structure, so
    labels or residuals that cluster within items stay clustered under the null."""
    codes = pd.factorize(groups)[0]
    by_group = np.argsort(codes, kind="stable")
    members = np.split(by_group, np.flatnonzero(np.diff(codes[by_group])) + 1)
    order = np.empty(len(codes), dtype=np.int64)
    sizes = np.array([len(m) for m in members])
    for size in np.unique(sizes):
        same = np.flatnonzero(sizes == size)
        for target, source in zip(same, rng.permutation(same)):
            order[members[target]] = rng.permutation(members[source])
    return order


def labels_from_conditions(meta: pd.DataFrame, factors: dict[str, list[str]], conditions: list[str],
                           factor: str) -> pd.Series:
    """The level of ``factor`` for each row of ``meta`` (from its ``condition``), e.g. subject number; ``factors``
    maps factor names to one level per condition in ``conditions`` order, as in a set's manifest."""
    if factor not in factors:
        raise PsylingError(f"labels_from_conditions: no factor {factor!r} (have: {', '.join(factors) or 'none'})")
    levels = list(factors[factor])
    if len(levels) != len(conditions):
        raise PsylingError(f"labels_from_conditions: factor {factor!r} gives {len(levels)} levels for "
                           f"{len(conditions)} conditions")
    if "condition" not in meta.columns:
        raise PsylingError("labels_from_conditions: meta has no 'condition' column")
    unknown = sorted(set(meta["condition"].dropna()) - set(conditions))
    if unknown:
        raise PsylingError(f"labels_from_conditions: condition(s) {', '.join(map(str, unknown))} not among "
                           f"{', '.join(conditions)}")
    return meta["condition"].map(dict(zip(conditions, levels))).rename(factor)


def control_labels(text: object, labels: object, seed: int = 0) -> np.ndarray:
    """Hewitt & Liang (2019) control task: each word type (lower-cased ``text``) gets one label drawn at random
    from the label distribution of the rows; every row of that type takes the type's label."""
    types = pd.Series(np.asarray(text, dtype=object)).str.strip().str.lower()
    values, counts = np.unique(np.asarray(labels), return_counts=True)
    type_codes, uniques = pd.factorize(types)
    drawn = np.random.default_rng(seed).choice(values, size=len(uniques), p=counts / counts.sum())
    return drawn[type_codes]


def logistic_oof(x: np.ndarray, y: np.ndarray, splits: list, max_iter: int) -> tuple[np.ndarray, int]:
    """Out-of-fold predictions of a standardised logistic-regression probe, and the fits that did not converge."""
    predicted = np.empty_like(y)
    unconverged = 0
    for train, test in splits:
        classes = np.unique(y[train])
        if len(classes) == 1:
            predicted[test] = classes[0]
            continue
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            probe.fit(x[train], y[train])
        unconverged += any(issubclass(w.category, ConvergenceWarning) for w in caught)
        predicted[test] = probe.predict(x[test])
    return predicted, unconverged


def _ridge_accuracies(x: np.ndarray, labels: np.ndarray, splits: list, n_classes: int) -> np.ndarray:
    """Out-of-fold accuracy of a one-vs-rest ridge classifier for each column of ``labels`` (codes, [n, m]):
    one penalised least-squares solve per fold serves the observed labels and every permutation."""
    correct = np.zeros(labels.shape[1])
    onehot = np.eye(n_classes)
    for train, test in splits:
        scaler = StandardScaler().fit(x[train])
        targets = onehot[labels[train]].reshape(len(train), -1)
        model = Ridge(alpha=PERMUTATION_ALPHA * len(train)).fit(scaler.transform(x[train]), targets)
        scores = model.predict(scaler.transform(x[test])).reshape(len(test), labels.shape[1], n_classes)
        correct += (scores.argmax(axis=2) == labels[test]).sum(axis=0)
    return correct / len(labels)


def majority_oof(y: np.ndarray, splits: list) -> np.ndarray:
    predicted = np.empty_like(y)
    for train, test in splits:
        values, counts = np.unique(y[train], return_counts=True)
        predicted[test] = values[np.argmax(counts)]
    return predicted


def group_bootstrap(correct: dict[str, np.ndarray], codes: np.ndarray, rng: np.random.Generator
                     ) -> dict[str, tuple[float, float]]:
    """95% percentile CIs of mean correctness (and accuracy differences) from resampling groups."""
    n_groups = codes.max() + 1
    membership = sparse.csr_matrix((np.ones(len(codes)), (codes, np.arange(len(codes)))), shape=(n_groups, len(codes)))
    sizes = np.asarray(membership.sum(axis=1)).ravel()
    draws = rng.integers(0, n_groups, size=(N_BOOT, n_groups))
    weights = sparse.csr_matrix((np.ones(draws.size), (np.repeat(np.arange(N_BOOT), n_groups), draws.ravel())),
                                shape=(N_BOOT, n_groups))
    totals = weights @ sizes
    out = {}
    for name, values in correct.items():
        boot = (weights @ (membership @ values)) / totals
        out[name] = tuple(np.percentile(boot, [2.5, 97.5]))
    return out


def probe_layers(features: dict[str, np.ndarray], meta: pd.DataFrame, label: str, group: str = "item",
                 folds: int = 5, control: str | None = "shuffle_within_type", n_permutations: int = 100,
                 seed: int = 0, max_iter: int = 1000) -> pd.DataFrame:
    """Linear probe per activation site for the ``label`` column of ``meta``; a tidy table (PROBE_COLUMNS), one row
    per site x metric.

    Probe: standardised features, scikit-learn LogisticRegression (L2, C=1), GroupKFold on ``group`` (no item in
    both train and test). Metrics: ``accuracy`` (pooled out-of-fold); ``control_accuracy`` on the control task
    (``control_labels``: a random label per lower-cased ``text`` type, from the label distribution; fixed across
    sites) and ``selectivity`` = accuracy - control accuracy; ``majority``: the training fold's majority class
    predicted out of fold; CIs: 95% percentile bootstrap over groups (selectivity paired). ``p_value``: a
    permutation test of the ridge-classifier (one-vs-rest, penalty PERMUTATION_ALPHA x training rows) out-of-fold
    accuracy, same folds, against ``n_permutations`` label permutations from ``group_permutation`` (whole groups
    trade labels with same-sized groups, and labels are shuffled within groups); p = (1 + #null >= observed) /
    (1 + n_permutations). ``q_value``: Benjamini-Hochberg over sites. Rows with a missing label or group (or text,
    with a control) are excluded and counted in ``n_excluded``; ``resid.0`` (embeddings) is the lexical baseline.
    Fits that did not converge within ``max_iter`` are counted in the ``unconverged`` metric when there are any."""
    if control is not None and control not in CONTROLS:
        raise PsylingError(f"probe_layers: unknown control {control!r} (choose from: {', '.join(CONTROLS)} or None)")
    needed = [label, group] + (["text"] if control else [])
    missing = [c for c in needed if c not in meta.columns]
    if missing:
        raise PsylingError(f"probe_layers: meta lacks column(s) {', '.join(missing)}")
    sites = check_features(features, len(meta))
    keep = meta[needed].notna().all(axis=1).to_numpy()
    rows = np.flatnonzero(keep)
    y, classes = pd.factorize(meta[label].to_numpy()[rows])
    if len(classes) < 2:
        raise PsylingError(f"probe_layers: label column {label!r} has fewer than two classes")
    groups = meta[group].to_numpy()[rows]
    codes = pd.factorize(groups)[0]
    splits = group_folds(groups, folds)
    seeds = np.random.SeedSequence(seed).spawn(3)
    boot_rng = np.random.default_rng(seeds[2])
    perm_rng = np.random.default_rng(seeds[1])
    null_labels = np.column_stack([y] + [y[group_permutation(groups, perm_rng)] for _ in range(n_permutations)])
    y_control = (control_labels(meta["text"].to_numpy()[rows], y, int(seeds[0].generate_state(1)[0]))
                 if control else None)
    majority_correct = (majority_oof(y, splits) == y).astype(float)
    common = {"n": len(rows), "n_excluded": int((~keep).sum())}
    records, pvalues = [], []
    for site in steps(sites, f"probing {label}", unit="site"):
        x = site_matrix(features, site, rows)
        predicted, unconverged = logistic_oof(x, y, splits, max_iter)
        correct = {"accuracy": (predicted == y).astype(float), "majority": majority_correct}
        if control:
            predicted_control, more = logistic_oof(x, y_control, splits, max_iter)
            unconverged += more
            correct["control_accuracy"] = (predicted_control == y_control).astype(float)
            correct["selectivity"] = correct["accuracy"] - correct["control_accuracy"]
        cis = group_bootstrap(correct, codes, boot_rng)
        base = {"site": site, "layer": site_layer(site), **common}
        for metric in ("accuracy", "control_accuracy", "selectivity", "majority"):
            if metric in correct:
                records.append({**base, "metric": metric, "value": float(correct[metric].mean()),
                                "ci_low": cis[metric][0], "ci_high": cis[metric][1]})
        if n_permutations:
            accuracies = _ridge_accuracies(x, null_labels, splits, len(classes))
            p = (1 + np.sum(accuracies[1:] >= accuracies[0] - 1e-12)) / (1 + n_permutations)
            pvalues.append(p)
            records.append({**base, "metric": "p_value", "value": float(p)})
        if unconverged:
            records.append({**base, "metric": "unconverged", "value": float(unconverged)})
    if n_permutations:
        for site, q in zip(sites, benjamini_hochberg(pvalues)):
            records.append({"site": site, "layer": site_layer(site), **common, "metric": "q_value", "value": float(q)})
    table = pd.DataFrame.from_records(records, columns=PROBE_COLUMNS)
    order = {s: i for i, s in enumerate(sites)}
    return table.sort_values("site", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)
