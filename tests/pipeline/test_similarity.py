"""Population vectors, blockwise similarity storage, controls and agreement checks."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest
from scipy.stats import pearsonr

from pipeline.similarity import (
    SimilarityError,
    SimilarityStore,
    oracle_similarity_agreement,
    pixel_similarity,
    population_vectors,
    random_permutation,
    repeat_split,
    single_trial_similarity,
    single_trial_vectors,
    upper_triangle_correlation,
    write_similarity,
)


def _cosine_matrix(v: np.ndarray) -> np.ndarray:
    """Pairwise cosines by the definition, one pair at a time (independent of the module)."""
    v = np.asarray(v, dtype=np.float64)
    n = len(v)
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            ni, nj = np.linalg.norm(v[i]), np.linalg.norm(v[j])
            zero = min(ni, nj) < 1e-9 * np.abs(v).max()  # a zero vector, up to rounding
            out[i, j] = 0.0 if zero else v[i] @ v[j] / (ni * nj)
    return out


@pytest.fixture
def scans():
    """Three scans over the same 23 images with different unit counts."""
    rng = np.random.default_rng(0)
    shared = rng.normal(size=(23, 5))
    return [
        population_vectors(shared @ rng.normal(size=(5, d)) + rng.normal(size=(23, d)), rng.uniform(0.2, 2, d))
        for d in (11, 30, 7)
    ]


def test_population_vectors_match_definition():
    rng = np.random.default_rng(1)
    responses = rng.gamma(2.0, size=(9, 6))
    scale = rng.uniform(-2, 2, 6)
    responses[5] = (responses.sum(0) - responses[5]) / 8  # image 5 responds exactly like the mean image
    vectors = population_vectors(responses, scale)

    expected = responses * scale
    expected = expected - expected.mean(0)
    cos = _cosine_matrix(expected)
    assert vectors.dtype == np.float32 and vectors.shape == (9, 6)
    np.testing.assert_allclose(vectors.astype(np.float64) @ vectors.T, cos, atol=1e-6)
    assert np.allclose(vectors[5], 0.0)  # zero vector guarded, not NaN
    norms = np.linalg.norm(np.delete(vectors, 5, 0), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-6)
    # only the square of the scale matters
    np.testing.assert_allclose(population_vectors(responses, -scale), -vectors, atol=1e-6)


def test_population_vectors_reject_bad_input():
    with pytest.raises(SimilarityError, match="unit_scale"):
        population_vectors(np.ones((4, 3)), np.ones(2))
    with pytest.raises(SimilarityError, match="non-finite"):
        population_vectors(np.array([[1.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(SimilarityError, match="n_images, n_units"):
        population_vectors(np.ones(5))


@pytest.mark.parametrize("block_rows", [1, 7, 23, 100])
def test_blockwise_equals_dense_and_scan_average(tmp_path, scans, block_rows):
    store = write_similarity(scans, tmp_path / "s", block_rows=block_rows, dtype=np.float32, progress=False)
    dense = store.to_array()

    per_scan_mean = np.mean([_cosine_matrix(v) for v in scans], axis=0)
    np.testing.assert_allclose(dense, per_scan_mean, atol=1e-5)
    # the identity write_similarity relies on: mean_k X_k X_k^T == Z Z^T, Z = [X_1..X_K] / sqrt(K)
    z = np.concatenate(scans, axis=1).astype(np.float64) / np.sqrt(len(scans))
    np.testing.assert_allclose(z @ z.T, per_scan_mean, atol=1e-6)
    np.testing.assert_allclose(np.diag(dense), 1.0, atol=1e-5)
    assert store.n_blocks == -(-23 // block_rows)


def test_float16_store_and_manifest(tmp_path, scans):
    store = write_similarity(scans, tmp_path / "s", block_rows=8, progress=False, metadata={"tag": "x"})
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["n"] == 23 and manifest["block_rows"] == 8 and manifest["n_scans"] == 3
    assert manifest["dtype"] == "float16" and manifest["metadata"] == {"tag": "x"}
    assert sorted(p.name for p in (tmp_path / "s").glob("block_*.npy")) == [f"block_{b:05d}.npy" for b in range(3)]
    assert np.load(tmp_path / "s" / "block_00002.npy").shape == (7, 23)
    exact = np.mean([_cosine_matrix(v) for v in scans], axis=0)
    np.testing.assert_allclose(store.to_array(), exact, atol=1e-3)  # float16 keeps ~3 digits


def test_store_reads(tmp_path, scans):
    store = write_similarity(scans, tmp_path / "s", block_rows=5, dtype=np.float32, progress=False)
    dense = np.mean([_cosine_matrix(v) for v in scans], axis=0)
    assert store.n == 23 and store.shape == (23, 23)
    for b in range(store.n_blocks):
        np.testing.assert_allclose(store.block(b), dense[b * 5 : (b + 1) * 5], atol=1e-5)
    idx = np.array([17, 3, 3, 22, 0, 9])  # unordered, repeated, across blocks
    np.testing.assert_allclose(store.rows(idx), dense[idx], atol=1e-5)
    np.testing.assert_allclose(store.submatrix(idx), dense[np.ix_(idx, idx)], atol=1e-5)
    i, j = np.array([0, 5, 22, 11]), np.array([22, 5, 1, 12])
    np.testing.assert_allclose(store.pairs(i, j), dense[i, j], atol=1e-5)
    np.testing.assert_allclose(store(i, j), dense[i, j], atol=1e-5)
    # a fresh store object opened from the folder reads the same
    np.testing.assert_allclose(SimilarityStore(tmp_path / "s").submatrix(idx), store.submatrix(idx))
    with pytest.raises(SimilarityError, match="out of range"):
        store.rows([23])
    with pytest.raises(SimilarityError, match="block index"):
        store.block(store.n_blocks)
    with pytest.raises(SimilarityError, match="max_n"):
        store.to_array(max_n=10)


def test_store_folder_errors(tmp_path, scans):
    write_similarity(scans, tmp_path / "s", progress=False)
    with pytest.raises(SimilarityError, match="not empty"):
        write_similarity(scans, tmp_path / "s", progress=False)
    (tmp_path / "half").mkdir()
    with pytest.raises(SimilarityError, match="manifest"):
        SimilarityStore(tmp_path / "half")
    with pytest.raises(SimilarityError, match="same images"):
        write_similarity([scans[0], scans[1][:-1]], tmp_path / "t", progress=False)
    with pytest.raises(SimilarityError, match="list"):
        write_similarity(scans[0], tmp_path / "u", progress=False)


def test_shuffled_is_a_permutation_applied_on_read(tmp_path, scans):
    store = write_similarity(scans, tmp_path / "s", block_rows=6, dtype=np.float32, progress=False)
    files_before = sorted(p.name for p in (tmp_path / "s").iterdir())
    dense = store.to_array()
    perm = random_permutation(store.n, seed=3)
    shuffled = store.shuffled(perm)

    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == files_before  # nothing new written
    np.testing.assert_array_equal(shuffled.to_array(), dense[np.ix_(perm, perm)])
    # same multiset of values, different assignment to image pairs
    np.testing.assert_array_equal(np.sort(shuffled.to_array(), axis=None), np.sort(dense, axis=None))
    assert not np.allclose(shuffled.to_array(), dense)
    idx = np.array([4, 20, 1])
    np.testing.assert_array_equal(shuffled.submatrix(idx), dense[np.ix_(perm[idx], perm[idx])])
    np.testing.assert_array_equal(shuffled.pairs(idx, idx[::-1]), dense[perm[idx], perm[idx[::-1]]])
    np.testing.assert_array_equal(shuffled.block(1), dense[np.ix_(perm[6:12], perm)])
    # composition: shuffling by q after p reads S[p[q[i]], p[q[j]]]
    q = random_permutation(store.n, seed=4)
    np.testing.assert_array_equal(shuffled.shuffled(q).to_array(), dense[np.ix_(perm[q], perm[q])])
    with pytest.raises(SimilarityError, match="permutation"):
        store.shuffled(np.zeros(store.n, dtype=int))


def test_write_similarity_memory_is_bounded_by_block(tmp_path):
    n, d, block_rows = 2000, 16, 50
    rng = np.random.default_rng(0)
    scans = [population_vectors(rng.normal(size=(n, d))) for _ in range(2)]
    tracemalloc.start()
    write_similarity(scans, tmp_path / "s", block_rows=block_rows, dtype=np.float32, device="cpu", progress=False)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    block_bytes = block_rows * n * 4
    dense_bytes = n * n * 4
    print(
        f"\nwrite_similarity peak traced {peak / 1e6:.2f} MB; "
        f"block {block_bytes / 1e6:.2f} MB; dense {dense_bytes / 1e6:.1f} MB"
    )
    assert peak < 4 * block_bytes + 2 * sum(v.nbytes for v in scans)
    assert peak < dense_bytes / 10


def test_pixel_similarity_is_cosine_of_centred_pixels(tmp_path):
    rng = np.random.default_rng(2)
    images = rng.uniform(0, 255, size=(12, 5, 4))
    store = pixel_similarity(images, tmp_path / "p", dtype=np.float32, progress=False)
    flat = images.reshape(12, -1)
    expected = _cosine_matrix(flat - flat.mean(axis=0))
    np.testing.assert_allclose(store.to_array(), expected, atol=1e-5)
    assert store.manifest["metadata"]["control"] == "pixel"


def test_single_trial_vectors():
    rng = np.random.default_rng(3)
    image_ids = np.array([10, 20, 30, 40])
    trial_ids = np.array([20, 10, 30, 10, 40, 20, 10, 30])
    responses = rng.normal(size=(8, 5))

    a = single_trial_vectors(responses, trial_ids, image_ids, mode="random_trial", seed=0)
    b = single_trial_vectors(responses, trial_ids, image_ids, mode="random_trial", seed=0)
    np.testing.assert_array_equal(a, b)
    # some choice of one trial per image reproduces the vectors exactly
    options = [np.flatnonzero(trial_ids == i) for i in image_ids]
    matches = [
        np.allclose(population_vectors(responses[list(choice)]), a, atol=1e-6)
        for choice in np.array(np.meshgrid(*options, indexing="ij")).reshape(len(image_ids), -1).T
    ]
    assert sum(matches) == 1
    # different seeds eventually draw different trials
    assert any(not np.allclose(a, single_trial_vectors(responses, trial_ids, image_ids, seed=s)) for s in range(1, 20))

    mean = single_trial_vectors(responses, trial_ids, image_ids, mode="mean")
    averaged = np.stack([responses[trial_ids == i].mean(0) for i in image_ids])
    np.testing.assert_allclose(mean, population_vectors(averaged), atol=1e-6)
    with pytest.raises(SimilarityError, match="no trial"):
        single_trial_vectors(responses, trial_ids, np.array([10, 50]))


def test_single_trial_similarity_store(tmp_path):
    rng = np.random.default_rng(4)
    image_ids = np.arange(6)
    scans = [(rng.normal(size=(12, 4)), np.tile(image_ids, 2)), (rng.normal(size=(6, 3)), image_ids[::-1])]
    store = single_trial_similarity(scans, image_ids, tmp_path / "st", dtype=np.float32, progress=False, seed=1)
    expected = np.mean(
        [_cosine_matrix(single_trial_vectors(r, t, image_ids, seed=(1, k))) for k, (r, t) in enumerate(scans)], axis=0
    )
    np.testing.assert_allclose(store.to_array(), expected, atol=1e-5)
    assert store.manifest["metadata"]["control"] == "single_trial"


def test_upper_triangle_correlation_and_oracle_agreement():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(7, 7)), rng.normal(size=(7, 7))
    pairs = [(i, j) for i in range(7) for j in range(i + 1, 7)]
    expected = pearsonr([a[p] for p in pairs], [b[p] for p in pairs])[0]
    assert upper_triangle_correlation(a, b) == pytest.approx(expected, abs=1e-12)
    # the lower triangle and the diagonal do not matter
    assert upper_triangle_correlation(np.triu(a, 1) + np.diag(rng.normal(size=7)), b) == pytest.approx(expected)

    signal = [rng.normal(size=(30, 40)) for _ in range(2)]
    reference = [s + 0.3 * rng.normal(size=s.shape) for s in signal]
    good = [s + 0.3 * rng.normal(size=s.shape) for s in signal]
    noisy = [s + 3.0 * rng.normal(size=s.shape) for s in signal]
    assert oracle_similarity_agreement(reference, reference) == pytest.approx(1.0)
    r_good, r_noisy = oracle_similarity_agreement(good, reference), oracle_similarity_agreement(noisy, reference)
    assert 0.5 < r_good <= 1 and r_noisy < r_good
    with pytest.raises(SimilarityError, match="differ"):
        oracle_similarity_agreement([signal[0]], [signal[0][:, :5]])


def test_repeat_split_holds_out_the_first_trial_of_each_repeated_image():
    # images 0 and 2 and 3 shown 3, 4 and 3 times; image 1 twice (not repeated enough); trials shuffled
    image_rows = np.array([2, 0, 3, 1, 2, 0, 3, 2, 1, 0, 2, 3])
    responses = np.arange(len(image_rows) * 2, dtype=float).reshape(-1, 2)
    repeated, single, reference = repeat_split(responses, image_rows, n_images=4)
    assert repeated.tolist() == [0, 2, 3]
    np.testing.assert_array_equal(single, responses[[1, 0, 2]])
    np.testing.assert_allclose(reference[0], responses[[5, 9]].mean(axis=0))
    np.testing.assert_allclose(reference[1], responses[[4, 7, 10]].mean(axis=0))
    np.testing.assert_allclose(reference[2], responses[[6, 11]].mean(axis=0))
    assert repeat_split(responses, image_rows, n_images=4, min_repeats=4) is None, "one repeated image is too few"


def test_similarity_settings_hashes_leave_out_lowpass_sigma_at_its_default():
    from pipeline.similarity.settings import SimilaritySettings

    # ``lowpass_sigma`` at its default stays out of the hash: stored Similarity rows stay addressable
    assert SimilaritySettings().hash == "a72494cfb4f2c2c68eb0506d75e015b1"
    assert SimilaritySettings(method="pixel").hash == "e137657baa68c5409e7658109dc0e4c2"
    assert SimilaritySettings(method="lowpass", lowpass_sigma=2.0).hash != SimilaritySettings(method="lowpass").hash


def test_teacher_layers_stay_out_of_the_hash_at_their_default_and_are_checked():
    from pipeline.classifier.teacher import TEACHER_LAYERS
    from pipeline.config import ConfigError
    from pipeline.similarity.settings import SimilaritySettings

    teacher = SimilaritySettings(method="teacher")
    assert teacher.teacher_layers == TEACHER_LAYERS == ("layer3",) and "teacher_layers" not in teacher.to_dict()
    both = SimilaritySettings.from_dict(dict(method="teacher", teacher_layers=["layer2", "layer3"]))
    assert both.to_dict()["teacher_layers"] == ["layer2", "layer3"] and both.hash != teacher.hash
    for bad in ([], ["layer3", "layer3"], ["fc"]):
        with pytest.raises(ConfigError, match="teacher_layers"):
            SimilaritySettings.from_dict(dict(method="teacher", teacher_layers=bad))
