"""lme4 and lmerTest as a test oracle: the same mixed model fitted in R (``Rscript``) on the same data.

``R_MISSING`` is None when ``Rscript`` runs and lme4, lmerTest and jsonlite are installed, else the reason (for
``pytest.skip``). :func:`lmer` fits one model, :func:`lmer_many` several in one R process (R and lmerTest take
~2 s to start), :func:`lmer_best` keeps the best fit of several lme4 optimizers. Frames go to R as CSV: numeric
columns stay numeric, bool columns become logical, every other column a factor (levels: a categorical's
categories, else the sorted distinct values as strings, as patsy sorts them); column names are kept exactly
(quote odd ones in the formula with backticks). Results come back as JSON with every number at full precision.
:func:`differences` compares a candidate fit with an lme4 result at the tolerances of issue 15's acceptance
criteria.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import pandas as pd

SCRIPT = Path(__file__).resolve().parent / "r" / "lmer.R"
R_PACKAGES = ("lme4", "lmerTest", "jsonlite")
TIMEOUT_S = 900
LOGLIK_ABS = 1e-6      # log-likelihood: absolute
COEF_REL = 1e-4        # fixed effects and standard errors: relative
VARIANCE_REL = 1e-3    # random-effect variances and correlations: relative
DF_P_DIGITS = 3        # Satterthwaite df and p-values: significant digits
OPTIMIZERS = ("lmerControl()", 'lmerControl(optimizer = "bobyqa")', 'lmerControl(optimizer = "Nelder_Mead")',
              'lmerControl(optimizer = "nlminbwrap")')  # lme4's default (nloptwrap) first


class ROracleError(RuntimeError):
    """R failed: the message carries R's error and its stderr."""


def _r_missing() -> Optional[str]:
    """None when Rscript runs and the R packages are installed (checked without loading them: ~0.2 s)."""
    if shutil.which("Rscript") is None:
        return "Rscript not found on PATH (install r-base-core r-cran-lme4 r-cran-lmertest r-cran-jsonlite)"
    check = f"cat(sapply(c({', '.join(repr(p) for p in R_PACKAGES)}), function(p) nzchar(system.file(package = p))))"
    try:
        done = subprocess.run(["Rscript", "--vanilla", "-e", check], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"Rscript does not run: {exc}"
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        return f"Rscript does not run: {lines[-1] if lines else f'exit status {done.returncode}'}"
    absent = [p for p, ok in zip(R_PACKAGES, done.stdout.split()) if ok != "TRUE"]
    return f"R package(s) not installed: {', '.join(absent)}" if absent else None


R_MISSING: Optional[str] = _r_missing()


def _column_spec(column: pd.Series) -> tuple[str, Optional[list[str]]]:
    """R column class for read.csv and, for a factor, its levels in order."""
    if pd.api.types.is_bool_dtype(column):
        return "logical", None
    if pd.api.types.is_numeric_dtype(column):
        return "numeric", None
    if isinstance(column.dtype, pd.CategoricalDtype):
        return "character", [str(c) for c in column.cat.categories]
    return "character", sorted({str(v) for v in column.dropna()})


def _write_job(folder: Path, index: int, frame: pd.DataFrame, formula: str, reml: bool,
               controls: Sequence[Optional[str]]) -> dict[str, Any]:
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"job {index}: expected a pandas DataFrame, got {type(frame).__name__}")
    if len(set(map(str, frame.columns))) != frame.shape[1]:
        raise ValueError(f"job {index}: duplicate column names {list(frame.columns)}")
    specs = {str(name): _column_spec(frame[name]) for name in frame.columns}
    csv = folder / f"job{index}.csv"
    frame.rename(columns=str).to_csv(csv, index=False, na_rep="NA")
    return {"csv": str(csv), "formula": formula, "reml": bool(reml), "controls": list(controls),
            "classes": {name: cls for name, (cls, _) in specs.items()},
            "levels": {name: levels for name, (_, levels) in specs.items() if levels is not None}}


def _run_r(jobs: list[dict[str, Any]], folder: Path) -> list[dict[str, Any]]:
    if R_MISSING:
        raise ROracleError(R_MISSING)
    spec, out = folder / "jobs.json", folder / "out.json"
    spec.write_text(json.dumps(jobs))
    env = {**os.environ, "LANGUAGE": "en"}
    try:
        done = subprocess.run(["Rscript", "--vanilla", str(SCRIPT), str(spec), str(out)], capture_output=True,
                              text=True, timeout=TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired as exc:
        raise ROracleError(f"Rscript ran past {TIMEOUT_S} s on {len(jobs)} model(s)") from exc
    if done.returncode != 0 or not out.is_file():
        raise ROracleError(f"Rscript failed (exit status {done.returncode}):\n{done.stderr.strip()}")
    results = json.loads(out.read_text())
    failed = [f"job {k} ({jobs[k]['formula']}): {r['error']}" for k, r in enumerate(results) if "error" in r]
    if failed:
        raise ROracleError("lme4 failed: " + "; ".join(failed) + (f"\nR stderr:\n{done.stderr.strip()}"
                                                                 if done.stderr.strip() else ""))
    return results


def _fit(jobs: list[tuple[pd.DataFrame, str, bool]], controls: Sequence[Optional[str]]) -> list[dict]:
    """Fit each (frame, formula, reml) job with every control in one R process; per job the fit with the highest
    log-likelihood (the first on ties), its control's index under "control"."""
    with tempfile.TemporaryDirectory(prefix="psyling-lme4-") as tmp:
        folder = Path(tmp)
        written = [_write_job(folder, k, *job, controls) for k, job in enumerate(jobs)]
        return _run_r(written, folder) if written else []


def _jobs(jobs: Iterable[Sequence[Any]], reml: bool) -> list[tuple[pd.DataFrame, str, bool]]:
    return [(job[0], job[1], job[2] if len(job) > 2 else reml) for job in jobs]


def lmer_many(jobs: Iterable[Sequence[Any]], reml: bool = True, control: Optional[str] = None) -> list[dict]:
    """Fit each ``(frame, formula)`` or ``(frame, formula, reml)`` job with ``lmerTest::lmer`` in one R process;
    ``control``: an R expression for every job, e.g. ``'lmerControl(optimizer = "bobyqa")'`` (default: lme4's
    own, nloptwrap). One result dict per job, as :func:`lmer` describes; any job failing raises ROracleError."""
    fits = _fit(_jobs(jobs, reml), [control])
    return [{k: v for k, v in fit.items() if k != "control"} for fit in fits]


def lmer_best(jobs: Iterable[Sequence[Any]], reml: bool = True, controls: Sequence[str] = OPTIMIZERS) -> list[dict]:
    """Like :func:`lmer_many`, but each job is fitted with every optimizer in ``controls`` and the fit with the
    highest log-likelihood is kept (the first on ties; lmerTest's tests on it), its control under the extra key
    ``"optimizer"``: lme4's default can stop short of the maximum (e.g. 0.34 nats below it on smollm2-135m's
    garden_path_npz)."""
    fits = _fit(_jobs(jobs, reml), controls)
    return [{**{k: v for k, v in fit.items() if k != "control"}, "optimizer": controls[fit["control"]]}
            for fit in fits]


def lmer(frame: pd.DataFrame, formula: str, reml: bool = True, control: Optional[str] = None) -> dict:
    """``lmerTest::lmer(formula, frame, REML = reml)`` in R. Returns loglik (``logLik``: the REML criterion's for
    REML fits), deviance (ML: ``deviance(m)``; REML: ``REMLcrit(m)``; either way -2 loglik), theta
    (``getME(m, "theta")``, lme4's order), sigma, fixef / se / df / p (name -> value; df and p lmerTest's
    Satterthwaite, None where lmerTest gives none), is_singular (``isSingular(m)``, tol 1e-4), varcor (rows of
    ``as.data.frame(VarCorr(m))``: grp, var1, var2 (None for variances and the residual), vcov, sdcor) and
    optimizer_messages (lme4's convergence messages, optimizer warnings, warnings and messages while fitting)."""
    return lmer_many([(frame, formula, reml)], control=control)[0]


def _close(value: float, reference: float, rel: float, floor: float = 0.0) -> bool:
    return abs(value - reference) <= rel * max(abs(reference), floor)


def _same_digits(value: float, reference: float, digits: int = DF_P_DIGITS) -> bool:
    """Equal to ``digits`` significant digits of the reference: within half a unit of its last digit (a reference
    of 0, an underflowed p-value, accepts anything below 1e-300)."""
    if reference == 0:
        return abs(value) < 1e-300
    if not math.isfinite(reference):
        return value == reference
    return abs(value - reference) <= 0.5 * 10 ** (math.floor(math.log10(abs(reference))) - digits + 1)


def _named_differences(key: str, candidate: dict, reference: dict, same) -> list[str]:
    if set(candidate) != set(reference):
        return [f"{key}: names {sorted(candidate)} vs lme4's {sorted(reference)}"]
    return [f"{key}[{name}]: {mine!r} vs lme4's {theirs!r}" for name, theirs in reference.items()
            if theirs is not None and ((mine := candidate[name]) is None or not same(mine, theirs))]


def _varcor_differences(candidate: list[dict], reference: list[dict], sigma: float) -> list[str]:
    """Variances relative (a variance under 1e-6 of the residual's counts as zero), correlations absolute."""
    mine = {(r["grp"], r["var1"], r["var2"]): r for r in candidate}
    problems = []
    for row in reference:
        key = (row["grp"], row["var1"], row["var2"])
        if key not in mine:
            problems.append(f"varcor: no row {key}")
        elif row["var2"] is None and not _close(mine[key]["vcov"], row["vcov"], VARIANCE_REL, 1e-6 * sigma ** 2):
            problems.append(f"varcor{key}: variance {mine[key]['vcov']!r} vs lme4's {row['vcov']!r}")
        elif row["var2"] is not None and not abs(mine[key]["sdcor"] - row["sdcor"]) <= VARIANCE_REL:
            problems.append(f"varcor{key}: correlation {mine[key]['sdcor']!r} vs lme4's {row['sdcor']!r}")
    return problems


def differences(candidate: dict, reference: dict) -> list[str]:
    """Where ``candidate`` (any of the keys loglik, fixef, se, df, p, is_singular, varcor, shaped as
    :func:`lmer`'s result) departs from lme4's ``reference`` beyond issue 15's tolerances; [] when it agrees."""
    problems = []
    if "loglik" in candidate and not abs(candidate["loglik"] - reference["loglik"]) <= LOGLIK_ABS:
        problems.append(f"loglik: {candidate['loglik']!r} vs lme4's {reference['loglik']!r}")
    if "is_singular" in candidate and bool(candidate["is_singular"]) != reference["is_singular"]:
        problems.append(f"is_singular: {candidate['is_singular']} vs lme4's {reference['is_singular']}")
    for key in ("fixef", "se"):
        if key in candidate:
            problems += _named_differences(key, candidate[key], reference[key],
                                           lambda a, b: _close(a, b, COEF_REL))
    for key in ("df", "p"):
        if key in candidate:
            problems += _named_differences(key, candidate[key], reference[key], _same_digits)
    if "varcor" in candidate:
        problems += _varcor_differences(candidate["varcor"], reference["varcor"], reference["sigma"])
    return problems


def from_psyling(fit) -> dict:
    """A psyling ``MixedFit`` in :func:`lmer`'s shape (lme4's coefficient and VarCorr names), for
    :func:`differences`."""
    def name(term: str) -> str:
        return "(Intercept)" if term == "Intercept" else term
    table, cov = fit.coefficients, fit.covariance
    per_term = {key: {name(t): float(v) for t, v in zip(table["term"], table[column])}
                for key, column in (("fixef", "estimate"), ("se", "std_error"), ("df", "df"), ("p", "p_value"))}
    varcor = [{"grp": g, "var1": a, "var2": b, "vcov": float(v), "sdcor": float(s)}
              for g, a, b, v, s in zip(cov["group"], cov["name1"], cov["name2"], cov["vcov"], cov["sd_cor"])]
    return {"loglik": fit.loglik, "is_singular": fit.singular, "varcor": varcor, **per_term}
