"""When does an effect emerge in training: a logistic curve over log10(step) fitted to accuracy (as Chang & Bergen
2022 fit word acquisition over checkpoints), with an item-bootstrap confidence interval on the midpoint step.

The curve is ``acc = lo + (hi - lo) / (1 + exp(-(log10(step) - m) / w))`` with ``0 <= lo <= hi <= 1``, ``w > 0``
and ``m`` within one decade of the observed steps. A curve whose observed accuracy range, or whose fitted rise
``hi - lo``, is below :data:`FLAT_RISE` (0.1, ten accuracy points) is called flat (a falling curve fits as flat):
no emergence step is reported (``converged`` False, with a note). So is a falling curve (its last third of steps
below its first by more than FLAT_RISE), and a fitted midpoint outside the observed steps is reported but not
called converged. A curve that jumps between two checkpoints (fitted width under a tenth of their gap) locates its
midpoint only between them: the CI is widened to those two checkpoints.
Step 0 has no logarithm: such rows are dropped and the drop is recorded in the note."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Optional

import numpy as np
import pandas as pd
from scipy.optimize import least_squares
from scipy.special import expit

from ..errors import PsylingError

FLAT_RISE = 0.1          # a fitted rise hi - lo below this is a flat curve: no emergence step
MIN_WIDTH = 1e-3         # the narrowest logistic (in decades); a step function between two checkpoints
MAX_EVALUATIONS = 60     # per start: a curve that needs more is degenerate (e.g. a step between two checkpoints)
START_MIDPOINTS = 5      # starting midpoints spread over the observed range, besides the crossing estimate


@dataclass(frozen=True)
class EmergenceFit:
    """A fitted emergence curve: ``step`` = 10**midpoint, its CI in steps, the floor/ceiling and width."""
    step: float
    log10_step: float
    ci_low: float
    ci_high: float
    lo: float
    hi: float
    width: float
    converged: bool
    note: str = ""
    n_steps: int = 0
    n_boot_ok: int = 0

    def to_dict(self) -> dict:
        """Plain values (for a table row or JSON)."""
        return asdict(self)


def _logistic(x: np.ndarray, lo: float, hi: float, m: float, w: float) -> np.ndarray:
    return lo + (hi - lo) * expit((x - m) / w)


def _unpack(params: np.ndarray, floor: Optional[float]) -> tuple[float, float, float, float]:
    """(lo, hi, m, w) from the fitted vector: ``lo`` (unless fixed at ``floor``), the rise share s, m, w;
    hi = lo + s (1 - lo), so lo <= hi <= 1 holds inside box bounds."""
    lo, rest = (floor, params) if floor is not None else (params[0], params[1:])
    share, m, w = rest
    return float(lo), float(lo + share * (1 - lo)), float(m), float(w)


def _crossing(x: np.ndarray, y: np.ndarray) -> float:
    """Where the curve first passes half-way between its minimum and maximum (a starting midpoint)."""
    half = (y.min() + y.max()) / 2
    above = np.nonzero(y >= half)[0]
    return float(x[above[0]]) if len(above) else float(np.median(x))


def _starts(x: np.ndarray, y: np.ndarray, floor: Optional[float]) -> list[np.ndarray]:
    """Starting vectors: floor/ceiling from the data, midpoints at the crossing and spread over the range."""
    lo = float(np.clip(y.min(), 0, 1)) if floor is None else floor
    share = float(np.clip((y.max() - lo) / max(1 - lo, 1e-9), 0, 1))
    width = max((x.max() - x.min()) / 8, 0.05)
    mids = [_crossing(x, y), *np.linspace(x.min(), x.max(), START_MIDPOINTS)]
    head = [] if floor is not None else [lo]
    return [np.array([*head, share, m, width]) for m in mids]


def _vector(fit: EmergenceFit, floor: Optional[float]) -> np.ndarray:
    """The fitted vector of an earlier fit (the inverse of :func:`_unpack`)."""
    share = (fit.hi - fit.lo) / max(1 - fit.lo, 1e-9)
    return np.array([*([] if floor is not None else [fit.lo]), share, fit.log10_step, fit.width])


def _bounds(x: np.ndarray, floor: Optional[float]) -> tuple[list[float], list[float]]:
    low = [0.0, x.min() - 1, MIN_WIDTH]
    high = [1.0, x.max() + 1, max(x.max() - x.min(), 1.0) * 2]
    return ([0.0] + low, [1.0] + high) if floor is None else (low, high)


def _least_squares(x: np.ndarray, y: np.ndarray, floor: Optional[float],
                   starts: list[np.ndarray]) -> Optional[np.ndarray]:
    """The best of the fits from each start (lowest cost), None when all fail."""
    low, high = _bounds(x, floor)
    best = None
    for start in starts:
        start = np.clip(start, np.array(low) + 1e-9, np.array(high) - 1e-9)
        try:
            fit = least_squares(lambda p: _logistic(x, *_unpack(p, floor)) - y, start, bounds=(low, high),
                                max_nfev=MAX_EVALUATIONS)
        except (ValueError, FloatingPointError):
            continue
        if fit.status >= 0 and (best is None or fit.cost < best.cost):
            best = fit
    return None if best is None else best.x


def _clean_steps(steps, accuracy) -> tuple[np.ndarray, np.ndarray, str]:
    """Finite (step, accuracy) pairs with step > 0; step 0 is dropped with a note; a negative step is an error."""
    x, y = np.asarray(steps, dtype=float), np.asarray(accuracy, dtype=float)
    if x.shape != y.shape:
        raise PsylingError(f"emergence: {len(x)} steps but {len(y)} accuracies")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if (x < 0).any():
        raise PsylingError(f"emergence: field step: negative training step {x[x < 0][0]:g}; steps must be >= 0")
    zero = x == 0
    note = f"dropped step 0 ({int(zero.sum())} point(s)): log10 step is undefined" if zero.any() else ""
    return np.log10(x[~zero]), y[~zero], note


def _failed(note: str, n_steps: int, lo: float = math.nan, hi: float = math.nan) -> EmergenceFit:
    nan = math.nan
    return EmergenceFit(nan, nan, nan, nan, lo, hi, nan, False, note, n_steps)


def _join(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


def fit_sigmoid(steps, accuracy, floor: Optional[float] = None,
                start: Optional[EmergenceFit] = None) -> EmergenceFit:
    """Least-squares logistic in log10(step) to accuracy per step; ``floor`` fixes ``lo`` (e.g. chance); ``start``
    (an earlier fit) is the only starting point instead of the spread of starts (bootstrap refits).
    ``converged`` is False, with a note, for a flat curve, a failed fit or a midpoint at the edge of its bounds."""
    x, y, note = _clean_steps(steps, accuracy)
    n = len(np.unique(x))
    if n < 3:
        return _failed(_join(note, f"fewer than 3 distinct steps ({n})"), n)
    if y.max() - y.min() < FLAT_RISE:
        return _failed(_join(note, f"flat curve: accuracy range {y.max() - y.min():.3f} < {FLAT_RISE}"), n,
                       float(y.mean()), float(y.mean()))
    if start is None and _falling(x, y):
        return _failed(_join(note, "falling curve: accuracy drops over training (no emergence)"), n)
    starts = _starts(x, y, floor) if start is None else [_vector(start, floor)]
    params = _least_squares(x, y, floor, starts)
    return _fit_result(params, x, floor, note, n)


def _falling(x: np.ndarray, y: np.ndarray) -> bool:
    """The mean accuracy of the last third of the steps is below the first third's by more than FLAT_RISE."""
    order = np.argsort(x)
    third = max(1, len(order) // 3)
    return float(y[order[-third:]].mean()) < float(y[order[:third]].mean()) - FLAT_RISE


def _fit_result(params: Optional[np.ndarray], x: np.ndarray, floor: Optional[float], note: str,
                n: int) -> EmergenceFit:
    """The EmergenceFit for fitted parameters (or their absence), with the flat / edge checks."""
    if params is None:
        return _failed(_join(note, "sigmoid fit failed"), n)
    lo, hi, m, w = _unpack(params, floor)
    if hi - lo < FLAT_RISE:
        return _failed(_join(note, f"flat curve: fitted rise hi-lo {hi - lo:.3f} < {FLAT_RISE}"), n, lo, hi)
    outside = m < x.min() or m > x.max()
    edge = (f"midpoint outside the observed steps ({'before the first' if m < x.min() else 'after the last'} "
            "checkpoint): not an emergence step" if outside else "")
    return EmergenceFit(10 ** m, m, math.nan, math.nan, lo, hi, w, not outside, _join(note, edge), n)


def _bracketing(steps: np.ndarray, point: EmergenceFit) -> Optional[tuple[float, float]]:
    """The observed log10 steps on either side of a midpoint that a near-step fit puts between two checkpoints
    (fitted width under a tenth of their gap); None for a smoother curve or a midpoint outside the steps."""
    x = np.log10(np.unique(steps[steps > 0]))
    m = point.log10_step
    if not x.min() <= m <= x.max():
        return None
    before, after = x[x <= m].max(), x[x >= m].min()
    gap = after - before
    return (float(before), float(after)) if gap > 0 and point.width < gap / 10 else None


def _pass_matrix(items: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps, and step × item matrices of passes and of presence (an item may be missing at a step)."""
    missing = [c for c in ("step", "item", "passed") if c not in items.columns]
    if missing:
        raise PsylingError(f"emergence: items table lacks column(s) {', '.join(missing)}")
    table = items.dropna(subset=["step", "passed"])
    table = table.assign(passed=table["passed"].astype(float))
    passes = table.pivot_table(index="step", columns="item", values="passed", aggfunc="mean")
    present = passes.notna().to_numpy(dtype=float)
    return passes.index.to_numpy(dtype=float), passes.fillna(0.0).to_numpy(), present


def _resample_midpoints(steps: np.ndarray, passes: np.ndarray, present: np.ndarray, n_boot: int, seed: int,
                        point: EmergenceFit, floor: Optional[float]) -> np.ndarray:
    """The fitted log10 midpoint for each item resample (the same resample at every step); NaN where it fails."""
    rng = np.random.default_rng(seed)
    n_items = passes.shape[1]
    mids = np.full(n_boot, math.nan)
    for b in range(n_boot):
        weights = np.bincount(rng.integers(0, n_items, n_items), minlength=n_items)
        with np.errstate(invalid="ignore", divide="ignore"):
            accuracy = (passes @ weights) / (present @ weights)
        mids[b] = fit_sigmoid(steps, accuracy, floor, start=point).log10_step
    return mids


def emergence(items: pd.DataFrame, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
              floor: Optional[float] = None) -> EmergenceFit:
    """The emergence step of one set or phenomenon of one model: the sigmoid fit to per-step accuracy, with a
    percentile CI on the midpoint step from ``n_boot`` item resamples (failing resamples excluded, counted)."""
    steps, passes, present = _pass_matrix(items)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = passes.sum(axis=1) / present.sum(axis=1)
    point = fit_sigmoid(steps, accuracy, floor)
    if math.isnan(point.log10_step) or n_boot < 1:
        return point
    mids = _resample_midpoints(steps, passes, present, n_boot, seed, point, floor)
    ok = mids[np.isfinite(mids)]
    if not len(ok):
        return replace(point, note=_join(point.note, f"all {n_boot} bootstrap fits failed"))
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(ok, [tail, 100 - tail])
    failed = f"{n_boot - len(ok)} of {n_boot} bootstrap fits failed (excluded)" if len(ok) < n_boot else ""
    bracket = _bracketing(steps, point)
    widened = ""
    if bracket is not None and (low > bracket[0] or high < bracket[1]):
        low, high = min(low, bracket[0]), max(high, bracket[1])
        widened = "a jump between two checkpoints: CI widened to them"
    return replace(point, ci_low=float(10 ** low), ci_high=float(10 ** high), n_boot_ok=len(ok),
                   note=_join(point.note, failed, widened))

