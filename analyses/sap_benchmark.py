"""Reproduction: the SAP benchmark of Huang, Arehalli, Kugemoto, Muxica, Prasad, Linzen & Dillon (self-paced
reading, 2000 participants; "under review" in the release's readme), from the files released in
caplabnyu/sapbenchmark.

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
   The release publishes no surprisal-to-RT slope to compare with. All 2000 participants by default (lme4's
   profiled deviance: about 2 s per construction); --participants N fits the first N participant ids only.

    python3 analyses/sap_benchmark.py [--data-root PATH] [--participants N] [--rt RT_corrected|RT]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from psyling.errors import PsylingError
from psyling.stats.regression import baseline_predictors, mixed_delta_loglik
from psyling.stimuli.batteries import data_root
from psyling.stimuli.sap import (EFFECT_SUBSETS, SAP_FOLDER, load_sap_effects, load_sap_surprisal,
                                 load_sap_trial_fit, load_sap_trial_surprisal, load_sap_trials)

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


def format_regressions(table: pd.DataFrame, rt: str) -> str:
    """The terminal table of :func:`surprisal_regressions`."""
    lines = [f"Trial-level {rt} ~ GPT-2 surprisal (word, previous word) + length, log frequency, word position, "
             "trial number; by-participant and by-item random intercepts (ML)",
             (f"{'construction':<12} {'trials':>6} {'unjoined':>8} {'fitted':>6} {'subj':>5} {'items':>5} "
              f"{'dLL':>8} {'dLL/trial':>9} {'p':>9} {'ms/bit':>6} {'prev':>6} {'paper':>13} {'fit s':>6}")]
    for r in table.to_dict("records"):
        note = "" if r["converged"] else "  (not converged)"
        lines.append(f"{r['construction']:<12} {r['n_trials']:>6} {r['n_unjoined']:>8} {r['n']:>6} "
                     f"{r['n_subjects']:>5} {r['n_items']:>5} {r['delta_ll']:>8.1f} {r['delta_ll_per_trial']:>9.5f} "
                     f"{r['p_value']:>9.2e} {r['slope']:>6.2f} {r['slope_prev']:>6.2f} {'none released':>13} "
                     f"{r['seconds']:>6.0f}{note}")
    lines.append("dLL: log-likelihood gain in nats (likelihood-ratio test, 2 df); ms/bit: slope of the word's "
                 "surprisal, prev: of the previous word's; unjoined: trial words that are not the released word at "
                 "that position (excluded); paper: the release has no surprisal-to-RT slope")
    return "\n".join(lines)


def _check(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def format_report(surprisal: pd.DataFrame, effects: pd.DataFrame, trials: pd.DataFrame) -> str:
    """The three terminal tables."""
    lines = ["GPT-2 surprisal difference at the critical word (bits)",
             f"{'effect':<10} {'contrast':<22} {'items':>5} {'computed':>9} {'paper':>7} {'tol':>5}  check"]
    for r in surprisal.to_dict("records"):
        excluded = f" ({r['n_excluded']} excluded)" if r["n_excluded"] else ""
        lines.append(f"{r['effect']:<10} {r['contrast']:<22} {r['n_items']:>5} {r['computed']:>9.4f} "
                     f"{r['published']:>7.2f} {r['tolerance']:>5.2f}  {_check(r['passed'])}{excluded}")
    lines += ["", "Human effects (ms, 95% CrI) and GPT-2-predicted effects by construction and ROI (published)",
              (f"{'subset':<20} {'construction':<13} {'ROI':>3} {'human':>7} {'95% CrI':>18} {'GPT-2':>7} "
               f"{'95% CrI':>16} {'human/GPT-2':>11}")]
    for r in effects.to_dict("records"):
        ratio = f"{r['ratio']:.1f}" if r["lower_gpt2"] > 0 or r["upper_gpt2"] < 0 else "-"
        lines.append(f"{r['subset']:<20} {r['construction']:<13} {r['roi']:>3} {r['mean']:>7.1f} "
                     f"[{r['lower']:>7.1f}, {r['upper']:>6.1f}] {r['mean_gpt2']:>7.1f} "
                     f"[{r['lower_gpt2']:>6.1f}, {r['upper_gpt2']:>5.1f}] {ratio:>11}")
    lines.append("ROI 0: the disambiguating / critical word (RelativeClause: the embedded verb); ROIs 1-2: the next "
                 "two words (RelativeClause: the embedded determiner and noun); ratio '-' where GPT-2's CrI spans 0")
    lines += ["", ("Human effects recomputed from the trial-level data (ms; by-item means of RT_corrected, mean "
                   "over items, t 95% CI)"),
              (f"{'construction':<13} {'ROI':>3} {'items':>5} {'computed':>8} {'95% CI':>16} {'paper':>7} "
               f"{'95% CrI':>16} {'in CrI':>6} {'fit':>7} {'diff':>6} {'tol':>4}  check")]
    for r in trials.to_dict("records"):
        excluded = f" ({r['n_excluded']} items excluded)" if r["n_excluded"] else ""
        lines.append(f"{r['construction']:<13} {r['roi']:>3} {r['n_items']:>5} {r['mean']:>8.1f} "
                     f"[{r['ci_low']:>6.1f}, {r['ci_high']:>6.1f}] {r['published']:>7.1f} "
                     f"[{r['published_lower']:>6.1f}, {r['published_upper']:>6.1f}] "
                     f"{'yes' if r['within_cri'] else 'no':>6} {r['fit']:>7.1f} {r['fit_diff']:>+6.1f} "
                     f"{TRIAL_TOLERANCE_MS:>4.1f}  {_check(r['within_cri'] and r['close'])}{excluded}")
    lines.append("paper: plots/spr/<subset>/by_construction.csv; fit: the authors' model of these very trials "
                 "(analysis/spr/Agreement/datasets/by_construction_agreement.csv); check: in CrI and |diff| <= tol")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, default=None,
                        help="folder of published datasets (default: PSYLING_DATA or ../shared/data)")
    parser.add_argument("--participants", type=int, default=None,
                        help="regressions: fit only the first N participant ids in sorted order (default: all "
                             "2000, a few seconds)")
    parser.add_argument("--rt", choices=["RT_corrected", "RT"], default="RT_corrected",
                        help="regressions: reading-time column (default: the authors' RT_corrected)")
    args = parser.parse_args(argv)
    root = (args.data_root or data_root()) / SAP_FOLDER
    try:
        surprisal, effects, trials = surprisal_effects(root), human_vs_predicted(root), trial_effects(root)
        print(format_report(surprisal, effects, trials), flush=True)
        start = time.perf_counter()
        regressions = surprisal_regressions(root, args.rt, args.participants)
    except PsylingError as exc:
        print(f"sap_benchmark: error: {exc}", file=sys.stderr)
        return 2
    print("\n" + format_regressions(regressions, args.rt))
    print(f"regressions: {time.perf_counter() - start:.0f} s")
    passed = surprisal["passed"].all() and trials["within_cri"].all() and trials["close"].all()
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
