"""Evaluation of predictions against recorded responses, per unit (numpy).

``pred`` and ``responses`` are (n_trials, n_units) in the same units; ``image_ids`` (n_trials,)
names each trial's stimulus.  Noise and total variances follow :mod:`pipeline.stats`.
"""

from __future__ import annotations

import numpy as np

from pipeline.stats import pearson, repeat_groups

__all__ = [
    "pearson",
    "single_trial_correlation",
    "test_correlation",
    "feve",
    "image_averages",
    "fraction_of_oracle",
]


def _check(pred: np.ndarray, responses: np.ndarray, image_ids: np.ndarray | None, what: str):
    pred = np.asarray(pred, dtype=np.float64)
    responses = np.asarray(responses, dtype=np.float64)
    if pred.shape != responses.shape or pred.ndim != 2:
        raise ValueError(f"{what}: pred {pred.shape} and responses {responses.shape} must both be (n_trials, n_units)")
    if image_ids is not None and len(image_ids) != len(pred):
        raise ValueError(f"{what}: {len(image_ids)} image ids for {len(pred)} trials")
    return pred, responses


def image_averages(values: np.ndarray, image_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique image ids (n_images,) and the mean of ``values`` (n_trials, ...) over each image's trials."""
    ids, inverse, counts = np.unique(np.asarray(image_ids), return_inverse=True, return_counts=True)
    values = np.asarray(values, dtype=np.float64)
    sums = np.zeros((len(ids),) + values.shape[1:])
    np.add.at(sums, inverse.reshape(-1), values)
    return ids, sums / counts.reshape((-1,) + (1,) * (values.ndim - 1))


def single_trial_correlation(pred: np.ndarray, responses: np.ndarray) -> np.ndarray:
    """(n_units,) Pearson correlation over trials."""
    pred, responses = _check(pred, responses, None, "single_trial_correlation")
    return pearson(pred, responses, axis=0)


def test_correlation(pred: np.ndarray, responses: np.ndarray, image_ids: np.ndarray) -> np.ndarray:
    """(n_units,) correlation over images of the image-averaged prediction and the repeat-averaged response.

    Predictions are averaged over the repeats too: with behaviour inputs they differ between repeats.
    """
    pred, responses = _check(pred, responses, image_ids, "test_correlation")
    _, mean_pred = image_averages(pred, image_ids)
    _, mean_responses = image_averages(responses, image_ids)
    if len(mean_pred) < 2:
        raise ValueError("test_correlation: needs at least two distinct images")
    return pearson(mean_pred, mean_responses, axis=0)


def feve(pred: np.ndarray, responses: np.ndarray, image_ids: np.ndarray) -> np.ndarray:
    """(n_units,) fraction of explainable variance explained (Cadena et al. 2019), on repeated images.

    ``FEVE = 1 - (MSE - var_noise) / (var_total - var_noise)`` over the trials of images shown at
    least twice, with ``MSE`` the mean squared single-trial error, ``var_noise`` the mean across-repeat
    variance (ddof=1, unbiased) and ``var_total`` the variance of the responses with ddof=0 -- the
    MSE of predicting their mean -- so that any constant predictor scores <= 0.  A predictor of the
    noise-free mean scores about 1.  NaN where there is no explainable variance.
    """
    pred, responses = _check(pred, responses, image_ids, "feve")
    groups = repeat_groups(image_ids)
    if groups.n_groups < 2:
        raise ValueError(f"feve: needs at least two images shown at least twice, found {groups.n_groups}")
    r, p = responses[groups.trials], pred[groups.trials]
    mse = ((p - r) ** 2).mean(axis=0)
    var_total = r.var(axis=0)
    var_noise = groups.noise_variance(responses)
    explainable = var_total - var_noise
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(explainable > 0, 1.0 - (mse - var_noise) / explainable, np.nan)


MIN_EXPLAINABLE_FRACTION = 0.15
"""Units below this fraction of explainable variance are left out of a population FEVE.

FEVE divides by the explainable variance, so a unit with almost none gives an arbitrarily large
negative value that swamps a population mean; Cadena et al. (2019) keep units above 15%."""


def population_feve(
    feve_per_unit: np.ndarray, explainable_fraction: np.ndarray, min_fraction: float = MIN_EXPLAINABLE_FRACTION
) -> float:
    """Mean FEVE (a float) over units whose fraction of explainable variance is >= ``min_fraction``.

    feve_per_unit, explainable_fraction : (n_units,) as from :func:`feve` and
    :func:`pipeline.stats.explainable_variance` on the same trials.  NaN when no unit qualifies.
    """
    feve_per_unit = np.asarray(feve_per_unit, float)
    explainable_fraction = np.asarray(explainable_fraction, float)
    if feve_per_unit.shape != explainable_fraction.shape:
        raise ValueError(
            f"population_feve: feve {feve_per_unit.shape} and explainable fraction "
            f"{explainable_fraction.shape} differ in shape"
        )
    keep = (explainable_fraction >= min_fraction) & np.isfinite(feve_per_unit)
    return float(feve_per_unit[keep].mean()) if keep.any() else float("nan")


def fraction_of_oracle(single_trial: np.ndarray, oracle: np.ndarray) -> float:
    """Fraction of oracle (Lurz et al. 2021): the slope of the least-squares line through the origin
    of the per-unit single-trial test correlation against the per-unit oracle correlation.

    single_trial : (n_units,) correlation of the prediction with single test trials
        (:func:`single_trial_correlation`), the quantity the oracle bounds.
    oracle : (n_units,) leave-one-out oracle correlation (:func:`pipeline.stats.oracle_correlation`).
    Returns ``sum(oracle * single_trial) / sum(oracle ** 2)`` over units where both are finite (a
    float); NaN when no such unit has a non-zero oracle.  Not the repeat-averaged test correlation:
    that is not bounded by the oracle and can exceed it.
    """
    single_trial = np.asarray(single_trial, dtype=np.float64)
    oracle = np.asarray(oracle, dtype=np.float64)
    if single_trial.shape != oracle.shape or single_trial.ndim != 1:
        raise ValueError(
            f"fraction_of_oracle: single_trial {single_trial.shape} and oracle {oracle.shape} must both be (n_units,)"
        )
    keep = np.isfinite(single_trial) & np.isfinite(oracle)
    x, y = oracle[keep], single_trial[keep]
    denominator = float(np.dot(x, x))
    return float(np.dot(x, y) / denominator) if denominator > 0 else float("nan")


# The name starts with "test": keep pytest from collecting it where a test module imports it.
test_correlation.__test__ = False  # type: ignore[attr-defined]
