"""Reliability statistics, normalisation constants and evaluation metrics against explicit loops."""

import math

import numpy as np
import pytest

from pipeline import stats
from pipeline.data.recording import Recording
from pipeline.models import metrics


def repeated_design(rng, n_units=4):
    """Responses to 6 images shown 2-5 times and 5 images shown once, shuffled."""
    image_ids = np.concatenate([np.repeat(np.arange(6), [2, 3, 4, 5, 2, 3]), np.arange(100, 105)])
    rng.shuffle(image_ids)
    signal = rng.gamma(2.0, 1.0, size=(200, n_units))
    responses = signal[image_ids % 100] + rng.normal(0, 0.7, size=(len(image_ids), n_units))
    return responses, image_ids


def loop_pearson(a, b):
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    num = sum((x - ma) * (y - mb) for x, y in zip(a, b))
    return num / math.sqrt(sum((x - ma) ** 2 for x in a) * sum((y - mb) ** 2 for y in b))


def loop_variance(values, ddof):
    m = sum(values) / len(values)
    return sum((v - m) ** 2 for v in values) / (len(values) - ddof)


def repeated_trials(image_ids):
    """{image: [trial, ...]} for images shown at least twice."""
    groups = {}
    for t, i in enumerate(image_ids):
        groups.setdefault(int(i), []).append(t)
    return {i: ts for i, ts in groups.items() if len(ts) >= 2}


def loop_noise_variance(responses, image_ids, unit):
    groups = repeated_trials(image_ids)
    return sum(loop_variance([responses[t, unit] for t in ts], 1) for ts in groups.values()) / len(groups)


def test_pearson_matches_corrcoef_and_is_zero_for_constants():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 3)), rng.normal(size=(30, 3))
    expected = [np.corrcoef(x[:, k], y[:, k])[0, 1] for k in range(3)]
    np.testing.assert_allclose(stats.pearson(x, y), expected, atol=1e-12)
    np.testing.assert_allclose(stats.pearson(x.T, y.T, axis=1), expected, atol=1e-12)
    assert stats.pearson(np.ones((5, 1)), rng.normal(size=(5, 1)))[0] == 0.0
    with pytest.raises(ValueError, match="shapes differ"):
        stats.pearson(x, y[:5])


def test_oracle_correlation_matches_leave_one_out_loop():
    responses, image_ids = repeated_design(np.random.default_rng(1))
    groups = repeated_trials(image_ids)
    for unit in range(responses.shape[1]):
        trial_values, others = [], []
        for ts in groups.values():
            for t in ts:
                rest = [responses[s, unit] for s in ts if s != t]
                trial_values.append(responses[t, unit])
                others.append(sum(rest) / len(rest))
        expected = loop_pearson(trial_values, others)
        assert abs(stats.oracle_correlation(responses, image_ids)[unit] - expected) < 1e-6


def test_explainable_variance_and_signal_to_noise_match_loops():
    responses, image_ids = repeated_design(np.random.default_rng(2))
    groups = repeated_trials(image_ids)
    fev = stats.explainable_variance(responses, image_ids)
    snr = stats.signal_to_noise(responses, image_ids)
    for unit in range(responses.shape[1]):
        noise = loop_noise_variance(responses, image_ids, unit)
        total = loop_variance([responses[t, unit] for ts in groups.values() for t in ts], 1)
        assert abs(fev[unit] - (1 - noise / total)) < 1e-6
        means = [sum(responses[t, unit] for t in ts) / len(ts) for ts in groups.values()]
        assert abs(snr[unit] - math.sqrt(loop_variance(means, 1)) / math.sqrt(noise)) < 1e-6
        assert abs(stats.noise_variance(responses, image_ids)[unit] - noise) < 1e-9


def test_noise_free_repeats_are_perfectly_reliable():
    responses, image_ids = repeated_design(np.random.default_rng(3))
    clean = np.random.default_rng(4).normal(size=(200, 4))[image_ids % 100]
    np.testing.assert_allclose(stats.oracle_correlation(clean, image_ids), 1.0, atol=1e-12)
    np.testing.assert_allclose(stats.explainable_variance(clean, image_ids), 1.0, atol=1e-12)


def test_reliability_needs_repeats():
    with pytest.raises(ValueError, match="at least two images shown at least twice"):
        stats.oracle_correlation(np.ones((4, 2)), np.array([1, 1, 2, 3]))
    with pytest.raises(ValueError, match="image ids"):
        stats.explainable_variance(np.ones((4, 2)), np.array([1, 1, 2]))


def make_recording(rng, n_units=5):
    """12 trials: 6 train (one image shown twice), 3 validation, 3 final_test (withheld)."""
    images = rng.integers(0, 256, size=(8, 6, 10)).astype(np.uint8)
    image_ids = np.arange(10, 18)
    trial_image_ids = np.array([10, 11, 12, 12, 13, 14, 15, 16, 17, 10, 11, 12])
    tiers = np.array(["train"] * 6 + ["validation"] * 3 + ["final_test"] * 3)
    withheld = tiers == "final_test"
    responses = rng.gamma(1.0, 2.0, size=(12, n_units)).astype(np.float32)
    responses[:, 1] = 0.0  # a silent unit gets the 1% floor
    responses[0, 2] = -0.5  # negative deconvolution artefacts are clipped
    responses[withheld] = 0.0
    behavior = rng.normal(size=(12, 3)).astype(np.float32)
    behavior[:, 1] = 0.0  # constant behaviour must not divide by zero
    return Recording(
        animal_id=1,
        session=2,
        scan_idx=3,
        images=images,
        image_ids=image_ids,
        trial_idx=np.arange(12),
        trial_image_ids=trial_image_ids,
        tiers=tiers,
        responses=responses,
        withheld=withheld,
        behavior=behavior,
        pupil_center=rng.normal(size=(12, 2)).astype(np.float32),
        unit_ids=np.arange(n_units),
        unit_area=np.array(["V1"] * n_units),
        unit_layer=np.array(["L2/3"] * n_units),
        unit_xyz=np.zeros((n_units, 3), np.float32),
    ).validate()


def test_normalization_stats_match_direct_computation():
    recording = make_recording(np.random.default_rng(5))
    s = stats.normalization_stats(recording)
    train = recording.tiers == "train"
    pixels = recording.trial_images()[train].astype(np.float64)
    assert abs(s.image_mean - pixels.mean()) < 1e-6 and abs(s.image_std - pixels.std()) < 1e-6
    clipped = np.clip(recording.responses[train].astype(np.float64), 0, None)
    raw_std = clipped.std(axis=0)
    floor = 0.01 * raw_std.mean()
    np.testing.assert_allclose(s.response_std, np.maximum(raw_std, floor), rtol=1e-6)
    assert s.response_std[1] == pytest.approx(floor)
    np.testing.assert_allclose(s.response_mean, clipped.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(s.behavior_mean, recording.behavior[train].mean(0), rtol=1e-5, atol=1e-6)
    assert s.behavior_std[1] == 1.0
    np.testing.assert_allclose(s.pupil_center_std, recording.pupil_center[train].std(0), rtol=1e-5)

    both = stats.normalization_stats(recording, tiers=("train", "validation", "final_test"))
    kept = ~recording.withheld
    assert abs(both.image_mean - recording.trial_images()[kept].mean()) < 1e-6  # withheld trials ignored
    assert stats.NormalizationStats.from_dict(s.to_dict()).to_dict() == s.to_dict()
    with pytest.raises(ValueError, match="unknown tier"):
        stats.normalization_stats(recording, tiers=("training",))
    with pytest.raises(ValueError, match="no usable trials"):
        stats.normalization_stats(recording, tiers=("test",))


def test_test_correlation_averages_predictions_and_responses_per_image():
    rng = np.random.default_rng(6)
    responses, image_ids = repeated_design(rng)
    pred = responses + rng.normal(size=responses.shape)
    for unit in range(responses.shape[1]):
        ids = sorted(set(image_ids.tolist()))
        mean_pred = [np.mean([pred[t, unit] for t in range(len(pred)) if image_ids[t] == i]) for i in ids]
        mean_resp = [np.mean([responses[t, unit] for t in range(len(pred)) if image_ids[t] == i]) for i in ids]
        assert (
            abs(metrics.test_correlation(pred, responses, image_ids)[unit] - loop_pearson(mean_pred, mean_resp)) < 1e-6
        )
        assert (
            abs(
                metrics.single_trial_correlation(pred, responses)[unit]
                - loop_pearson(list(pred[:, unit]), list(responses[:, unit]))
            )
            < 1e-6
        )


def test_feve_matches_loop_and_bounds():
    rng = np.random.default_rng(7)
    responses, image_ids = repeated_design(rng)
    pred = responses + rng.normal(size=responses.shape)
    groups = repeated_trials(image_ids)
    trials = [t for ts in groups.values() for t in ts]
    for unit in range(responses.shape[1]):
        noise = loop_noise_variance(responses, image_ids, unit)
        mse = sum((pred[t, unit] - responses[t, unit]) ** 2 for t in trials) / len(trials)
        total = loop_variance([responses[t, unit] for t in trials], 0)
        assert abs(metrics.feve(pred, responses, image_ids)[unit] - (1 - (mse - noise) / (total - noise))) < 1e-6

    # Many repeats: the noise-free mean explains everything, a constant nothing.
    n_images, repeats, n_units = 50, 20, 3
    rates = rng.gamma(2.0, 1.0, size=(n_images, n_units))
    ids = np.repeat(np.arange(n_images), repeats)
    noisy = rates[ids] + rng.normal(0, 0.5, size=(len(ids), n_units))
    assert np.all(np.abs(metrics.feve(rates[ids], noisy, ids) - 1) < 0.05)
    assert np.all(metrics.feve(np.broadcast_to(noisy.mean(0), noisy.shape), noisy, ids) <= 1e-12)
    assert np.all(metrics.feve(np.full_like(noisy, 3.0), noisy, ids) <= 0)


def test_population_feve_leaves_out_units_without_explainable_variance():
    rng = np.random.default_rng(3)
    n_images, repeats = 40, 10
    ids = np.repeat(np.arange(n_images), repeats)
    rates = rng.gamma(2.0, 1.0, size=(n_images, 3))
    rates[:, 2] = 1.0 + 0.1 * rates[:, 2]  # a unit whose responses are mostly noise
    noisy = rates[ids] + rng.normal(0, 0.5, size=(len(ids), 3))
    pred = rates[ids] + rng.normal(0, 0.3, size=(len(ids), 3))
    per_unit = metrics.feve(pred, noisy, ids)
    explainable = stats.explainable_variance(noisy, ids)
    assert explainable[2] < metrics.MIN_EXPLAINABLE_FRACTION <= explainable[:2].min()
    assert per_unit[2] < per_unit[:2].min()  # the near-zero denominator drags it far down
    assert metrics.population_feve(per_unit, explainable) == pytest.approx(per_unit[:2].mean())
    assert np.isnan(metrics.population_feve(per_unit, np.zeros(3)))
    with pytest.raises(ValueError, match="shape"):
        metrics.population_feve(per_unit, explainable[:2])
