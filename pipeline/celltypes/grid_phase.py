"""Do consensus clusters split a type by where its units fall on the core's rotation grid?

A unit's *grid phase* is the fractional part of its own alignment shift: the rotation, in steps of
360 / R degrees, that turns its readout onto the mean readout of its type
(:func:`pipeline.celltypes.type_count.alignment_shifts`).  Each learned feature has its own reference
orientation, so a simulated orientation modulo the step measures the phase only up to that unknown
reference per feature; the alignment shift measures it in the model's own frame.

:func:`split_association` asks, within each true type spread over two or more clusters, whether
cluster membership depends on the phase (side of the step, and near a rotation against between two).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import stats

from pipeline.celltypes import clustering as celltypes
from pipeline.celltypes import ensemble, type_count


def grid_phase(
    readouts: Sequence[np.ndarray],
    types: np.ndarray,
    rotations: int,
    steps: int = 8,
    harmonics: int | None = ensemble.DEFAULT_HARMONICS,
) -> np.ndarray:
    """(n_units,) grid phase in [0, 1) of every unit: the circular mean over models of the fractional part
    of its alignment shift onto the mean of its type (``types`` (n_units,), e.g. the simulated ones).

    readouts : one (n_units, R*F) rotation-major readout array per model; steps : shifts tried per
    rotation step (the phase's resolution is 1 / steps).  harmonics : the readouts are aligned on their
    :func:`pipeline.celltypes.clustering.band_limited` versions: whole readouts of tunings sharper than the
    step snap to the nearest rotation (most units come out at phase 0), their low harmonics turn smoothly.
    """
    phasors = []
    for w in readouts:
        vectors = celltypes.band_limited(celltypes.unit_length(w, rotations).reshape(len(w), -1), rotations, harmonics)
        shifts = type_count.alignment_shifts(vectors, np.asarray(types), rotations, steps)
        phasors.append(np.exp(2j * np.pi * np.mod(shifts, 1.0)))
    phase = np.mod(np.angle(np.mean(phasors, axis=0)) / (2 * np.pi), 1.0)
    return np.where(phase >= 1.0, 0.0, phase)  # mod of a tiny negative number rounds to 1.0


def split_association(truth: np.ndarray, labels: np.ndarray, phase: np.ndarray, min_units: int = 8) -> list[dict]:
    """Per true type that ``labels`` spread over two or more clusters of at least ``min_units`` of its units,
    the association of cluster membership with grid ``phase`` (n_units,) in [0, 1).

    Two binnings of the phase: ``first_half`` (phase < 0.5: the side of the step) and ``near_a_rotation``
    (within a quarter step of a rotation).  For each, the per-cluster counts, the p-value of Fisher's exact
    test (two clusters) or of the chi-square test of independence (more), and for two clusters the odds
    ratio.  A binning whose bins are not both used within the type gets p = 1.
    Returns one dict per type: ``type``, ``clusters`` (ids), ``units`` (per cluster), and per binning
    ``<binning>`` (per-cluster counts in the bin), ``<binning>_p``, ``<binning>_odds_ratio`` (None beyond two).
    """
    truth, labels, phase = np.asarray(truth), np.asarray(labels), np.asarray(phase, dtype=float)
    near = np.minimum(phase, 1.0 - phase) < 0.25
    out = []
    for name in np.unique(truth):
        ids, counts = np.unique(labels[truth == name], return_counts=True)
        clusters = ids[counts >= min_units]
        if len(clusters) < 2:
            continue
        row: dict = dict(type=str(name), clusters=[int(c) for c in clusters], units=[])
        members = [(truth == name) & (labels == c) for c in clusters]
        row["units"] = [int(m.sum()) for m in members]
        for binning, inside in (("first_half", phase < 0.5), ("near_a_rotation", near)):
            table = np.array([[(m & inside).sum(), (m & ~inside).sum()] for m in members])
            row[binning] = table[:, 0].tolist()
            row[f"{binning}_p"], row[f"{binning}_odds_ratio"] = _independence(table)
        out.append(row)
    return out


def _independence(table: np.ndarray) -> tuple[float, float | None]:
    """(p, odds ratio or None) of a (clusters, 2) contingency table: Fisher's exact test for two clusters,
    the chi-square test beyond."""
    if (table.sum(axis=0) == 0).any():
        return 1.0, None
    if len(table) == 2:
        result = stats.fisher_exact(table)
        return float(result.pvalue), float(result.statistic)
    return float(stats.chi2_contingency(table).pvalue), None
