"""The SAP benchmark of Huang, Arehalli, Kugemoto, Muxica, Prasad, Linzen & Dillon (self-paced reading, 2000
participants; "under review" in the release's readme), from the files released in caplabnyu/sapbenchmark.

1. GPT-2 surprisal at the critical word (bits, from the released word-level surprisal): ambiguous - unambiguous
   for the NP/S, NP/Z and MV/RR garden paths, ungrammatical - grammatical for agreement.
2. The human effects by construction and ROI (ms; ROI 0 = the disambiguating / critical word, 1-2 the next two
   words), next to the effects the paper predicts from GPT-2 surprisal, and their ratio.
3. The human agreement and NP/Z effects recomputed from the released trial-level data as plain condition mean
   differences (by-item means, then the mean over items with a t 95% CI), checked against the paper's
   Bayesian mixed-model estimates: inside the published 95% CrI, and within 2 ms of the authors' model fitted
   to exactly these trials.
4. Trial-level regressions of reading time on the released GPT-2 surprisal of the word read and of the word
   before it (ms/bit), per subset (agreement, NP/Z): likelihood-ratio test against a baseline of word length,
   log frequency, word position and trial number, with crossed by-participant and by-item random intercepts.
   The release publishes no surprisal-to-RT slope; the figures are checked against a separate dense-Cholesky
   fit of the same models (all 2000 participants, lme4's profiled deviance: about 2 s per construction)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import PsylingError
from ..stats.regression import baseline_predictors, mixed_delta_loglik
from ..stimuli.sap import (EFFECT_SUBSETS, SAP_FOLDER, load_sap_effects, load_sap_surprisal, load_sap_trial_fit,
                           load_sap_trial_surprisal, load_sap_trials)
from .registry import Reproduction, near, within

# (effect, subset, ambiguous or ungrammatical condition, its baseline, published mean difference in bits)
SURPRISAL_CONTRASTS = [("NP/S", "ClassicGP", "NPS_AMB", "NPS_UAMB", 2.35),
                       ("NP/Z", "ClassicGP", "NPZ_AMB", "NPZ_UAMB", 6.91),
                       ("MV/RR", "ClassicGP", "MVRR_AMB", "MVRR_UAMB", 2.83),
                       ("Agreement", "Agreement", "UNAGREE", "AGREE", 7.22)]
SURPRISAL_TOLERANCE = 0.01  # bits: the published values are rounded to 0.01
# trial-level Type -> (subset and construction of the published effect, construction in the trial-data fit)
TRIAL_CONSTRUCTIONS = {"AGREE": ("Agreement", "Agr", "Agr"), "NPZ": ("ClassicGP", "GPE_NPZ", "GPE")}
TRIAL_TOLERANCE_MS = 2.0
# trial-level regressions: subset of the released surprisal -> the construction its trials test
REGRESSION_SUBSETS = {"Agreement": "Agreement", "ClassicGP": "NP/Z"}
RT_BASELINE = ["word_length", "zipf_freq", "word_position", "trialnumber"]
RT_PREDICTORS = ["surprisal", "surprisal_prev1"]


def _contrast(table: pd.DataFrame, keys: list[str], column: str, value: str, high: str, low: str) -> pd.DataFrame:
    """Per ``keys``: mean value[high] - mean value[low], NaN where a condition is missing (callers count these)."""
    cells = table.pivot_table(index=keys, columns=column, values=value, aggfunc="mean")
    missing = [c for c in (high, low) if c not in cells.columns]
    if missing:
        raise PsylingError(f"no rows with {column} {', '.join(missing)}")
    return (cells[high] - cells[low]).rename("diff").reset_index()


def surprisal_effects(root: Path) -> pd.DataFrame:
    """GPT-2 surprisal difference at the critical word, per construction: effect, contrast, n_items,
    n_excluded (items lacking a condition), computed, published, tolerance, passed."""
    rows = []
    for effect, subset, high, low, published in SURPRISAL_CONTRASTS:
        words = load_sap_surprisal(root, subset, "gpt2")
        diff = _contrast(words[words["critical"]], ["item"], "condition", "surprisal", high, low)["diff"]
        computed = float(diff.mean())
        rows.append({"effect": effect, "contrast": f"{high} - {low}", "n_items": int(diff.notna().sum()),
                     "n_excluded": int(diff.isna().sum()), "computed": computed, "published": published,
                     "tolerance": SURPRISAL_TOLERANCE, "passed": abs(computed - published) <= SURPRISAL_TOLERANCE})
    return pd.DataFrame(rows)


def human_vs_predicted(root: Path) -> pd.DataFrame:
    """Published human effects (ms, 95% CrI) beside the GPT-2-predicted ones, per subset, construction and ROI,
    with ratio = human / predicted."""
    parts = []
    for subset in EFFECT_SUBSETS:
        human = load_sap_effects(root, subset, "human")
        gpt2 = load_sap_effects(root, subset, "gpt2")
        merged = human.merge(gpt2, on=["construction", "roi"], how="outer", suffixes=("", "_gpt2"),
                             validate="one_to_one")
        parts.append(merged.assign(subset=subset))
    table = pd.concat(parts, ignore_index=True)
    table["ratio"] = table["mean"] / table["mean_gpt2"]
    return table[["subset", "construction", "roi", "mean", "lower", "upper", "mean_gpt2", "lower_gpt2",
                  "upper_gpt2", "ratio"]]


def trial_effects(root: Path, rt: str = "RT_corrected") -> pd.DataFrame:
    """Human agreement (ungrammatical - grammatical) and NP/Z (ambiguous - unambiguous) effects per ROI from the
    trial-level data: by-item condition means of ``rt``, their difference, the mean over items and its t 95%
    CI; beside the published estimate and CrI (within_cri) and the authors' fit to these trials
    (fit_diff = computed - fit, close = |fit_diff| <= TRIAL_TOLERANCE_MS)."""
    trials = load_sap_trials(root)
    unknown = sorted(set(trials["Type"]) - set(TRIAL_CONSTRUCTIONS))
    if unknown:
        raise PsylingError(f"trial data: unknown Type {', '.join(map(str, unknown))}")
    diffs = _contrast(trials, ["Type", "ROI", "item"], "pGram", rt, "U", "G")
    fit = load_sap_trial_fit(root).set_index(["construction", "roi"])
    published = {subset: load_sap_effects(root, subset, "human").set_index(["construction", "roi"])
                 for subset, _, _ in TRIAL_CONSTRUCTIONS.values()}
    rows = []
    for (kind, roi), group in diffs.groupby(["Type", "ROI"], sort=True):
        subset, construction, fit_name = TRIAL_CONSTRUCTIONS[kind]
        values = group["diff"].dropna()
        n = len(values)
        mean = float(values.mean())
        half = float(stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
        ref = published[subset].loc[(construction, roi)]
        fit_mean = float(fit.loc[(fit_name, roi), "mean"])
        rows.append({"construction": construction, "roi": int(roi), "n_items": n,
                     "n_excluded": int(group["diff"].isna().sum()), "mean": mean, "ci_low": mean - half,
                     "ci_high": mean + half, "published": float(ref["mean"]), "published_lower": float(ref["lower"]),
                     "published_upper": float(ref["upper"]),
                     "within_cri": bool(ref["lower"] <= mean <= ref["upper"]), "fit": fit_mean,
                     "fit_diff": mean - fit_mean, "close": abs(mean - fit_mean) <= TRIAL_TOLERANCE_MS})
    return pd.DataFrame(rows)


def surprisal_regressions(root: Path, rt: str = "RT_corrected", participants: Optional[int] = None) -> pd.DataFrame:
    """Per construction (agreement, NP/Z): ``rt`` ~ baseline (RT_BASELINE) + GPT-2 surprisal of the word and of
    the word before it, ML mixed models with by-participant and by-item random intercepts
    (:func:`mixed_delta_loglik`). ``participants``: fit only the first N participant ids in sorted order (all
    when None). Columns: construction, n_trials, n_unjoined (trial rows whose word is not the released word at
    that position; excluded), n (rows fitted), n_dropped, n_subjects, n_items, delta_ll (nats, total),
    delta_ll_per_trial, lr, df, p_value, slope and slope_prev (ms/bit), converged, seconds (fit time)."""
    if rt not in ("RT_corrected", "RT"):
        raise PsylingError(f"unknown reading-time column {rt!r} (known: RT_corrected, RT)")
    if participants is not None and participants < 1:
        raise PsylingError(f"participants must be at least 1, not {participants}")
    trials = load_sap_trial_surprisal(root, "gpt2")
    if participants is not None:
        chosen = sorted(trials["participant"].unique())[:participants]
        trials = trials[trials["participant"].isin(chosen)]
    rows = []
    for subset, construction in REGRESSION_SUBSETS.items():
        group = trials[trials["subset"] == subset]
        joined = group[group["join_status"] == "ok"]
        data = baseline_predictors(joined, "word", "word_pos")
        start = time.perf_counter()
        fit = mixed_delta_loglik(data, rt, RT_BASELINE, RT_PREDICTORS, subject="participant", item="item")
        seconds = time.perf_counter() - start
        rows.append({"construction": construction, "n_trials": len(group), "n_unjoined": len(group) - len(joined),
                     "n": fit.n, "n_dropped": fit.n_dropped, "n_subjects": fit.n_subjects, "n_items": fit.n_items,
                     "delta_ll": fit.delta_ll, "delta_ll_per_trial": fit.delta_ll / fit.n, "lr": fit.lr,
                     "df": fit.df, "p_value": fit.p_value, "slope": fit.coefficients["surprisal"],
                     "slope_prev": fit.coefficients["surprisal_prev1"], "converged": fit.converged,
                     "seconds": seconds})
    return pd.DataFrame(rows)


# The paper's human effects (ms, posterior mean and 95% CrI; plots/spr/<subset>/by_construction.csv) and the
# authors' model of exactly the released trials (analysis/spr/Agreement/datasets/by_construction_agreement.csv),
# per (construction, ROI): (label, mean, lower, upper, fit of these trials)
PUBLISHED_TRIAL_EFFECTS = {
    ("Agr", 0): ("agreement", 20.03, 9.05, 30.68, 19.17), ("Agr", 1): ("agreement", 57.36, 44.94, 69.68, 57.49),
    ("Agr", 2): ("agreement", 20.67, 12.76, 28.62, 19.95), ("GPE_NPZ", 0): ("NP/Z", 120.80, 95.22, 146.05, 131.54),
    ("GPE_NPZ", 1): ("NP/Z", 150.19, 116.73, 183.83, 148.09), ("GPE_NPZ", 2): ("NP/Z", 65.03, 39.47, 89.91, 57.65)}
# No published slope: a separate dense-Cholesky fit of the same models on all 2000 participants gave ΔLL (nats) and
# the slopes (ms/bit) of the word's and the previous word's surprisal
REFERENCE_REGRESSIONS = {"Agreement": (194.8, 1.98, 4.95), "NP/Z": (284.6, 8.47, 8.44)}
REGRESSION_TOLERANCES = (0.06, 0.006, 0.006)
REGRESSION_FIGURES = ("trial-level ΔLL (nats)", "ms/bit of the word's surprisal", "ms/bit of the previous word's")


def _surprisal_name(effect: str) -> str:
    return f"GPT-2 surprisal difference, {effect} (bits)"


def _effect_names(construction: str, roi: int) -> tuple[str, str]:
    """The two figures of a human effect: in the paper's CrI, and near the authors' fit of the trials."""
    stem = f"human {PUBLISHED_TRIAL_EFFECTS[(construction, roi)][0]} effect at ROI {roi} (ms)"
    return f"{stem}, in the paper's 95% CrI", f"{stem}, vs the authors' fit of these trials"


def _figures() -> tuple:
    figures = [near(_surprisal_name(effect), published, SURPRISAL_TOLERANCE)
               for effect, _, _, _, published in SURPRISAL_CONTRASTS]
    for (construction, roi), (_, mean, low, high, fit) in PUBLISHED_TRIAL_EFFECTS.items():
        in_cri, vs_fit = _effect_names(construction, roi)
        figures += [within(in_cri, mean, low, high), near(vs_fit, fit, TRIAL_TOLERANCE_MS)]
    for construction, values in REFERENCE_REGRESSIONS.items():
        figures += [near(f"{construction}: {what}", value, tolerance)
                    for what, value, tolerance in zip(REGRESSION_FIGURES, values, REGRESSION_TOLERANCES)]
    return tuple(figures)


def measure(data_root: Path) -> dict[str, float]:
    """GPT-2 surprisal differences, human effects from the trials, and the trial-level regressions."""
    root = Path(data_root) / SAP_FOLDER
    measured = {_surprisal_name(r.effect): r.computed for r in surprisal_effects(root).itertuples()}
    for r in trial_effects(root).itertuples():
        measured.update(dict.fromkeys(_effect_names(r.construction, r.roi), r.mean))
    for r in surprisal_regressions(root).itertuples():
        values = (r.delta_ll, r.slope, r.slope_prev)
        measured.update({f"{r.construction}: {what}": value for what, value in zip(REGRESSION_FIGURES, values)})
    return measured


REPRODUCTION = Reproduction(
    name="sap-benchmark",
    citation="Huang, Arehalli, Kugemoto, Muxica, Prasad, Linzen & Dillon, the SAP benchmark (caplabnyu/"
             "sapbenchmark): GPT-2 surprisal effects, human effects from 81,924 trials, trial-level ΔLL",
    data=SAP_FOLDER, figures=_figures(), measure=measure, minutes=0.2)
