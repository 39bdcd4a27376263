"""Statistics of recorded responses: reliability from repeated images and normalisation constants.

Everything here is plain numpy.  "Repeated images" are the images shown on at least two of the given
trials; statistics that rely on repeats use only their trials.

Definitions (Cadena et al. 2019; Sensorium 2022), per unit, over the trials of repeated images:

- noise variance ``var_noise``: mean over repeated images of the across-repeat variance (ddof=1);
- total variance ``var_total``: variance over all repeated-image trials (ddof=1);
- fraction of explainable variance ``FEV = 1 - var_noise / var_total``;
- oracle correlation: Pearson correlation of every trial's response with the mean of the *other*
  repeats of its image (leave-one-out), pooled over all repeated-image trials;
- signal-to-noise ratio ``std_images(repeat mean) / sqrt(var_noise)`` (both ddof=1), the
  ``sigma_a / eta_a`` of Li et al. 2019.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable

import numpy as np

from pipeline.data.recording import TIERS, Recording


def pearson(x: np.ndarray, y: np.ndarray, axis: int = 0) -> np.ndarray:
    """Pearson correlation of ``x`` and ``y`` along ``axis`` (same shapes); 0 where either is constant.

    A constant prediction carries no information about the response, hence 0 rather than NaN; this
    keeps means over units finite.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"pearson: shapes differ, {x.shape} vs {y.shape}")
    x = x - x.mean(axis=axis, keepdims=True)
    y = y - y.mean(axis=axis, keepdims=True)
    numerator = (x * y).sum(axis=axis)
    denominator = np.sqrt((x * x).sum(axis=axis) * (y * y).sum(axis=axis))
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


@dataclasses.dataclass(frozen=True)
class RepeatGroups:
    """Trials of images shown at least twice, grouped by image.

    Attributes
    ----------
    trials : (m,) int, indices of the trials of repeated images.
    group : (m,) int in [0, n_groups), image group of each of these trials.
    counts : (n_groups,) int, number of repeats of each group (>= 2).
    """

    trials: np.ndarray
    group: np.ndarray
    counts: np.ndarray

    @property
    def n_groups(self) -> int:
        return len(self.counts)

    def sums(self, responses: np.ndarray) -> np.ndarray:
        """(n_groups, n_units) sum of ``responses[trials]`` per image."""
        sums = np.zeros((self.n_groups, responses.shape[1]), dtype=np.float64)
        np.add.at(sums, self.group, responses[self.trials])
        return sums

    def means(self, responses: np.ndarray) -> np.ndarray:
        """(n_groups, n_units) repeat-averaged response per image."""
        return self.sums(responses) / self.counts[:, None]

    def noise_variance(self, responses: np.ndarray) -> np.ndarray:
        """(n_units,) mean over images of the across-repeat variance (ddof=1)."""
        residual = responses[self.trials] - self.means(responses)[self.group]
        squares = np.zeros((self.n_groups, responses.shape[1]))
        np.add.at(squares, self.group, residual**2)
        return (squares / (self.counts[:, None] - 1)).mean(axis=0)


def repeat_groups(image_ids: np.ndarray, min_repeats: int = 2) -> RepeatGroups:
    """Group the trials of images shown at least ``min_repeats`` times."""
    image_ids = np.asarray(image_ids)
    if image_ids.ndim != 1:
        raise ValueError(f"image_ids: expected shape (n_trials,), got {image_ids.shape}")
    _, inverse, counts = np.unique(image_ids, return_inverse=True, return_counts=True)
    trials = np.flatnonzero(counts[inverse] >= min_repeats)
    _, group = np.unique(inverse[trials], return_inverse=True)
    return RepeatGroups(trials=trials, group=group.reshape(-1), counts=np.bincount(group.reshape(-1)))


def _checked_groups(responses: np.ndarray, image_ids: np.ndarray, what: str) -> tuple[np.ndarray, RepeatGroups]:
    responses = np.asarray(responses, dtype=np.float64)
    if responses.ndim != 2:
        raise ValueError(f"{what}: responses must be (n_trials, n_units), got shape {responses.shape}")
    if len(image_ids) != len(responses):
        raise ValueError(f"{what}: {len(image_ids)} image ids for {len(responses)} trials")
    groups = repeat_groups(image_ids)
    if groups.n_groups < 2:
        raise ValueError(f"{what}: needs at least two images shown at least twice, found {groups.n_groups}")
    return responses, groups


def noise_variance(responses: np.ndarray, image_ids: np.ndarray) -> np.ndarray:
    """(n_units,) mean over repeated images of the across-repeat variance (ddof=1)."""
    responses, groups = _checked_groups(responses, image_ids, "noise_variance")
    return groups.noise_variance(responses)


def oracle_correlation(responses: np.ndarray, image_ids: np.ndarray) -> np.ndarray:
    """(n_units,) leave-one-out oracle correlation.

    Parameters
    ----------
    responses : (n_trials, n_units) single-trial responses.
    image_ids : (n_trials,) image shown on each trial; only images with >= 2 repeats are used.
    """
    responses, groups = _checked_groups(responses, image_ids, "oracle_correlation")
    trial_responses = responses[groups.trials]
    others = (groups.sums(responses)[groups.group] - trial_responses) / (groups.counts[groups.group, None] - 1)
    return pearson(trial_responses, others, axis=0)


def explainable_variance(responses: np.ndarray, image_ids: np.ndarray) -> np.ndarray:
    """(n_units,) fraction of explainable variance ``1 - var_noise / var_total`` on repeated images.

    ``var_noise`` is the mean over repeated images of the across-repeat variance (ddof=1) and
    ``var_total`` the variance over all repeated-image trials (ddof=1).  NaN for units without any
    variance.
    """
    responses, groups = _checked_groups(responses, image_ids, "explainable_variance")
    var_total = responses[groups.trials].var(axis=0, ddof=1)
    var_noise = groups.noise_variance(responses)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(var_total > 0, 1.0 - var_noise / var_total, np.nan)


def signal_to_noise(responses: np.ndarray, image_ids: np.ndarray) -> np.ndarray:
    """(n_units,) std across repeated images of the repeat-averaged response over the noise std.

    Both standard deviations use ddof=1; the noise std is ``sqrt(var_noise)``.  Infinite for
    noise-free units with signal, NaN for units that never vary.
    """
    responses, groups = _checked_groups(responses, image_ids, "signal_to_noise")
    signal = groups.means(responses).std(axis=0, ddof=1)
    noise = np.sqrt(groups.noise_variance(responses))
    with np.errstate(divide="ignore", invalid="ignore"):
        return signal / noise


@dataclasses.dataclass
class NormalizationStats:
    """Constants that map one scan's data to model units, computed on training trials.

    Attributes
    ----------
    image_mean, image_std : grey-level mean and std over all pixels of the training trials' images
        (at source resolution; each trial counts once).
    response_mean : (n_units,) mean response (responses clipped at 0), original units.
    response_std : (n_units,) std of the clipped responses (ddof=0), floored at 1% of its mean over
        units so that silent units are not blown up.
    behavior_mean, behavior_std : (3,) pupil size, its change, running speed.
    pupil_center_mean, pupil_center_std : (2,) horizontal, vertical eye position.
    Stds of constant inputs (e.g. zeroed behaviour) are set to 1 so standardising leaves zeros.
    """

    image_mean: float
    image_std: float
    response_mean: np.ndarray
    response_std: np.ndarray
    behavior_mean: np.ndarray
    behavior_std: np.ndarray
    pupil_center_mean: np.ndarray
    pupil_center_std: np.ndarray

    def to_dict(self) -> dict:
        """Plain dictionary (floats and lists) for storage."""
        return {
            f.name: (
                getattr(self, f.name).tolist()
                if isinstance(getattr(self, f.name), np.ndarray)
                else float(getattr(self, f.name))
            )
            for f in dataclasses.fields(self)
        }

    @classmethod
    def from_dict(cls, values: dict) -> "NormalizationStats":
        names = {f.name for f in dataclasses.fields(cls)}
        if set(values) != names:
            raise ValueError(f"NormalizationStats: expected keys {sorted(names)}, got {sorted(values)}")
        return cls(
            image_mean=float(values["image_mean"]),
            image_std=float(values["image_std"]),
            **{k: np.asarray(values[k], dtype=np.float64) for k in names - {"image_mean", "image_std"}},
        )


def _unit_std(std: np.ndarray) -> np.ndarray:
    return np.where(std > 0, std, 1.0)


def image_moments(images: np.ndarray, weights: np.ndarray, chunk: int = 256) -> tuple[float, float]:
    """Weighted grey-level mean and std over all pixels of ``images`` (n, H, W); weight per image."""
    total = first = second = 0.0
    pixels = images[0].size
    for start in range(0, len(images), chunk):
        block = images[start : start + chunk].astype(np.float64).reshape(-1, pixels)
        w = weights[start : start + chunk]
        first += float(w @ block.mean(axis=1))
        second += float(w @ (block**2).mean(axis=1))
        total += float(w.sum())
    mean = first / total
    return mean, float(np.sqrt(max(second / total - mean**2, 0.0)))


def normalization_stats(recording: Recording, tiers: Iterable[str] = ("train",)) -> NormalizationStats:
    """Normalisation constants from the non-withheld trials of ``tiers`` (see :class:`NormalizationStats`)."""
    tiers = tuple(tiers)
    unknown = sorted(set(tiers) - set(TIERS))
    if unknown:
        raise ValueError(f"normalization_stats: unknown tier(s) {unknown}; expected some of {list(TIERS)}")
    use = np.isin(recording.tiers.astype(str), tiers) & ~np.asarray(recording.withheld, bool)
    if not use.any():
        raise ValueError(f"normalization_stats: scan {recording.scan_name} has no usable trials in tiers {tiers}")

    position = {int(i): k for k, i in enumerate(recording.image_ids)}
    image_index = np.array([position[int(i)] for i in recording.trial_image_ids[use]])
    weights = np.bincount(image_index, minlength=len(recording.image_ids)).astype(np.float64)
    shown = np.flatnonzero(weights)
    image_mean, image_std = image_moments(recording.images[shown], weights[shown])
    if image_std <= 0:
        raise ValueError(f"normalization_stats: training images of scan {recording.scan_name} are constant")

    responses = np.clip(np.asarray(recording.responses[use], dtype=np.float64), 0, None)
    response_std = responses.std(axis=0)
    response_std = np.maximum(response_std, 0.01 * response_std.mean())
    if not (response_std > 0).all():
        raise ValueError(f"normalization_stats: all responses of scan {recording.scan_name} are zero")

    behavior = np.asarray(recording.behavior[use], dtype=np.float64)
    pupil_center = np.asarray(recording.pupil_center[use], dtype=np.float64)
    return NormalizationStats(
        image_mean=image_mean,
        image_std=image_std,
        response_mean=responses.mean(axis=0),
        response_std=response_std,
        behavior_mean=behavior.mean(axis=0),
        behavior_std=_unit_std(behavior.std(axis=0)),
        pupil_center_mean=pupil_center.mean(axis=0),
        pupil_center_std=_unit_std(pupil_center.std(axis=0)),
    )


def finite_or(value, default: float | None) -> float | None:
    """``value`` as a Python float, or ``default`` where it is NaN or infinite (a database column
    stores no NaN on every backend)."""
    value = float(value)
    return value if np.isfinite(value) else default
