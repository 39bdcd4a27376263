"""Functional types from synthetic readout weights with known types and orientations."""

import numpy as np
import pytest

from pipeline import celltypes

R, F = 8, 4


def synthetic_weights(rng, n_units=120, noise=0.02, signed=True):
    """Unit u: feature t_u at rotation r_u (weight 1, sign random if ``signed``) with symmetric
    neighbouring rotations (0.3) and a secondary feature (0.2, about 3% of the squared weight),
    plus noise and a random overall scale."""
    types = rng.integers(0, F, n_units)
    rotation = rng.integers(0, R, n_units)
    w = rng.normal(0, noise, size=(n_units, R, F))
    for u in range(n_units):
        sign = rng.choice([-1, 1]) if signed else 1
        w[u, rotation[u], types[u]] += sign
        w[u, (rotation[u] + 1) % R, types[u]] += 0.3 * sign
        w[u, (rotation[u] - 1) % R, types[u]] += 0.3 * sign
        w[u, rotation[u], (types[u] + 1) % F] += 0.2
    scale = rng.uniform(0.5, 3, size=(n_units, 1))
    return (w.reshape(n_units, R * F) * scale), types, rotation


def test_types_and_orientations_are_recovered():
    rng = np.random.default_rng(0)
    w, types, rotation = synthetic_weights(rng)
    result = celltypes.functional_types(w, rotations=R)
    assert celltypes.adjusted_rand_index(types, result["cell_type"]) == 1.0
    np.testing.assert_array_equal(result["cell_type"], types)
    np.testing.assert_array_equal(result["main_rotation"], rotation)
    true_orientation = np.mod(2 * np.pi * rotation / R, np.pi)
    error = celltypes.circular_orientation_error(result["preferred_orientation"], true_orientation)
    assert error.max() < 0.05  # noise only; the symmetric neighbours do not bias the circular mean
    assert np.all(result["preferred_orientation"] >= 0) and np.all(result["preferred_orientation"] < np.pi)
    # clockwise convention mirrors the angles
    mirrored = celltypes.functional_types(w, rotations=R, rotation_direction=-1)["preferred_orientation"]
    assert celltypes.circular_orientation_error(mirrored, np.mod(-true_orientation, np.pi)).max() < 0.05


def test_shares_match_explicit_loop():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(10, R * F))
    result = celltypes.functional_types(w, rotations=R)
    for u in range(10):
        v = w[u] / np.sqrt((w[u] ** 2).sum())
        share = [sum(v[r * F + f] ** 2 for r in range(R)) for f in range(F)]
        assert np.allclose(result["feature_share"][u], share)
        assert result["cell_type"][u] == int(np.argmax(share))
        assert result["main_share"][u] == pytest.approx(max(share))
        assert result["clean"][u] == (max(share) > 0.5)
        assert result["n_features_over_5pct"][u] == sum(s > 0.05 for s in share)
    assert np.allclose(result["feature_share"].sum(axis=1), 1)


def test_orientation_between_rotations_is_interpolated():
    # weight split equally between rotations 1 and 2 -> orientation halfway between 45 and 90 degrees
    w = np.zeros((1, R, F))
    w[0, 1, 0] = w[0, 2, 0] = 1.0
    result = celltypes.functional_types(w.reshape(1, -1), rotations=R)
    assert result["preferred_orientation"][0] == pytest.approx(np.deg2rad(67.5))


def test_clustering_rotation_aligned_vectors_recovers_types():
    rng = np.random.default_rng(2)
    # Clustering keeps the sign of the weights (an inverted feature is another type), so all positive here.
    w, types, _ = synthetic_weights(rng, signed=False)
    labels = celltypes.cluster_types(w, rotations=R, n_clusters=F, seed=0)
    assert celltypes.adjusted_rand_index(types, labels) == 1.0
    unaligned = celltypes.KMeans(n_clusters=F, n_init=10, random_state=0).fit_predict(w)
    assert celltypes.adjusted_rand_index(types, unaligned) < 0.5  # alignment is what makes it work


def test_alignment_removes_rotation():
    rng = np.random.default_rng(3)
    w = rng.normal(size=(1, R, F))
    w[0, 0] *= 5  # a clear strongest rotation block
    aligned = celltypes.rotation_aligned(w.reshape(1, -1), rotations=R)
    for shift in range(R):
        rotated = np.roll(w, shift, axis=1).reshape(1, -1)
        np.testing.assert_allclose(celltypes.rotation_aligned(rotated, rotations=R), aligned)


def test_align_orientations_removes_a_per_type_offset():
    rng = np.random.default_rng(4)
    true = rng.uniform(0, np.pi, 60)
    groups = rng.integers(0, 3, 60)
    offsets = np.array([0.3, 2.0, 3.0])
    pred = np.mod(true - offsets[groups] + rng.normal(0, 0.01, 60), np.pi)
    aligned = celltypes.align_orientations(pred, true, groups)
    assert celltypes.circular_orientation_error(aligned, true).max() < 0.05
    assert celltypes.circular_orientation_error(pred, true).max() > 1.0


def test_circular_error_wraps():
    assert celltypes.circular_orientation_error(0.1, np.pi - 0.1) == pytest.approx(0.2)
    assert celltypes.circular_orientation_error(0.0, np.pi / 2) == pytest.approx(np.pi / 2)


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="not a multiple"):
        celltypes.functional_types(np.ones((3, 10)), rotations=8)
    with pytest.raises(ValueError, match="all-zero"):
        celltypes.functional_types(np.zeros((3, 16)), rotations=8)
