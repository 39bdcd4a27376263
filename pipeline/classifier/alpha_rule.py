"""Choosing the similarity weight alpha the paper's way: on clean validation accuracy only.

Li et al. (2019) keep "preserved performance of baseline models when classifying images under standard
benchmarks": a regularized arm is compared with the baseline at the strength that does not cost clean
accuracy.  The rule, applied to every arm alike (neural, controls, positive control): among the swept
alphas, keep the **largest** whose clean validation accuracy (mean over seeds) is within ``tolerance``
of the baseline's.  Robustness never enters the choice, and neither does test data, so the
comparison at the chosen alpha is not tuned on the quantity it reports.
"""

from __future__ import annotations

import math
from typing import Mapping

DEFAULT_TOLERANCE = 0.02
"""Clean validation accuracy an arm may lose against the baseline (fraction of images)."""


def _accuracy(value: float, what: str) -> float:
    value = float(value)
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{what}: accuracy must be a finite fraction in [0, 1], got {value!r}")
    return value


def choose_alpha(sweep: Mapping[float, float], baseline: float, tolerance: float = DEFAULT_TOLERANCE) -> float | None:
    """The largest alpha whose clean validation accuracy is at least ``baseline - tolerance``.

    sweep : {alpha > 0: clean validation accuracy (fraction, mean over seeds)} of one arm.
    baseline : the unregularized arm's clean validation accuracy (fraction, mean over the same seeds).
    tolerance : accuracy the arm may lose (fraction); the boundary itself qualifies.

    Returns None when no swept alpha keeps clean accuracy: the arm then has no admissible strength, and
    reporting it at some alpha anyway would compare along the accuracy-robustness trade-off.  A dip at
    a middle alpha does not stop the search: the rule is about the strength used, not a monotone path.
    """
    baseline = _accuracy(baseline, "baseline")
    if not math.isfinite(tolerance) or tolerance < 0:
        raise ValueError(f"tolerance must be a finite fraction >= 0, got {tolerance!r}")
    floor = baseline - tolerance - 1e-12  # accuracies are ratios of counts: keep the boundary in
    admissible = []
    for alpha, accuracy in sweep.items():
        if not math.isfinite(alpha) or alpha <= 0:
            raise ValueError(f"alphas must be finite and > 0 (the baseline is alpha 0), got {alpha!r}")
        if _accuracy(accuracy, f"alpha {alpha:g}") >= floor:
            admissible.append(float(alpha))
    return max(admissible) if admissible else None
