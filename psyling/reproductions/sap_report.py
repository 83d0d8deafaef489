"""Terminal tables of the SAP benchmark reproduction (``analyses/sap_benchmark.py``)."""
from __future__ import annotations

import pandas as pd

from .sap import TRIAL_TOLERANCE_MS


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
