"""Consensus cell types of an ensemble: what ``EnsembleCellTypes`` stores.

The members' readouts are compared by the rotation-invariant distance on their *band-limited* rotation
profiles (:func:`pipeline.celltypes.clustering.band_limited`, harmonics 0..``harmonics``), the distances are
averaged over members and clustered (:func:`pipeline.celltypes.clustering.distance_consensus`), and k is
chosen from the data by the held-out residual (:func:`pipeline.celltypes.type_count.choose_distance_type_count`)
unless it is fixed.

Why band-limited: every member shares the core's rotation grid (45 degrees for R = 8).  A unit whose
orientation falls between two rotations is read through both, and for tunings sharper than the step its
rotation profile differs from an on-grid unit's of the same type in the high harmonics; averaging over
members amplifies that offset relative to seed noise, and the consensus split each type by grid phase
past k = 6 (issue 33).  Harmonics up to 2 keep a feature's orientation (harmonic 1, with its phase)
and its symmetry (harmonic 2) and shrink the offset of a half-step unit from about 0.22 to <= 0.02
(unit-length readouts of tunings with half-widths 8-17 degrees; tests/pipeline/test_grid_distance.py).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from pipeline.celltypes import clustering as celltypes
from pipeline.celltypes import type_count

DEFAULT_HARMONICS = 2  # rotation harmonics kept (0..2): see the module docstring


@dataclasses.dataclass
class EnsembleTypes:
    """Outcome of :func:`ensemble_types`.

    labels : (n_units,) consensus type of every unit.
    agreement : (n_units,) in (0, 1], mean fraction of members whose own clustering (at k, on their own
        distances) puts the unit with the other units of its consensus type.
    k : number of types; k_source : 'fixed' or 'data'.
    curve : the evidence of k from the data (:meth:`pipeline.celltypes.type_count.TypeCount.curve`), None if fixed.
    """

    labels: np.ndarray
    agreement: np.ndarray
    k: int
    k_source: str
    curve: list[dict] | None


def ensemble_types(
    readouts: Sequence[np.ndarray],
    rotations: int,
    n_types: int | None = None,
    harmonics: int | None = DEFAULT_HARMONICS,
    seed: int = 0,
) -> EnsembleTypes:
    """Averaged-distance consensus types of an ensemble's members.

    readouts : one (n_units, R*F) rotation-major readout array per member, the same units in order.
    n_types : the number of types; None chooses it from the data (needs 2 or more members).
    harmonics : rotation harmonics kept by the distance, an integer in [1, R // 2], or None for the
        whole readout (the distance before issue 33).
    Raises ValueError for no readouts, readouts of unequal shape, k from the data with one member, or
    a number of types outside [1, n_units].
    """
    celltypes.check_harmonics(harmonics, rotations)
    if not readouts or len({np.shape(w) for w in readouts}) != 1:
        raise ValueError(f"ensemble_types: expected readouts of one shape, got {[np.shape(w) for w in readouts]}")
    if n_types is None and len(readouts) < 2:
        raise ValueError("ensemble_types: choosing the number of types from the data needs 2 or more members")
    vectors, distances = member_distances(readouts, rotations, harmonics)
    mean = distances.mean(axis=0)
    if n_types is None:
        count = type_count.choose_distance_type_count(distances, vectors, rotations, seed=seed)
        k, curve, labels = count.k, count.curve(), count.consensus[count.k]
    else:
        k, curve = int(n_types), None
        labels = celltypes.distance_consensus(mean, k, seed=seed)
    own = [celltypes.distance_consensus(d, k, seed=seed) for d in distances]
    agreement = celltypes.agreement_with(celltypes.co_association(own), labels)
    return EnsembleTypes(labels, agreement, k, "fixed" if curve is None else "data", curve)


def member_distances(
    readouts: Sequence[np.ndarray], rotations: int, harmonics: int | None = DEFAULT_HARMONICS
) -> tuple[list[np.ndarray], np.ndarray]:
    """Each member's unit-length :func:`pipeline.celltypes.clustering.band_limited` readouts (list of
    (n_units, R*F)) and their rotation-invariant squared distances, (n_models, n_units, n_units)."""
    vectors = [
        celltypes.band_limited(celltypes.unit_length(w, rotations).reshape(len(w), -1), rotations, harmonics)
        for w in readouts
    ]
    # the vectors are already band-limited: their distances keep every harmonic they still have
    return vectors, np.stack([celltypes.rotation_invariant_distances(v, rotations) for v in vectors])
