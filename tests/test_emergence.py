"""The emergence fit (sigmoid over log10 step) recovers known midpoints from synthetic item passes."""
import math

import numpy as np
import pandas as pd
import pytest

from psyling.errors import PsylingError
from psyling.stats.emergence import FLAT_RISE, EmergenceFit, emergence, fit_sigmoid

STEPS = np.logspace(1, 5, 12)


def synthetic_items(midpoint: float, seed: int, n_items: int = 200, steps=STEPS) -> pd.DataFrame:
    """Item passes drawn from a known logistic in log10 step (chance 0.5 rising to 0.95, width 0.25 decades)."""
    rng = np.random.default_rng(seed)
    with np.errstate(divide="ignore"):
        x = np.log10(np.asarray(steps, dtype=float))
    p = 0.5 + 0.45 / (1 + np.exp(-(x - midpoint) / 0.25))
    rows = [(step, item, bool(rng.random() < prob)) for step, prob in zip(steps, p) for item in range(n_items)]
    return pd.DataFrame(rows, columns=["step", "item", "passed"])


@pytest.mark.parametrize("midpoint,seed", [(3.0, 1), (3.7, 2)])
def test_known_midpoint_is_recovered_within_its_bootstrap_ci(midpoint, seed):
    fit = emergence(synthetic_items(midpoint, seed), n_boot=200, seed=0)
    assert fit.converged, fit.note
    assert abs(fit.log10_step - midpoint) < 0.15
    assert fit.step == pytest.approx(10 ** fit.log10_step)
    assert fit.ci_low < 10 ** midpoint < fit.ci_high
    assert fit.ci_low < fit.step < fit.ci_high
    assert fit.n_boot_ok == 200 and fit.n_steps == 12
    assert 0.4 < fit.lo < 0.6 and 0.85 < fit.hi <= 1.0 and fit.width > 0


def test_fit_sigmoid_on_an_exact_curve_returns_its_parameters():
    x = np.log10(STEPS)
    accuracy = 0.2 + 0.7 / (1 + np.exp(-(x - 2.5) / 0.4))
    fit = fit_sigmoid(STEPS, accuracy)
    assert fit.converged
    assert (fit.lo, fit.hi, fit.log10_step, fit.width) == pytest.approx((0.2, 0.9, 2.5, 0.4), abs=1e-4)


def test_a_flat_curve_is_not_converged_and_says_so():
    flat = synthetic_items(midpoint=9.0, seed=3)  # the rise lies far beyond the last step: accuracy stays ~0.5
    fit = emergence(flat, n_boot=50, seed=0)
    assert not fit.converged
    assert "flat curve" in fit.note and str(FLAT_RISE) in fit.note
    assert math.isnan(fit.step) and math.isnan(fit.ci_low) and fit.n_boot_ok == 0


def test_step_zero_is_dropped_with_a_note():
    steps = np.concatenate([[0.0], STEPS])
    with_zero = emergence(synthetic_items(3.0, 4, steps=steps), n_boot=50, seed=0)
    assert "dropped step 0" in with_zero.note
    assert with_zero.n_steps == 12 and with_zero.converged
    assert abs(with_zero.log10_step - 3.0) < 0.15


def test_a_negative_step_is_a_one_line_error():
    with pytest.raises(PsylingError, match="negative training step"):
        fit_sigmoid([-1, 10, 100, 1000], [0.5, 0.5, 0.9, 0.9])


def test_the_bootstrap_is_deterministic_for_a_seed():
    items = synthetic_items(3.0, 5, n_items=60)
    first, again = emergence(items, n_boot=30, seed=7), emergence(items, n_boot=30, seed=7)
    other = emergence(items, n_boot=30, seed=8)
    assert first == again
    assert (first.ci_low, first.ci_high) != (other.ci_low, other.ci_high)
    assert isinstance(first, EmergenceFit) and first.to_dict()["ci_low"] == first.ci_low


def items_from_accuracy(steps, accuracies, n_items=24) -> pd.DataFrame:
    """Item passes giving exactly these accuracies: at each step the first round(acc * n) items pass."""
    rows = [(s, i, i < round(a * n_items)) for s, a in zip(steps, accuracies) for i in range(n_items)]
    return pd.DataFrame(rows, columns=["step", "item", "passed"])


def test_a_falling_curve_has_no_emergence_step():
    fit = fit_sigmoid([1, 3, 10, 30, 100, 200], [0.92, 0.96, 0.92, 0.75, 0.0, 0.21])
    assert not fit.converged and math.isnan(fit.step) and "falling curve" in fit.note


def test_a_midpoint_after_the_last_checkpoint_is_not_an_emergence_step():
    steps = [1, 10, 100, 1000]
    x = np.log10(steps)
    accuracy = 0.1 + 0.8 / (1 + np.exp(-(x - 3.3) / 0.3))  # still rising at the last checkpoint
    fit = fit_sigmoid(steps, accuracy)
    assert fit.log10_step > 3 and not fit.converged and "after the last checkpoint" in fit.note


def test_a_jump_between_two_checkpoints_gets_their_interval():
    steps = [1, 3, 10, 30, 100, 300]
    fit = emergence(items_from_accuracy(steps, [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]), n_boot=50, seed=0)
    assert fit.converged and 10 <= fit.step <= 30
    assert fit.ci_low == pytest.approx(10) and fit.ci_high == pytest.approx(30)
    assert "CI widened" in fit.note
