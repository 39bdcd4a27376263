"""Paired comparisons of classifier arms over seeds: bootstrap intervals, paired t-tests, Holm.

Arms are paired by seed (the same seed gives the same initialisation, data split and batch order in
every arm), and attack distances are paired by image (every model is attacked on the same common
images).  The percentile bootstrap (:func:`bootstrap_mean`) is plain numpy; the pre-registered
endpoints (docs/results.md, "Neural regularization with power") use the two-sided paired t-test
(:func:`paired_t`, scipy) and Holm's correction of secondary endpoints (:func:`holm`).  Power and the
verdict on a test are in :mod:`pipeline.power`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import stats

N_BOOTSTRAP = 10_000
# Below this many seeds a percentile bootstrap interval is little more than the range of the values
# (two seeds give three distinct resampled means) and covers far less than its nominal level, so
# reports give the range instead.
MIN_SEEDS_FOR_INTERVAL = 5


@dataclasses.dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided percentile bootstrap interval."""

    estimate: float
    low: float
    high: float
    n: int  # seeds (resampled units)
    excluded: int = 0  # seeds left out for want of a finite value (bootstrap_mean_of_finite)

    @property
    def trustworthy(self) -> bool:
        """Whether there are enough seeds (``MIN_SEEDS_FOR_INTERVAL``) for the interval to mean much."""
        return self.n >= MIN_SEEDS_FOR_INTERVAL

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def __str__(self) -> str:
        text = f"{self.estimate:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"
        return text + (f" ({self.excluded} of {self.n + self.excluded} seeds excluded)" if self.excluded else "")


def bootstrap_mean(values, n_bootstrap: int = N_BOOTSTRAP, level: float = 0.95, seed: int = 0) -> Interval:
    """Mean of ``values`` (n,) with the percentile bootstrap interval at ``level``.

    Resamples: ``numpy.random.default_rng(seed).integers(0, n, (n_bootstrap, n))`` rows of indices;
    the interval is the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles (numpy's linear
    interpolation) of the resampled means.  NaN values are an error: a missing seed must be named,
    not dropped silently.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or len(values) < 1:
        raise ValueError(f"values must be a non-empty 1-d array, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("values must be finite (a seed without a result must be excluded by the caller)")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    index = np.random.default_rng(seed).integers(0, len(values), (n_bootstrap, len(values)))
    means = values[index].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return Interval(float(values.mean()), float(low), float(high), len(values))


def bootstrap_mean_of_finite(values, **kwargs) -> Interval | None:
    """:func:`bootstrap_mean` over the finite ``values`` (n,), saying how many were left out.

    A seed without a finite value (NaN: no result; +inf: e.g. a median over images of which half or
    more kept their class under attack) has no place in a mean, but its exclusion is part of the
    result: ``Interval.excluded`` counts it.  None when no value is finite.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"values must be a 1-d array, got shape {values.shape}")
    finite = np.isfinite(values)
    if not finite.any():
        return None
    return dataclasses.replace(bootstrap_mean(values[finite], **kwargs), excluded=int((~finite).sum()))


def paired_difference(a, b, **kwargs) -> Interval:
    """Mean over seeds of ``a - b`` ((n_seeds,) each, paired by position) with its bootstrap interval."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values need equal shapes, got {a.shape} and {b.shape}")
    return bootstrap_mean(a - b, **kwargs)


def paired_median_difference(a, b) -> np.ndarray:
    """Per seed, the median over images of the per-image difference ``a - b``.

    a, b : (n_seeds, n_images) distances of two arms on the same images (+inf: no adversarial found;
    the difference of two infinities counts as 0, inf - finite as +inf, so the median stays defined
    while fewer than half the images are unbroken).
    Returns (n_seeds,).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"need two (n_seeds, n_images) arrays of equal shape, got {a.shape} and {b.shape}")
    with np.errstate(invalid="ignore"):
        difference = np.where(np.isinf(a) & np.isinf(b) & (np.sign(a) == np.sign(b)), 0.0, a - b)
    return np.median(difference, axis=1)


@dataclasses.dataclass(frozen=True)
class PairedTest:
    """A two-sided paired t-test of ``a - b``, in the units of ``a`` and ``b``."""

    n: int  # finite pairs tested
    mean: float  # mean of the differences a - b
    sd: float  # sample standard deviation of the differences (ddof=1)
    low: float  # t-interval at ``level``
    high: float
    t: float  # mean / (sd / sqrt(n)); +-inf where sd = 0 and mean != 0
    p: float  # two-sided p-value
    level: float = 0.95
    excluded: int = 0  # pairs left out because a or b (or both) was not finite

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval excludes 0, i.e. p < 1 - level (the test is significant at that level)."""
        return self.low > 0 or self.high < 0

    def __str__(self) -> str:
        text = f"{self.mean:+.3f} [{self.low:+.3f}, {self.high:+.3f}] (t = {self.t:.2f}, p = {self.p:.3g}, n = {self.n}"
        return text + (f"; {self.excluded} of {self.n + self.excluded} pairs excluded)" if self.excluded else ")")


def paired_t(a, b, level: float = 0.95) -> PairedTest:
    """Two-sided paired t-test of ``a - b`` over the pairs where both are finite.

    a, b : (n_pairs,) values paired by position (e.g. by seed).  A pair with a non-finite value in
    either arm (NaN: no result; inf: an undefined median distance) is left out and counted in
    ``PairedTest.excluded``, never dropped silently.  Fewer than 2 finite pairs is an error.

    When every difference is the same (sd = 0) the t statistic is 0 / 0 or d / 0: scipy then gives
    NaN or inf.  Defined here instead: the interval is that difference, of width 0; p = 0 and
    t = +-inf if it is not 0, p = 1 and t = 0 if it is.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values need two 1-d arrays of equal shape, got {a.shape} and {b.shape}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    finite = np.isfinite(a) & np.isfinite(b)
    n, excluded = int(finite.sum()), int((~finite).sum())
    if n < 2:
        raise ValueError(f"a paired t-test needs at least 2 pairs with finite values, got {n} ({excluded} excluded)")
    a, b = a[finite], b[finite]
    difference = a - b
    mean, sd = float(difference.mean()), float(difference.std(ddof=1))
    if np.ptp(difference) == 0:  # exactly constant: see the docstring
        t = 0.0 if mean == 0 else float(np.copysign(np.inf, mean))
        return PairedTest(n, mean, 0.0, low=mean, high=mean, t=t, p=float(mean == 0), level=level, excluded=excluded)
    result = stats.ttest_rel(a, b)
    interval = result.confidence_interval(confidence_level=level)
    low, high = float(interval.low), float(interval.high)
    t, p = float(result.statistic), float(result.pvalue)
    return PairedTest(n, mean, sd, low=low, high=high, t=t, p=p, level=level, excluded=excluded)


def holm(pvalues) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (m,), in the order of ``pvalues`` (m,).

    Step-down: with the p-values sorted ascending, p_(1) <= ... <= p_(m), the adjusted value of the
    k-th is ``max over j <= k of min(1, (m - j + 1) p_(j))``.  Rejecting every hypothesis whose
    adjusted value is at most alpha is Holm's procedure at family-wise error rate alpha.
    Hand-written because statsmodels (``multipletests(method="holm")``) is not a dependency and
    scipy has only Benjamini-Hochberg/Yekutieli (``false_discovery_control``).
    """
    pvalues = np.asarray(pvalues, dtype=np.float64)
    if pvalues.ndim != 1:
        raise ValueError(f"pvalues must be a 1-d array, got shape {pvalues.shape}")
    if not ((pvalues >= 0) & (pvalues <= 1)).all():  # also refuses NaN
        raise ValueError(f"p-values must lie in [0, 1], got {pvalues}")
    m = len(pvalues)
    order = np.argsort(pvalues, kind="stable")
    stepped = np.minimum(1.0, (m - np.arange(m)) * pvalues[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(stepped)
    return adjusted
