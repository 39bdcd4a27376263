"""Layer-1 filters of a rotation-equivariant core, shown per cell type at the type's orientation."""

from __future__ import annotations

import numpy as np


def type_orientations(types: np.ndarray, orientation: np.ndarray, features: int, rotations: int) -> np.ndarray:
    """The rotation (index on the core's grid of ``rotations`` steps over 2 pi) that shows each type.

    ``types`` (n_units,) int, each unit's cell type in [0, features); ``orientation`` (n_units,) its
    preferred orientation in radians.  Orientations are pi-periodic, so the units of a type are averaged
    on the doubled circle and the mean is rounded to the nearest rotation in [0, pi); a half turn is
    the same orientation and shows as rotation 0.  Types without units get 0.  Returns (features,) int.
    """
    types = np.asarray(types).astype(int)
    orientation = np.asarray(orientation, dtype=float)
    step = 2 * np.pi / rotations
    shown = np.zeros(features, dtype=int)
    for f in np.unique(types):
        mean = np.mod(np.angle(np.exp(2j * orientation[types == f]).mean()) / 2, np.pi)
        nearest = int(np.round(mean / step))
        shown[f] = 0 if nearest * step >= np.pi - 1e-9 else nearest
    return shown


def type_filters(
    weight: np.ndarray, types: np.ndarray, orientation: np.ndarray, features: int, rotations: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each type's first-layer filter, turned to the type's preferred orientation.

    ``weight`` (rotations * features, C_in, k, k): the first convolution's weight, rotation-major (the
    layout of :class:`pipeline.models.cores.Core`); ``types``, ``orientation`` as in
    :func:`type_orientations`.  Returns ``filters`` (features, k, k) (first input channel),
    ``orientation_deg`` (features,) the rotation shown in degrees, and ``counts`` (features,) units
    per type.
    """
    per_rotation = np.asarray(weight)[:, 0].reshape(rotations, features, *weight.shape[-2:])
    counts = np.bincount(np.asarray(types).astype(int), minlength=features)
    shown = type_orientations(types, orientation, features, rotations)
    return per_rotation[shown, np.arange(features)], np.degrees(shown * 2 * np.pi / rotations), counts
