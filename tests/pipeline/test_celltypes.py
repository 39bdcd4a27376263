"""Functional types from synthetic readout weights with known types and orientations."""

import numpy as np
import pytest

from pipeline.celltypes import clustering as celltypes

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


def rotation_profiles(rng, n_units, templates, concentration=2.0):
    """Units whose readout over rotations is one of ``templates`` (F, F) feature mixtures times a von
    Mises bump centred at a continuous angle (mostly between the R rotations of the core)."""
    types = rng.integers(0, len(templates), n_units)
    angle = rng.uniform(0, 2 * np.pi, n_units)
    rotations = 2 * np.pi * np.arange(R) / R
    bump = np.exp(concentration * np.cos(rotations[None, :] - angle[:, None]))  # (n, R)
    w = bump[:, :, None] * templates[types][:, None, :] + rng.normal(0, 0.02, (n_units, R, F))
    return w.reshape(n_units, R * F), types, angle


def test_rotation_invariant_kmeans_aligns_between_rotations():
    rng = np.random.default_rng(3)
    templates = np.array([[1, 0, 0, 0], [0.6, 0.8, 0, 0], [0, 0, 1, 0], [0, 0, 0.6, -0.8]])
    w, types, angle = rotation_profiles(rng, 160, templates)
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    labels, shifts = celltypes.rotation_invariant_kmeans(w, R, n_clusters=F, seed=0)
    assert celltypes.adjusted_rand_index(types, labels) == 1.0

    # The shift that aligns a unit with its cluster is its angle, up to one offset per cluster.
    def median_error(labels, shifts):
        shift_angle = 2 * np.pi * shifts / R
        aligned = celltypes.align_orientations(shift_angle, angle, labels, period=2 * np.pi)
        return np.degrees(np.median(celltypes.circular_orientation_error(aligned, angle, period=2 * np.pi)))

    assert median_error(labels, shifts) < 6  # the search grid is 45 / 8 = 5.6 degrees
    # Integer rotation shifts only (steps=1) cannot place units that lie between rotations.
    coarse, coarse_shifts = celltypes.rotation_invariant_kmeans(w, R, n_clusters=F, steps=1, seed=0)
    assert median_error(coarse, coarse_shifts) > 2 * median_error(labels, shifts)


def test_rotation_invariant_kmeans_is_rotation_invariant():
    rng = np.random.default_rng(5)
    w = rng.normal(size=(40, R, F))
    labels, _ = celltypes.rotation_invariant_kmeans(w.reshape(40, -1), R, n_clusters=3, seed=0)
    turned = np.stack([np.roll(u, s, axis=0) for u, s in zip(w, rng.integers(0, R, 40))])
    labels_turned, _ = celltypes.rotation_invariant_kmeans(turned.reshape(40, -1), R, n_clusters=3, seed=0)
    assert celltypes.adjusted_rand_index(labels, labels_turned) == 1.0


def test_consensus_keeps_what_labelings_agree_on():
    rng = np.random.default_rng(6)
    truth = rng.integers(0, 4, 90)
    split = np.where((truth == 0) & (np.arange(90) % 2 == 0), 4, truth)  # type 0 split in two
    merged = np.where(truth == 3, 2, truth)  # types 2 and 3 merged
    renamed = np.array([7, 5, 9, 1])[truth]
    consensus, agreement = celltypes.consensus_types([split, merged, renamed], n_clusters=4)
    assert celltypes.adjusted_rand_index(truth, consensus) == 1.0
    # Only type 0 is ever split, in one labeling of three; merging other types keeps each together.
    np.testing.assert_allclose(agreement[truth != 0], 1.0)
    assert ((agreement[truth == 0] > 0.5) & (agreement[truth == 0] < 1.0)).all()
    assert celltypes.adjusted_rand_index(truth, split) < 1.0 and celltypes.adjusted_rand_index(truth, merged) < 1.0
    with pytest.raises(ValueError, match="equal length"):
        celltypes.consensus_types([truth, truth[:-1]], n_clusters=4)


def test_consensus_by_ensemble_size_scores_every_subset():
    rng = np.random.default_rng(8)
    truth = np.repeat(np.arange(4), 30)
    # Each model relabels a random 40% of the units: single models are poor, their consensus is not.
    labelings = [np.where(rng.random(120) < 0.4, rng.integers(0, 4, 120), truth) for _ in range(6)]
    rows = celltypes.consensus_by_ensemble_size(labelings, 4, truth, max_subsets=10, seed=0)
    assert [r["models"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["subsets"] for r in rows] == [6, 10, 10, 10, 6, 1]  # all subsets when at most 10
    single = sorted(celltypes.adjusted_rand_index(truth, labels) for labels in labelings)
    np.testing.assert_allclose(sorted(rows[0]["ari"]), single)
    everything = celltypes.adjusted_rand_index(truth, celltypes.consensus_types(labelings, 4)[0])
    assert rows[-1]["ari"] == [everything] and rows[-1]["sd"] == 0.0
    assert rows[-1]["mean"] > rows[0]["max"]  # the point of an ensemble
    assert all(r["min"] <= r["mean"] <= r["max"] and len(r["ari"]) == r["subsets"] for r in rows)
    # The same seed draws the same subsets.
    again = celltypes.consensus_by_ensemble_size(labelings, 4, truth, max_subsets=10, seed=0)
    assert [r["ari"] for r in again] == [r["ari"] for r in rows]
    with pytest.raises(ValueError, match="shaped like truth"):
        celltypes.consensus_by_ensemble_size([truth[:-1]], 4, truth)
    with pytest.raises(ValueError, match="shaped like truth"):
        celltypes.consensus_by_ensemble_size([], 4, truth)


def test_summary_chooses_the_number_of_clusters_and_scores_against_truth():
    rng = np.random.default_rng(7)
    templates = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]])
    w, types, angle = rotation_profiles(rng, 90, templates, concentration=4.0)
    names = np.array(["simple", "complex", "texture"])[types]
    truth = dict(unit_type=names, orientation=np.mod(angle, np.pi))
    chosen = celltypes.summarize(w, R, truth=truth, max_clusters=6).summary  # k by silhouette
    assert chosen["n_clusters"] == 3 and chosen["ari_clusters"] == 1.0 and chosen["ari_types"] == 1.0
    fixed = celltypes.summarize(w, R, truth=truth, n_clusters=F).summary
    assert fixed["n_clusters"] == F and fixed["ari_clusters"] < 1.0  # one true type is split
    assert fixed["orientation_error"] < 10  # degrees; the units' angles are continuous


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
