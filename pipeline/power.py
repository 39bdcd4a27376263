"""Power of the two-sided paired t-test, and the pre-registered verdict on a comparison.

docs/results.md ("Neural regularization with power") registers the smallest difference detectable at
80 % power as ``(t(1 - alpha/2, n-1) + t(power, n-1)) * sd / sqrt(n)``, from the measured sd of the
paired differences; a non-significant comparison whose detectable difference exceeds the meaningful
effect is reported as underpowered, not as "no effect".  The registered formula is an approximation;
:func:`exact_detectable_difference` solves the noncentral-t power equation for comparison (the two
agree to 1.2 % at n = 5 and 0.3 % at n = 8; the approximation is slightly optimistic for n <= 10).
"""

from __future__ import annotations

import numpy as np
from scipy import optimize, stats

from pipeline.paired import PairedTest

POWER = 0.80
POSITIVE, NEGATIVE, NO_EFFECT, UNDERPOWERED = "positive", "negative", "no effect detected", "underpowered"


def _checked(sd: float, n: int, alpha: float, power: float | None = None) -> None:
    if n < 2:
        raise ValueError(f"a paired t-test needs at least 2 pairs, got n = {n}")
    if not (np.isfinite(sd) and sd >= 0):
        raise ValueError(f"sd must be finite and >= 0, got {sd}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    if power is not None and not alpha < power < 1:
        raise ValueError(f"power must lie in (alpha, 1) = ({alpha}, 1), got {power}")


def detectable_difference(sd: float, n: int, alpha: float = 0.05, power: float = POWER) -> float:
    """Smallest true mean difference that a two-sided paired t-test on ``n`` pairs detects with ``power``.

    The registered approximation ``(t(1 - alpha/2, n-1) + t(power, n-1)) * sd / sqrt(n)``, in the
    units of ``sd`` (the sample standard deviation, ddof=1, of the paired differences).
    """
    _checked(sd, n, alpha, power)
    df = n - 1
    return float((stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(power, df)) * sd / np.sqrt(n))


def paired_t_power(difference: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """Probability that a two-sided paired t-test at ``alpha`` on ``n`` pairs rejects, for normal
    paired differences of mean ``difference`` and standard deviation ``sd`` (same units).

    The t statistic then follows the noncentral t with n - 1 degrees of freedom and noncentrality
    ``difference * sqrt(n) / sd``.  Both tails are upper tails (``nct.sf``, the lower one by the
    symmetry T(-nc) = -T(nc)) because scipy's ``nct.cdf`` far below a large noncentrality is NaN.
    """
    _checked(sd, n, alpha)
    if sd == 0:  # every difference equals ``difference``: paired_t rejects iff it is not 0
        return float(difference != 0)
    df, noncentrality = n - 1, difference * np.sqrt(n) / sd
    critical = stats.t.ppf(1 - alpha / 2, df)
    return float(stats.nct.sf(critical, df, noncentrality) + stats.nct.sf(critical, df, -noncentrality))


def exact_detectable_difference(sd: float, n: int, alpha: float = 0.05, power: float = POWER) -> float:
    """The difference at which :func:`paired_t_power` equals ``power`` (units of ``sd``), by root finding."""
    _checked(sd, n, alpha, power)
    if sd == 0:
        return 0.0
    high = detectable_difference(sd, n, alpha, power)
    while paired_t_power(high, sd, n, alpha) < power:  # the approximation can fall short of the root
        high *= 2
    return float(optimize.brentq(lambda d: paired_t_power(d, sd, n, alpha) - power, 0.0, high, xtol=1e-12 * high))


def verdict(test: PairedTest, meaningful: float, power: float = POWER) -> str:
    """The registered reading of ``test``: "positive", "negative", "no effect detected" or "underpowered".

    Significant (the ``test.level`` interval excludes 0): "positive" or "negative" by the sign of the
    mean difference.  Otherwise "no effect detected" if the test could detect ``meaningful`` (same
    units as the differences), i.e. ``detectable_difference(test.sd, test.n, 1 - test.level, power)
    <= meaningful``, and "underpowered" if not.
    """
    if not meaningful > 0:
        raise ValueError(f"the meaningful difference must be positive, got {meaningful}")
    if test.excludes_zero:
        return POSITIVE if test.mean > 0 else NEGATIVE
    detectable = detectable_difference(test.sd, test.n, 1 - test.level, power)
    return NO_EFFECT if detectable <= meaningful else UNDERPOWERED
