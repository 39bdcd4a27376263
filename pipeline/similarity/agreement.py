"""Agreement of two similarity matrices over image pairs, e.g. predicted against measured responses."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from pipeline.similarity.vectors import SimilarityError, check_scans, population_vectors


def upper_triangle_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of the strictly-upper-triangle entries (pairs i < j) of two (n, n) matrices."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape != b.shape:
        raise SimilarityError(f"need two square matrices of equal shape, got {a.shape} and {b.shape}")
    if a.shape[0] < 3:
        raise SimilarityError("need at least 3 images (3 pairs) for a correlation")
    iu = np.triu_indices(a.shape[0], k=1)
    return float(np.corrcoef(a[iu], b[iu])[0, 1])


def dense_similarity(vectors_per_scan: Sequence[np.ndarray]) -> np.ndarray:
    """(N, N) float64 scan-averaged cosine matrix, in memory; for small N (e.g. oracle images)."""
    scans = check_scans(vectors_per_scan)
    return sum(v.astype(np.float64) @ v.T.astype(np.float64) for v in scans) / len(scans)


def oracle_similarity_agreement(
    candidate_responses: Sequence[np.ndarray],
    reference_responses: Sequence[np.ndarray],
    unit_scales: Sequence[np.ndarray | None] | None = None,
) -> float:
    """Correlation over image pairs between two similarity matrices of the oracle images.

    The paper's check: similarity from model predictions (candidate) vs from repeat-averaged
    responses (reference) gave r = 0.73; single-trial responses as candidate gave r = 0.39.  For the
    single-trial candidate, use a trial left out of the reference average to avoid shared noise.

    Parameters
    ----------
    candidate_responses, reference_responses : per scan (n_oracle, n_units) responses, same oracle
        images in the same order in both lists.
    unit_scales : per scan (n_units,) weight applied to both, or None.

    Returns
    -------
    Pearson r over pairs i < j of the two scan-averaged cosine matrices.
    """
    if len(candidate_responses) != len(reference_responses):
        raise SimilarityError(
            f"{len(candidate_responses)} candidate scans vs {len(reference_responses)} reference scans"
        )
    scales = list(unit_scales) if unit_scales is not None else [None] * len(candidate_responses)
    if len(scales) != len(candidate_responses):
        raise SimilarityError(f"{len(scales)} unit_scales for {len(candidate_responses)} scans")
    for k, (c, r) in enumerate(zip(candidate_responses, reference_responses)):
        if np.shape(c) != np.shape(r):
            raise SimilarityError(f"scan {k}: candidate {np.shape(c)} and reference {np.shape(r)} differ")
    cand = dense_similarity([population_vectors(c, s) for c, s in zip(candidate_responses, scales)])
    ref = dense_similarity([population_vectors(r, s) for r, s in zip(reference_responses, scales)])
    return upper_triangle_correlation(cand, ref)


def repeat_split(
    responses: np.ndarray, image_rows: np.ndarray, n_images: int, min_repeats: int = 3
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The repeated images' trials split into one held-out trial and the mean of the other repeats.

    The inputs of :func:`oracle_similarity_agreement` for one scan: the single trial is left out of
    the reference average so that the two share no trial noise.

    Parameters
    ----------
    responses : (n_trials, n_units) responses of one scan.
    image_rows : (n_trials,) each trial's image, as a row index in [0, n_images).
    min_repeats : images shown at least this often count as repeated.

    Returns
    -------
    ``repeated`` (n_repeated,) image rows in increasing order, ``single`` (n_repeated, n_units) the
    first trial of each, ``reference`` (n_repeated, n_units) the mean of its other trials; None when
    fewer than 3 images are repeated (no pair correlation to speak of).
    """
    image_rows = np.asarray(image_rows)
    repeated = np.flatnonzero(np.bincount(image_rows, minlength=n_images) >= min_repeats)
    if len(repeated) < 3:
        return None
    trials = [np.flatnonzero(image_rows == r) for r in repeated]
    single = np.stack([responses[t[0]] for t in trials])
    reference = np.stack([responses[t[1:]].mean(axis=0) for t in trials])
    return repeated, single, reference
