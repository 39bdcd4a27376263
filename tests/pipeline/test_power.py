"""Detectable differences of the paired t-test against t tables, the noncentral t and simulation; verdicts."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from pipeline import paired, power


def test_detectable_difference_matches_t_tables():
    # t tables, 7 degrees of freedom: t(0.975) = 2.365, t(0.80) = 0.896; (2.365 + 0.896) / sqrt(8)
    assert power.detectable_difference(1.0, 8) == pytest.approx(1.1529, abs=2e-4)
    # linear in sd: the registered 8 seeds detect 0.03 when the paired differences have sd 0.026
    assert power.detectable_difference(0.026, 8) == pytest.approx(0.026 * power.detectable_difference(1.0, 8))
    assert power.detectable_difference(0.026, 8) == pytest.approx(0.02997, abs=1e-4)
    # 9 degrees of freedom, alpha 0.01, power 0.90: t(0.995) = 3.250, t(0.90) = 1.383
    assert power.detectable_difference(1.0, 10, alpha=0.01, power=0.90) == pytest.approx(4.633 / np.sqrt(10), abs=3e-4)
    assert power.detectable_difference(0.0, 8) == 0.0
    for bad in (dict(sd=1.0, n=1), dict(sd=-1.0, n=8), dict(sd=np.nan, n=8), dict(sd=1.0, n=8, power=0.01)):
        with pytest.raises(ValueError):
            power.detectable_difference(**bad)


@pytest.mark.parametrize("n", [5, 6, 8, 10, 20, 50, 200])
def test_registered_approximation_is_within_two_percent_of_the_noncentral_t(n):
    approximate, exact = power.detectable_difference(0.02, n), power.exact_detectable_difference(0.02, n)
    assert power.paired_t_power(exact, 0.02, n) == pytest.approx(0.80, abs=1e-9)
    assert approximate == pytest.approx(exact, rel=0.02)  # 1.2 % at n = 5, 0.3 % at n = 8
    assert power.paired_t_power(approximate, 0.02, n) == pytest.approx(0.80, abs=0.01)


def test_approximation_is_optimistic_for_very_few_seeds():
    # two or three seeds: the registered formula understates the difference needed by 14 % and 5 %
    assert power.detectable_difference(1.0, 2) < 0.9 * power.exact_detectable_difference(1.0, 2)
    assert power.detectable_difference(1.0, 3) < 0.96 * power.exact_detectable_difference(1.0, 3)
    assert power.paired_t_power(0.0, 1.0, 8) == pytest.approx(0.05)
    assert power.paired_t_power(0.0, 0.0, 8) == 0.0 and power.paired_t_power(0.01, 0.0, 8) == 1.0


def test_simulated_paired_t_tests_reject_at_the_computed_power():
    n, sd, draws = 8, 0.02, 4000
    rng = np.random.default_rng(0)
    seed_effect = rng.normal(0.6, 0.1, (draws, n))  # shared by both arms of a pair, removed by pairing
    tolerance = {rate: 5 * np.sqrt(rate * (1 - rate) / draws) for rate in (0.80, 0.05)}  # 5 binomial SE
    for difference, rate in ((power.exact_detectable_difference(sd, n), 0.80), (0.0, 0.05)):
        arm = seed_effect + rng.normal(difference, sd, (draws, n))
        rejected = stats.ttest_rel(arm, seed_effect, axis=1).pvalue < 0.05
        assert rejected.mean() == pytest.approx(rate, abs=tolerance[rate])  # measured 0.7965 and 0.04825


def test_verdict_names_all_four_outcomes():
    rng = np.random.default_rng(1)
    baseline = rng.normal(0.6, 0.05, 8)

    def test_of(differences):
        return paired.paired_t(baseline + np.asarray(differences), baseline)

    better = test_of(rng.normal(0.05, 0.01, 8))
    worse = test_of(rng.normal(-0.05, 0.01, 8))
    precise = test_of([0.002, -0.004, 0.003, -0.001, 0.0, 0.004, -0.003, 0.001])  # sd 0.0028: detects 0.0032
    noisy = test_of([0.04, -0.05, 0.02, -0.03, 0.06, -0.04, 0.01, -0.02])  # sd 0.040: detects 0.046
    assert (power.verdict(better, 0.03), power.verdict(worse, 0.03)) == ("positive", "negative")
    assert not precise.excludes_zero and power.detectable_difference(precise.sd, 8) < 0.03
    assert power.verdict(precise, 0.03) == "no effect detected"
    assert not noisy.excludes_zero and power.detectable_difference(noisy.sd, 8) > 0.03
    assert power.verdict(noisy, 0.03) == "underpowered"
    assert power.verdict(noisy, 0.05) == "no effect detected"  # a larger meaningful effect it can detect
    assert power.verdict(paired.paired_t(baseline, baseline), 0.03) == "no effect detected"  # sd 0
    with pytest.raises(ValueError, match="meaningful"):
        power.verdict(noisy, 0.0)


def test_verdict_uses_the_level_of_its_test():
    # mean 0, sd 0.025 over 8 seeds: detectable 0.029 at alpha 0.05, 0.039 at alpha 0.01
    differences = np.array([3.0, -2.0, 1.0, -3.0, 2.0, -1.0, 4.0, -4.0])
    differences *= 0.025 / differences.std(ddof=1)
    baseline = np.full(8, 0.6)
    test_95 = paired.paired_t(baseline + differences, baseline)
    test_99 = paired.paired_t(baseline + differences, baseline, level=0.99)
    assert test_95.sd == pytest.approx(0.025) and not (test_95.excludes_zero or test_99.excludes_zero)
    assert (power.verdict(test_95, 0.03), power.verdict(test_99, 0.03)) == ("no effect detected", "underpowered")
