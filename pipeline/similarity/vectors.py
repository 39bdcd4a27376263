"""Population vectors whose cosines make a similarity matrix (Li et al., NeurIPS 2019).

Population vectors (:func:`population_vectors`): every unit's response is scaled by a per-unit
weight (the paper's ``w_a * v_a``: signal-to-noise ratio times prediction correlation, computed by
the caller), centred across images, and each image's vector is normalised to unit length.  The
cosine of two images is then a plain dot product.  The controls build their vectors from raw
single-trial responses (:func:`single_trial_vectors`) or from pixels (:func:`pixel_vectors`).
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

import numpy as np


class SimilarityError(ValueError):
    """Inputs to a similarity computation are inconsistent, or a store folder is malformed."""


def population_vectors(responses: np.ndarray, unit_scale: np.ndarray | None = None) -> np.ndarray:
    """Unit-length, centred population vectors of one scan.

    Parameters
    ----------
    responses : (n_images, n_units) responses (predicted or measured) of each unit to each image.
    unit_scale : (n_units,) per-unit weight (``w_a * v_a`` in the paper), or None for all ones.
        Only its square matters for cosines, so its sign is irrelevant.

    Returns
    -------
    (n_images, n_units) float32.  Each unit is scaled, then centred across images; each row is
    divided by its Euclidean norm.  Rows that are zero after centring (an image whose response
    equals the mean response) stay zero, so their cosine with every image is 0.
    """
    # One float64 working copy, modified in place (responses of 50,000 images are large).
    x = np.array(responses, dtype=np.float64)
    if x.ndim != 2:
        raise SimilarityError(f"responses must be (n_images, n_units), got shape {x.shape}")
    if x.shape[0] < 2:
        raise SimilarityError(f"need at least 2 images to centre units, got {x.shape[0]}")
    if not np.isfinite(x).all():
        raise SimilarityError("responses contain non-finite values")
    if unit_scale is not None:
        scale = np.asarray(unit_scale, dtype=np.float64)
        if scale.shape != (x.shape[1],):
            raise SimilarityError(f"unit_scale must have shape ({x.shape[1]},), got {scale.shape}")
        if not np.isfinite(scale).all():
            raise SimilarityError("unit_scale contains non-finite values")
        x *= scale
    x -= x.mean(axis=0, keepdims=True)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    # A row whose norm is at the rounding level of the centring is a zero vector, not a direction.
    tiny = 64 * np.finfo(np.float64).eps * max(float(np.abs(x).max(initial=0.0)), 1e-300) * math.sqrt(x.shape[1])
    zero = norm <= tiny
    x /= np.where(zero, 1.0, norm)
    x[zero[:, 0]] = 0.0
    return x.astype(np.float32)


def single_trial_vectors(
    responses: np.ndarray,
    trial_image_ids: np.ndarray,
    image_ids: np.ndarray,
    unit_scale: np.ndarray | None = None,
    mode: Literal["random_trial", "mean"] = "random_trial",
    seed: int | Sequence[int] = 0,
) -> np.ndarray:
    """Population vectors built from measured single-trial responses (the raw-data control).

    Parameters
    ----------
    responses : (n_trials, n_units) measured responses of one scan.
    trial_image_ids : (n_trials,) image shown on each trial.
    image_ids : (N,) the images, in the order of the output rows; each must have >= 1 trial.
    unit_scale : (n_units,) per-unit weight, or None.
    mode : ``"random_trial"`` (default, the paper's raw single-trial control) uses one trial per
        image, drawn uniformly with ``seed``; ``"mean"`` averages all trials of the image (equal to
        the single trial for images shown once, the repeat average for repeated images).
    seed : seed (or seed sequence) of the trial draw, for ``np.random.default_rng``.

    Returns
    -------
    (N, n_units) float32 vectors as from :func:`population_vectors`.
    """
    responses = np.asarray(responses)
    trial_image_ids = np.asarray(trial_image_ids)
    image_ids = np.asarray(image_ids)
    if responses.ndim != 2 or trial_image_ids.shape != (responses.shape[0],):
        raise SimilarityError(
            f"responses (n_trials, n_units) and trial_image_ids (n_trials,) disagree: "
            f"{responses.shape} vs {trial_image_ids.shape}"
        )
    if mode not in ("random_trial", "mean"):
        raise SimilarityError(f"mode must be 'random_trial' or 'mean', got {mode!r}")
    order = np.argsort(trial_image_ids, kind="stable")
    sorted_ids = trial_image_ids[order]
    start = np.searchsorted(sorted_ids, image_ids, side="left")
    stop = np.searchsorted(sorted_ids, image_ids, side="right")
    missing = image_ids[stop == start]
    if missing.size:
        raise SimilarityError(f"{missing.size} image(s) have no trial, e.g. id {missing[0]}")
    if mode == "random_trial":
        rng = np.random.default_rng(seed)
        pick = start + (rng.random(len(image_ids)) * (stop - start)).astype(np.int64)
        per_image = responses[order[pick]]
    else:
        per_image = np.stack([responses[order[a:b]].mean(axis=0, dtype=np.float64) for a, b in zip(start, stop)])
    return population_vectors(per_image, unit_scale)


def lowpass(images: np.ndarray, sigma: float) -> np.ndarray:
    """(N, H, W) images blurred by a Gaussian of ``sigma`` pixels (reflecting edges); ``sigma`` 0: as is."""
    images = np.asarray(images, dtype=np.float64)
    if sigma == 0:
        return images
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(images, sigma=(0, sigma, sigma), mode="reflect")


def pixel_vectors(images: np.ndarray, lowpass_sigma: float = 0.0) -> np.ndarray:
    """(N, H * W) centred, unit-norm pixel vectors of (optionally low-pass filtered) images."""
    images = np.asarray(images)
    if images.ndim != 3:
        raise SimilarityError(f"images must be (N, H, W), got shape {images.shape}")
    if lowpass_sigma < 0:
        raise SimilarityError(f"lowpass_sigma must be >= 0, got {lowpass_sigma}")
    return population_vectors(lowpass(images, lowpass_sigma).reshape(len(images), -1))


def check_scans(vectors_per_scan: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Per scan (N, d_k) contiguous float32 vectors, refusing an empty list, differing N or non-finite values."""
    if isinstance(vectors_per_scan, np.ndarray):
        raise SimilarityError("vectors_per_scan must be a list of (N, d_k) arrays, one per scan")
    scans = [np.ascontiguousarray(np.asarray(v, dtype=np.float32)) for v in vectors_per_scan]
    if not scans:
        raise SimilarityError("vectors_per_scan is empty")
    for k, v in enumerate(scans):
        if v.ndim != 2:
            raise SimilarityError(f"scan {k}: vectors must be (N, d), got shape {v.shape}")
        if v.shape[0] != scans[0].shape[0]:
            raise SimilarityError(
                f"scan {k} has {v.shape[0]} images, scan 0 has {scans[0].shape[0]}; "
                "all scans must describe the same images in the same order"
            )
        if not np.isfinite(v).all():
            raise SimilarityError(f"scan {k}: vectors contain non-finite values")
    return scans
