"""Choosing the number of cell types from an ensemble's readouts (pipeline.celltypes.type_count)."""

import numpy as np
import pytest

from pipeline.celltypes import clustering as celltypes
from pipeline.celltypes import ensemble, type_count

R, F = 8, 6


def synthetic_ensemble(rng, k, n_units=100, n_models=4, noise=0.35):
    """Readouts of ``n_models`` models for ``n_units`` units of ``k`` types.

    A type is a random pattern over (rotation, feature); a unit reads its type's pattern turned by a
    random whole rotation.  Each model sees the units with its own noise (relative norm ``noise``)
    and its own order of features, as independently trained models do.  Returns (readouts, types).
    """
    centres = rng.normal(size=(k, R, F))
    types = np.concatenate([np.arange(k), rng.integers(0, k, n_units - k)])
    rotation = rng.integers(0, R, n_units)
    base = np.stack([np.roll(centres[t], r, axis=0) for t, r in zip(types, rotation)])
    base /= np.linalg.norm(base.reshape(n_units, -1), axis=1)[:, None, None]
    readouts = []
    for _ in range(n_models):
        w = base + noise * rng.normal(size=base.shape) / np.sqrt(R * F)
        readouts.append(w[:, :, rng.permutation(F)].reshape(n_units, -1))
    return readouts, types


@pytest.mark.parametrize("k,seed", [(3, 0), pytest.param(5, 1, marks=pytest.mark.slow), (8, 2), (10, 3)])
def test_recovers_a_known_number_of_types(k, seed):
    readouts, types = synthetic_ensemble(np.random.default_rng(seed), k)
    result = type_count.choose_type_count(readouts, R, splits=3, seed=seed)
    assert result.k == k
    assert list(result.candidates) == list(range(2, 13))
    row = result.curve()[k - 2]
    assert row["chosen"] and row["k"] == k
    # one fewer type merges two: a clearly worse held-out residual, beyond one standard error
    if k > 2:
        fewer = result.curve()[k - 3]
        assert fewer["residual"] - row["residual"] > 3 * fewer["residual_se"]
    assert row["stability"] > 0.9  # the halves' consensus agree at the true k
    # the consensus of the labelings at the chosen k is the types (up to renaming)
    consensus, _ = celltypes.consensus_types(result.labelings[k], k)
    assert celltypes.adjusted_rand_index(types, consensus) > 0.9


def test_unstructured_readouts_show_no_clear_partition():
    # Pure noise: no grouping recurs across models, so no k lives long or is reproducible.
    rng = np.random.default_rng(4)
    readouts = [rng.normal(size=(120, R * F)) for _ in range(4)]
    result = type_count.choose_type_count(readouts, R, k_range=(2, 6), splits=3)
    print("noise: lifetime", result.lifetime.round(3), "stability", result.stability.round(3))
    assert result.stability.max() < 0.2 and result.lifetime.max() < 0.15


def hierarchy(rng, noise, n_models, n_units=200):
    """Readouts of six types in two families of three (family spread 2, type spread ``0.7``), each model
    with its own noise (relative norm ``noise``) and feature order.  Returns (readouts, types)."""
    family = rng.normal(size=(2, R, F)) * 2.0
    centres = np.concatenate([f + 0.7 * rng.normal(size=(3, R, F)) for f in family])
    types = np.concatenate([np.arange(6), rng.integers(0, 6, n_units - 6)])
    rotation = rng.integers(0, R, n_units)
    base = np.stack([np.roll(centres[t], r, axis=0) for t, r in zip(types, rotation)])
    base /= np.linalg.norm(base.reshape(n_units, -1), axis=1)[:, None, None]
    readouts = [
        (base + noise * rng.normal(size=base.shape) / np.sqrt(R * F))[:, :, rng.permutation(F)].reshape(n_units, -1)
        for _ in range(n_models)
    ]
    return readouts, types


def test_a_coarse_split_every_model_makes_does_not_hide_the_types():
    # Six types in two families of three, with noise that makes single models confuse the types of a
    # family (single-model ARI about 0.6): every model and every k separates the families, so the
    # two-family partition lives longest in the pooled tree and is the most stable between halves,
    # yet two templates predict held-out readouts worse than six.
    readouts, types = hierarchy(np.random.default_rng(6), noise=0.7, n_models=10)
    result = type_count.choose_type_count(readouts, R, k_range=(2, 10), splits=4)
    print("hierarchy: residual", result.residual.round(4), "lifetime", result.lifetime.round(3))
    assert result.lifetime.argmax() == 0 and result.stability.argmax() == 0  # k = 2 by those criteria
    assert result.k == 6
    consensus, _ = celltypes.consensus_types(result.labelings[6], 6)
    assert celltypes.adjusted_rand_index(types, consensus) > 0.9


def test_left_out_residual_reads_templates():
    # Two types, each unit exactly its type's pattern at some rotation: every left-out template is
    # the unit itself turned, so the residual is 0; mislabelling one unit gives it a large residual.
    rng = np.random.default_rng(8)
    patterns = rng.normal(size=(2, R, F))
    types = np.repeat([0, 1], 5)
    vectors = np.stack([np.roll(patterns[t], r, axis=0).ravel() for t, r in zip(types, rng.integers(0, R, 10))])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    np.testing.assert_allclose(type_count.left_out_residual(vectors, types, R, steps=8), 0, atol=1e-9)
    wrong = types.copy()
    wrong[0] = 1
    residual = type_count.left_out_residual(vectors, wrong, R, steps=8)
    assert residual[0] > 0.3 and np.allclose(residual[1:5], 0, atol=1e-9)
    alone = np.arange(10)  # every unit its own type: no template, residual = squared norm = 1
    np.testing.assert_allclose(type_count.left_out_residual(vectors, alone, R, steps=8), 1.0)


def test_one_standard_error_rule():
    candidates = np.array([2, 3, 4, 5])
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.01, 400)
    # 2 and 3 clearly worse; 4 within noise of 5 (the lowest): the rule takes the smaller, 4
    within = 0.0001 + 0.01 * (-1.0) ** np.arange(400)  # mean 1e-4, standard error 5e-4
    residuals = np.stack([0.5 + noise, 0.4 + noise, 0.3 + noise + within, 0.3 + noise])
    k, se = type_count.one_standard_error_choice(candidates, residuals)
    assert k == 4 and se[3] == 0 and se[2] == pytest.approx(0.01 / np.sqrt(400), rel=0.01)
    residuals[2] += 0.002  # now four standard errors worse than 5: the rule takes 5
    assert type_count.one_standard_error_choice(candidates, residuals)[0] == 5


def test_halves_are_disjoint_and_distinct():
    halves = type_count.half_splits(5, 20, np.random.default_rng(0))
    assert len(halves) == 15  # C(5,2) * C(3,2) / 2 distinct unordered pairs of disjoint pairs
    for first, second in halves:
        assert len(first) == len(second) == 2 and not set(first) & set(second)


def test_lifetimes_read_the_tree():
    # Two models agree on 3 blocks of units; one splits a block further: the pooled tree has 3
    # clusters from distance 1/2 (the split) to 1 (never together), 4 from 0 to 1/2.
    a = np.repeat([0, 1, 2], 4)
    b = a.copy()
    b[:2] = 3
    lifetime = type_count.cluster_lifetimes([a, b], np.array([2, 3, 4]))
    np.testing.assert_allclose(lifetime, [0.0, 0.5, 0.5])


def test_degenerate_input_is_refused():
    rng = np.random.default_rng(5)
    readouts, _ = synthetic_ensemble(rng, 3, n_units=30, n_models=2)
    with pytest.raises(ValueError, match="at least 2 models"):
        type_count.choose_type_count(readouts[:1], R)
    with pytest.raises(ValueError, match="differ in shape"):
        type_count.choose_type_count([readouts[0], readouts[1][:20]], R)
    with pytest.raises(ValueError, match="all-zero"):
        type_count.choose_type_count([readouts[0], np.zeros_like(readouts[1])], R)
    with pytest.raises(ValueError, match="not all finite"):
        type_count.choose_type_count([readouts[0], np.full_like(readouts[1], np.nan)], R)
    one_vector = np.tile(readouts[0][:1], (30, 1))
    with pytest.raises(ValueError, match="same vector"):
        type_count.choose_type_count([one_vector, one_vector], R)
    turned = np.stack([np.roll(one_vector[0].reshape(R, F), r, axis=0).ravel() for r in range(30)])
    with pytest.raises(ValueError, match="same vector"):  # one vector at many rotations is still one type
        type_count.choose_type_count([turned, turned], R)
    with pytest.raises(ValueError, match="allow at most 1 types"):
        type_count.choose_type_count([r[:5] for r in readouts], R)
    with pytest.raises(ValueError, match="2 <= low <= high"):
        type_count.choose_type_count(readouts, R, k_range=(1, 4))
    with pytest.raises(ValueError, match="2 <= low <= high"):
        type_count.choose_type_count(readouts, R, k_range=(6, 4))
    with pytest.raises(ValueError, match="not a multiple"):
        type_count.choose_type_count(readouts, 7)
    assert type_count.candidate_range(30) == (2, 10)


def test_rotation_invariant_distances_ignore_rotation_feature_order_and_scale():
    rng = np.random.default_rng(9)
    base = rng.normal(size=(12, R, F))
    turned = np.stack([np.roll(b, r, axis=0) for b, r in zip(base, rng.integers(0, R, 12))])
    distance = celltypes.rotation_invariant_distances(base.reshape(12, -1), R)
    assert distance.shape == (12, 12) and np.allclose(distance, distance.T) and np.allclose(np.diag(distance), 0)
    assert distance[~np.eye(12, dtype=bool)].min() > 0.1  # random patterns differ at every rotation
    # each unit turned by its own whole rotation, features reordered and rescaled: the same distances
    other_model = (turned[:, :, rng.permutation(F)] * rng.uniform(0.5, 3, (12, 1, 1))).reshape(12, -1)
    np.testing.assert_allclose(celltypes.rotation_invariant_distances(other_model, R), distance, atol=1e-9)
    np.testing.assert_allclose(
        celltypes.rotation_invariant_distances(base.reshape(12, -1), R, chunk=5), distance, atol=1e-12
    )


@pytest.mark.parametrize("seed", [6, 7])
def test_averaged_distances_keep_the_types_labelings_lose(seed):
    # Six types in two families with noise at which single models find about 0.4 of the types: each
    # model's k-means labels keep too little for a co-association consensus of six models, while the
    # models' averaged readout distances still place every type apart.
    readouts, types = hierarchy(np.random.default_rng(seed), noise=1.0, n_models=6)
    labelings = [celltypes.cluster_types(w, R, 6, seed=m) for m, w in enumerate(readouts)]
    single = np.mean([celltypes.adjusted_rand_index(types, labels) for labels in labelings])
    coassociation = celltypes.adjusted_rand_index(types, celltypes.consensus_types(labelings, 6)[0])
    averaged = celltypes.adjusted_rand_index(
        types, celltypes.distance_consensus(celltypes.averaged_distances(readouts, R), 6)
    )
    print(f"single {single:.2f}, co-association {coassociation:.2f}, averaged distances {averaged:.2f}")
    assert single < 0.55 and coassociation < 0.7  # measured 0.39-0.47 and 0.56-0.58 (seeds 6, 7)
    assert averaged > 0.9  # measured 0.99-1.00
    with pytest.raises(ValueError, match="one shape"):
        celltypes.averaged_distances([readouts[0], readouts[1][:50]], R)


def test_gap_statistic_counts_compact_clusters_and_splits_a_continuum():
    rng = np.random.default_rng(10)
    centres = rng.normal(size=(4, 5)) * 4
    blobs = np.concatenate([c + rng.normal(size=(40, 5)) for c in centres])
    k, gap, se = type_count.gap_statistic(blobs, list(range(1, 9)))
    assert k == 4 and gap[3] - gap[2] > 2 * se[3]  # measured 3.7-27 standard errors over seeds 10-15
    assert type_count.gap_statistic(rng.uniform(size=(150, 5)), list(range(1, 6)))[0] == 1
    # Why it does not choose the number of types (docs/results.md): one group spread uniformly along
    # a segment beside two compact ones is cut into pieces, as the demo scan's receptive-field sizes are.
    segment = np.outer(rng.uniform(-4, 4, 60), [1, 0, 0, 0, 0]) + 0.3 * rng.normal(size=(60, 5))
    compact = [c + 0.5 * rng.normal(size=(40, 5)) for c in centres[1:3]]
    assert type_count.gap_statistic(np.concatenate([segment, *compact]), list(range(1, 9)))[0] > 3


def test_distance_type_count_recovers_whole_step_types():
    # the averaged-distance criterion (the table's since issue 33) on the whole-step synthetic readouts
    rng = np.random.default_rng(3)
    readouts, types = synthetic_ensemble(rng, 5)
    vectors, distances = ensemble.member_distances(readouts, R, harmonics=None)
    count = type_count.choose_distance_type_count(distances, vectors, R)
    assert count.k == 5 and count.labelings == {}
    assert set(count.consensus) == set(count.candidates.tolist())
    assert celltypes.adjusted_rand_index(types, count.consensus[5]) > 0.95
    with pytest.raises(ValueError, match="2 or more models"):
        type_count.choose_distance_type_count(distances[:1], vectors[:1], R)


def test_alignment_shifts_find_sub_step_turns():
    # band-limited vectors turned by known fractions of a step come back by those shifts (1/8 resolution)
    rng = np.random.default_rng(4)
    template = celltypes.band_limited(celltypes.unit_length(rng.normal(size=(1, R * F)), R).reshape(1, -1), R, 2)
    turns = np.arange(12) * 0.375 % R
    spectra = celltypes.rotation_spectra(np.repeat(template, 12, axis=0), R)
    turned = celltypes.rotated(spectra, -turns, R)  # turned forward by `turns`
    shifts = type_count.alignment_shifts(turned, np.zeros(12, int), R)
    relative = np.mod(shifts - shifts[0] - turns, R)
    assert np.allclose(np.minimum(relative, R - relative), 0, atol=1e-9)
