"""Bootstrap intervals, paired t-tests and Holm's correction against reference computations."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import stats

from pipeline import paired


def test_bootstrap_mean_equals_a_loop_over_the_same_resamples():
    values = np.array([0.41, 0.47, 0.39, 0.52, 0.45])
    ci = paired.bootstrap_mean(values, n_bootstrap=2000, seed=3)
    rng = np.random.default_rng(3)
    index = rng.integers(0, 5, (2000, 5))
    means = [np.mean([values[i] for i in row]) for row in index]
    assert ci.estimate == pytest.approx(values.mean())
    assert ci.low == pytest.approx(np.percentile(means, 2.5)) and ci.high == pytest.approx(np.percentile(means, 97.5))
    assert ci.n == 5 and ci.low < ci.estimate < ci.high


def test_bootstrap_mean_agrees_with_scipy_percentile_bootstrap():
    values = np.random.default_rng(0).normal(0.1, 0.05, 12)
    ours = paired.bootstrap_mean(values, n_bootstrap=40_000, seed=1)
    theirs = stats.bootstrap(
        (values,), np.mean, n_resamples=40_000, method="percentile", random_state=np.random.default_rng(2)
    ).confidence_interval
    assert ours.low == pytest.approx(theirs.low, abs=0.002) and ours.high == pytest.approx(theirs.high, abs=0.002)


def test_paired_difference_pairs_by_seed():
    a = np.array([0.50, 0.60, 0.55, 0.70, 0.65])
    b = a - np.array([0.02, 0.03, 0.01, 0.04, 0.02])  # a beats b on every seed by a little
    ci = paired.paired_difference(a, b)
    assert ci.estimate == pytest.approx(0.024) and ci.excludes_zero and ci.low >= 0.01 and ci.high <= 0.04
    # unpaired, the seed-to-seed spread of 0.2 would swamp a difference of 0.024
    assert paired.bootstrap_mean(a).low < paired.bootstrap_mean(b).high
    with pytest.raises(ValueError, match="shapes"):
        paired.paired_difference(a, b[:3])
    with pytest.raises(ValueError, match="finite"):
        paired.bootstrap_mean([0.1, np.nan])


def test_paired_median_difference_per_image():
    a = np.array([[1.0, 2.0, np.inf, 4.0], [1.0, 1.0, 1.0, np.inf]])
    b = np.array([[0.5, 2.5, np.inf, 1.0], [2.0, 2.0, 2.0, np.inf]])
    # seed 0: differences 0.5, -0.5, 0 (both unbroken), 3.0 -> median 0.25; seed 1: -1, -1, -1, 0 -> -1
    np.testing.assert_allclose(paired.paired_median_difference(a, b), [0.25, -1.0])
    with pytest.raises(ValueError, match="n_seeds"):
        paired.paired_median_difference(a[0], b[0])


def test_too_few_seeds_are_reported_as_a_range_never_as_a_significant_interval(capsys):
    from populate.api import comparison

    # Two seeds that both favour the first arm: the bootstrap interval [0.02, 0.03] excludes 0, but
    # two seeds cannot support that.
    ci = paired.paired_difference(np.array([0.52, 0.63]), np.array([0.50, 0.60]))
    assert ci.excludes_zero and not ci.trustworthy and paired.paired_difference(np.ones(5), np.zeros(5)).trustworthy
    entry = comparison.interval_entry(ci, np.array([0.02, 0.03]))
    assert not entry["excludes_zero"] and (entry["min"], entry["max"]) == (0.02, 0.03)
    arm = dict(seeds=[0, 1], clean=entry, median={}, steps=[4, 4], noise={}, invariance={})
    comparison.report(dict(arms={"none": arm}, differences={}, targets={}))
    out = capsys.readouterr().out
    assert "0.025 (seeds 0.020 to 0.030)" in out and "too few for a confidence interval" in out
    assert "[0.02" not in out


# Student's sleep data (Cushny and Peebles 1905): extra hours of sleep of 10 patients under two drugs.
SLEEP_DRUG_1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
SLEEP_DRUG_2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]


def test_paired_t_reproduces_the_textbook_sleep_example():
    # R: t.test(extra ~ group, data = sleep, paired = TRUE) with the groups swapped:
    # t = 4.0621, df = 9, p-value = 0.002833, 95 percent interval 0.7001142 2.4598858, mean 1.58
    test = paired.paired_t(SLEEP_DRUG_2, SLEEP_DRUG_1)
    assert (test.n, test.excluded, test.level) == (10, 0, 0.95)
    assert test.mean == pytest.approx(1.58) and test.t == pytest.approx(4.0621, abs=1e-4)
    assert test.p == pytest.approx(0.002833, abs=1e-6) and test.excludes_zero
    assert (test.low, test.high) == pytest.approx((0.7001142, 2.4598858), abs=1e-6)
    assert test.sd == pytest.approx(1.2299955, abs=1e-6)
    assert str(test) == "+1.580 [+0.700, +2.460] (t = 4.06, p = 0.00283, n = 10)"


@pytest.mark.parametrize("seed", range(5))
def test_paired_t_equals_the_t_formulas_on_random_data(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 30))
    a = rng.normal(0.5, 0.1, n)
    b = a + rng.normal(0.01 * seed, 0.02, n)
    difference, level = a - b, [0.8, 0.9, 0.95, 0.99][seed % 4]
    test = paired.paired_t(a, b, level=level)
    mean, se = difference.mean(), difference.std(ddof=1) / np.sqrt(n)
    half_width = stats.t.ppf((1 + level) / 2, n - 1) * se
    assert test.mean == pytest.approx(mean) and test.sd == pytest.approx(difference.std(ddof=1))
    assert (test.low, test.high) == pytest.approx((mean - half_width, mean + half_width))
    assert test.t == pytest.approx(mean / se) and test.p == pytest.approx(2 * stats.t.sf(abs(mean / se), n - 1))
    # the interval excludes 0 exactly when the test rejects at 1 - level
    assert test.excludes_zero == (test.p < 1 - level)


def test_paired_t_counts_non_finite_pairs_and_tests_the_rest():
    a = np.array([0.61, 0.58, np.nan, 0.66, 0.60, np.inf, 0.63])
    b = np.array([0.57, 0.55, 0.50, 0.60, np.nan, 0.52, 0.61])
    test = paired.paired_t(a, b)
    keep = [0, 1, 3, 6]  # finite in both arms
    assert test == dataclasses.replace(paired.paired_t(a[keep], b[keep]), excluded=3)
    assert test.n == 4 and test.excluded == 3 and test.mean == pytest.approx(0.0375)
    assert str(test).endswith("n = 4; 3 of 7 pairs excluded)")
    with pytest.raises(ValueError, match="at least 2 pairs.*1"):
        paired.paired_t([0.5, np.nan, 0.6], [0.4, 0.4, np.nan])
    with pytest.raises(ValueError, match="equal shape"):
        paired.paired_t([0.5, 0.6], [0.4, 0.4, 0.3])
    with pytest.raises(ValueError, match="level"):
        paired.paired_t([0.5, 0.6], [0.4, 0.4], level=95)


def test_paired_t_with_identical_differences_has_an_interval_of_width_zero():
    shifted = paired.paired_t([1.0, 2.0, 3.0], [0.5, 1.5, 2.5])
    assert (shifted.mean, shifted.sd, shifted.low, shifted.high) == (0.5, 0.0, 0.5, 0.5)
    assert shifted.t == np.inf and shifted.p == 0 and shifted.excludes_zero
    assert paired.paired_t([1.0, 2.0], [1.5, 2.5]).t == -np.inf
    same = paired.paired_t([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert (same.mean, same.low, same.high, same.t, same.p) == (0.0, 0.0, 0.0, 0.0, 1.0) and not same.excludes_zero


def test_holm_on_a_worked_example():
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> 0.06 (monotone)
    np.testing.assert_allclose(paired.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(paired.holm([0.2, 0.5, 0.9]), [0.6, 1.0, 1.0])  # capped at 1
    np.testing.assert_allclose(paired.holm([0.04]), [0.04])
    assert paired.holm([]).shape == (0,)
    for bad in ([0.1, np.nan], [0.1, 1.2], [-0.01], [[0.1]]):
        with pytest.raises(ValueError):
            paired.holm(bad)


def holm_rejections(pvalues: np.ndarray, alpha: float) -> np.ndarray:
    """Holm's step-down procedure as stated: reject in ascending order while (m - k) p_(k) <= alpha."""
    m, rejected = len(pvalues), np.zeros(len(pvalues), dtype=bool)
    for k, i in enumerate(np.argsort(pvalues, kind="stable")):
        if (m - k) * pvalues[i] > alpha:
            break
        rejected[i] = True
    return rejected


@pytest.mark.parametrize("seed", range(20))
def test_holm_adjusted_p_is_the_smallest_level_that_rejects(seed):
    rng = np.random.default_rng(seed)
    pvalues = rng.uniform(0, 0.3, int(rng.integers(1, 9))) ** 2
    if seed % 2:
        pvalues = np.round(pvalues, 2)  # ties
    adjusted = paired.holm(pvalues)
    # the rejected set changes only at the levels (m - k) p_(k), so the smallest of them (or 1) at
    # which a hypothesis is rejected is its adjusted p-value
    m = len(pvalues)
    levels = sorted({*((m - k) * p for k, p in enumerate(np.sort(pvalues)) if (m - k) * p <= 1), 1.0})
    expected = [min(level for level in levels if holm_rejections(pvalues, level)[i] or level == 1) for i in range(m)]
    np.testing.assert_allclose(adjusted, expected, rtol=1e-12)
    for alpha in rng.uniform(0, 0.2, 20):
        np.testing.assert_array_equal(adjusted <= alpha, holm_rejections(pvalues, alpha))
