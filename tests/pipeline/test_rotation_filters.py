"""Each cell type's filter is shown at its units' circular-mean orientation on the core's rotation grid."""

from __future__ import annotations

import numpy as np

from pipeline.models.rotation_filters import type_filters, type_orientations


def test_orientation_is_the_circular_mean_rounded_to_the_rotation_grid():
    rotations, features = 8, 3  # grid step pi/4
    types = np.array([0, 0, 1, 1])
    # type 1: 3.0 rad and 0.05 rad lie either side of 0 on the pi-periodic circle (their plain mean,
    # 1.5 rad, would be the orthogonal orientation); their mean rounds to a half turn, which is rotation 0
    orientation = np.array([0.35, 0.45, 3.0, 0.05])
    assert type_orientations(types, orientation, features, rotations).tolist() == [1, 0, 0]


def test_filters_come_from_the_shown_rotation_of_each_type():
    rotations, features, k = 8, 3, 5
    weight = np.zeros((rotations * features, 2, k, k))
    for r in range(rotations):
        for f in range(features):
            weight[r * features + f, 0] = 10 * r + f  # rotation-major, as the core lays out its channels
            weight[r * features + f, 1] = -1  # a second input channel is not shown
    types = np.array([0, 2, 2, 2])
    orientation = np.array([np.pi / 2, 3 * np.pi / 4 - 0.1, 3 * np.pi / 4, 3 * np.pi / 4 + 0.1])
    filters, degrees, counts = type_filters(weight, types, orientation, features, rotations)
    assert filters.shape == (features, k, k)
    assert [filters[f, 0, 0] for f in range(features)] == [20, 1, 32]
    np.testing.assert_allclose(degrees, [90, 0, 135])
    assert counts.tolist() == [1, 0, 3]
