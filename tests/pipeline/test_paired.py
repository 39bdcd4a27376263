"""Bootstrap intervals of paired differences against reference computations."""

from __future__ import annotations

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
