"""Paired comparisons of classifier arms over seeds: bootstrap confidence intervals.

Arms are paired by seed (the same seed gives the same initialisation, data split and batch order in
every arm), and attack distances are paired by image (every model is attacked on the same common
images).  Everything is plain numpy.
"""

from __future__ import annotations

import dataclasses

import numpy as np

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
