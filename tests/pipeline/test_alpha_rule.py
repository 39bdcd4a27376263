"""The alpha rule keeps the largest alpha whose clean validation accuracy stays within tolerance."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.classifier.alpha_rule import choose_alpha

ALPHAS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0)


def test_the_largest_alpha_within_tolerance_on_a_declining_sweep():
    baseline = 0.90
    # accuracy falls with alpha: 0.905 0.90 0.895 0.885 0.875 0.84 0.70
    sweep = dict(zip(ALPHAS, (0.905, 0.90, 0.895, 0.885, 0.875, 0.84, 0.70)))
    assert choose_alpha(sweep, baseline) == 5.0  # 0.885 is 0.015 below; 10 loses 0.025
    assert choose_alpha(sweep, baseline, tolerance=0.03) == 10.0
    assert choose_alpha(sweep, baseline, tolerance=0.0) == 1.0


def test_the_boundary_qualifies_and_order_of_the_sweep_does_not_matter():
    sweep = {20.0: 0.78, 2.0: 0.80, 10.0: 0.70}  # 0.78 is exactly 0.02 below 0.80
    assert choose_alpha(sweep, 0.80) == 20.0


def test_a_dip_in_the_middle_does_not_hide_a_larger_admissible_alpha():
    sweep = dict(zip(ALPHAS, (0.9, 0.9, 0.85, 0.9, 0.89, 0.6, 0.5)))
    assert choose_alpha(sweep, 0.9) == 10.0


def test_no_admissible_alpha_is_none():
    assert choose_alpha({1.0: 0.5, 5.0: 0.4}, 0.9) is None


def test_random_sweeps_agree_with_the_definition():
    rng = np.random.default_rng(3)
    for _ in range(200):
        accuracy = rng.uniform(0.6, 0.95, size=len(ALPHAS))
        baseline = float(rng.uniform(0.7, 0.95))
        expected = [a for a, v in zip(ALPHAS, accuracy) if v >= baseline - 0.02]
        assert choose_alpha(dict(zip(ALPHAS, accuracy)), baseline) == (max(expected) if expected else None)


@pytest.mark.parametrize(
    "sweep, baseline, message",
    [
        ({0.0: 0.9}, 0.9, "alphas must be finite and > 0"),
        ({1.0: float("nan")}, 0.9, "alpha 1: accuracy must be a finite fraction"),
        ({1.0: 0.9}, 1.2, "baseline: accuracy must be"),
    ],
)
def test_bad_sweeps_are_refused_by_name(sweep, baseline, message):
    with pytest.raises(ValueError, match=message):
        choose_alpha(sweep, baseline)
