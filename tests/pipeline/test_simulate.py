"""Tests of the natural-image patches and the simulated V1 scan (pipeline.data.images / .simulate)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import ConfigError
from pipeline.data.images import (
    cut_patch,
    cut_patches,
    photograph,
    sample_patch_specs,
    sample_patches,
    source_photographs,
)
from pipeline.data.recording import TIERS
from pipeline.data.simulate import (
    CONTROLS,
    PRESETS,
    TYPE_NAMES,
    VARIANTS,
    SimulationConfig,
    expected_oracle_correlation,
    make_population,
    noise_for_oracle_correlation,
    sample_population,
    simulate,
    variant_changes,
)


@pytest.fixture(scope="module")
def tiny():
    return simulate("tiny", seed=0)


@pytest.fixture(scope="module")
def population():
    return make_population("tiny", seed=0)


def oracle_correlation(recording) -> np.ndarray:
    """Per unit: Pearson correlation, over all test trials, between each trial and the mean of the
    other repeats of its image."""
    test = recording.tiers == "test"
    ids, responses = recording.trial_image_ids[test], recording.responses[test].astype(np.float64)
    trial, others = [], []
    for image in np.unique(ids):
        x = responses[ids == image]
        trial.append(x)
        others.append((x.sum(axis=0) - x) / (len(x) - 1))
    trial, others = np.concatenate(trial), np.concatenate(others)
    trial, others = trial - trial.mean(axis=0), others - others.mean(axis=0)
    return (trial * others).sum(0) / np.sqrt((trial**2).sum(0) * (others**2).sum(0))


# --- images ----------------------------------------------------------------------------------------


def test_photographs_are_grey_0_255_and_read_only():
    photographs = source_photographs()
    assert len(photographs) >= 15
    assert len({p.name for p in photographs}) == len(photographs)
    for photo in photographs:
        assert photo.pixels.ndim == 2 and min(photo.pixels.shape) >= 256
        assert photo.pixels.dtype == np.float32
        assert 0 <= photo.pixels.min() and photo.pixels.max() <= 255 and photo.pixels.std() > 10
        with pytest.raises(ValueError):
            photo.pixels[0, 0] = 1.0


def test_cut_patch_is_an_area_average():
    pixels = photograph("camera").pixels
    assert photograph(2).name == "camera"
    with pytest.raises(KeyError, match="available"):
        photograph("mona_lisa")
    # Integer factor: the area average is the block mean.
    patch = cut_patch(pixels, 10, 20, 36 * 3, 64 * 3, (36, 64))
    blocks = pixels[10 : 10 + 108, 20 : 20 + 192].astype(np.float64).reshape(36, 3, 64, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(patch, blocks, atol=1e-3)
    # Fractional factor: the mean grey level of the region is preserved.
    patch = cut_patch(pixels, 5, 7, 101, 203, (36, 64))
    assert abs(patch.mean() - pixels[5:106, 7:210].mean()) < 1e-2
    np.testing.assert_array_equal(cut_patch(pixels, 5, 7, 36, 64, (36, 64), flip=True), pixels[5:41, 7:71][:, ::-1])
    with pytest.raises(ValueError, match="do not fit"):
        cut_patch(pixels, 500, 0, 36, 64, (36, 64))


def test_sample_patches_is_deterministic_and_uses_the_specs():
    a = sample_patches(20, (36, 64), np.random.default_rng(5))
    b = sample_patches(20, (36, 64), np.random.default_rng(5))
    c = sample_patches(20, (36, 64), np.random.default_rng(6))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.shape == (20, 36, 64) and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 255
    np.testing.assert_array_equal(cut_patches(sample_patch_specs(20, (36, 64), np.random.default_rng(5)), (36, 64)), a)
    specs = sample_patch_specs(200, (36, 64), np.random.default_rng(5), scale=(2.0, 6.0))
    scales = np.array([s.height / 36 for s in specs])
    assert 1.9 < scales.min() and scales.max() < 6.1 and 0.3 < np.mean([s.flip for s in specs]) < 0.7
    assert len({s.photo for s in specs}) == len(source_photographs())


# --- configuration ---------------------------------------------------------------------------------


def test_presets_and_config_errors():
    assert set(PRESETS) == {"tiny", "demo", "large"} | {
        f"{size}-{name}" for size in ("tiny", "demo") for name in VARIANTS | CONTROLS
    }
    assert PRESETS["large"].n_trials == 6000 and PRESETS["large"].n_units == 8000
    with pytest.raises(ConfigError, match="unknown simulation preset"):
        simulate("huge", 0)
    with pytest.raises(ConfigError, match="test_repeats"):
        SimulationConfig.from_dict(test_repeats=1)
    with pytest.raises(ConfigError, match="unknown cell type"):
        SimulationConfig.from_dict(cell_types=("simple", "grandmother"), type_fractions=(1, 1))
    with pytest.raises(ConfigError, match="unknown SimulationConfig key"):
        simulate({"n_unit": 3}, 0)
    with pytest.raises(ValueError, match="seed"):
        simulate("tiny", -1)


# --- the recording ---------------------------------------------------------------------------------


def test_same_seed_same_recording_and_different_seeds_differ(tiny):
    again = simulate("tiny", seed=0)
    for name in ("images", "image_ids", "trial_idx", "trial_image_ids", "tiers", "responses", "behavior",
                 "pupil_center", "unit_xyz", "unit_layer"):  # fmt: skip
        np.testing.assert_array_equal(getattr(again, name), getattr(tiny, name), err_msg=name)
    np.testing.assert_array_equal(again.ground_truth.rates, tiny.ground_truth.rates)
    np.testing.assert_array_equal(again.ground_truth.reliability, tiny.ground_truth.reliability)
    other = simulate("tiny", seed=1)
    for name in ("images", "responses", "behavior", "pupil_center", "trial_idx"):
        assert not np.array_equal(getattr(other, name), getattr(tiny, name)), name
    assert not np.array_equal(other.ground_truth.orientation, tiny.ground_truth.orientation)


def test_shapes_dtypes_and_values(tiny):
    config = PRESETS["tiny"]
    tiny.validate()
    n_images, n_trials, n_units = config.n_single_images + config.n_test_images, config.n_trials, config.n_units
    assert tiny.images.shape == (n_images, 36, 64) and tiny.images.dtype == np.uint8
    assert tiny.images.std() > 20  # natural images, not blank
    assert tiny.responses.shape == (n_trials, n_units) and tiny.responses.dtype == np.float32
    assert tiny.responses.min() >= 0 and np.isfinite(tiny.responses).all()
    np.testing.assert_array_equal(np.sort(tiny.trial_idx), np.arange(n_trials))
    assert not np.array_equal(tiny.trial_idx, np.arange(n_trials))  # files are not in time order
    np.testing.assert_array_equal(np.sort(tiny.unit_ids), np.arange(1, n_units + 1))
    assert set(tiny.unit_area) == {"V1"} and set(tiny.unit_layer) <= {"L2/3", "L4"}
    depth = tiny.unit_xyz[:, 2]
    assert (depth[tiny.unit_layer == "L4"] > depth[tiny.unit_layer == "L2/3"].max()).all()
    pupil, dpupil, speed = tiny.behavior.T
    assert pupil.min() > 0 and speed.min() >= 0 and speed.max() > 10  # cm/s: the mouse runs sometimes
    time_order = np.argsort(tiny.trial_idx)
    np.testing.assert_allclose(dpupil[time_order][1:], np.diff(pupil[time_order]), atol=1e-4)
    # Slowly varying: neighbouring trials (in time) are strongly correlated, file neighbours are not.
    lag1 = lambda x: np.corrcoef(x[:-1], x[1:])[0, 1]  # noqa: E731
    assert lag1(pupil[time_order]) > 0.8 and lag1(speed[time_order]) > 0.8 and abs(lag1(pupil)) < 0.3
    assert np.corrcoef(pupil, speed)[0, 1] > 0.2
    assert tiny.scan_key == dict(animal_id=1, session=1, scan_idx=1)

    truth = tiny.ground_truth
    assert truth.rates.shape == (n_images, n_units) and truth.rates.min() > 0
    assert set(truth.unit_type) == set(TYPE_NAMES)
    orientation_free = truth.unit_type == "center_surround"
    assert np.isnan(truth.orientation[orientation_free]).all()
    assert ((truth.orientation[~orientation_free] >= 0) & (truth.orientation[~orientation_free] < np.pi)).all()
    assert truth.reliability.shape == (n_units,) and ((truth.reliability >= 0) & (truth.reliability < 1)).all()
    for name in ("rf_x", "rf_y", "rf_size", "running_gain", "pupil_gain", "noise_scale"):
        assert truth.extra[name].shape == (n_units,), name
    assert (np.abs(truth.extra["rf_x"] - 32) <= 16).all() and (np.abs(truth.extra["rf_y"] - 18) <= 9).all()


def test_trial_design(tiny):
    config = PRESETS["tiny"]
    ids, counts = np.unique(tiny.trial_image_ids, return_counts=True)
    np.testing.assert_array_equal(ids, np.sort(tiny.image_ids))  # every image is shown
    tier_of = {}
    for image, tier in zip(tiny.trial_image_ids, tiny.tiers):
        assert tier_of.setdefault(image, tier) == tier  # an image belongs to one tier
    tiers = np.array([tier_of[i] for i in ids])
    assert set(tiers) <= set(TIERS)
    assert (counts[tiers == "test"] == config.test_repeats).all() and (tiers == "test").sum() == config.n_test_images
    assert (counts[tiers != "test"] == 1).all()
    assert (tiers == "validation").sum() == round(config.validation_fraction * config.n_single_images)
    # Repeats are spread over the session, not shown in a block.
    first_test = ids[tiers == "test"][0]
    assert np.ptp(tiny.trial_idx[tiny.trial_image_ids == first_test]) > config.n_trials / 4
    assert not tiny.withheld.any()


def test_final_test_trials_are_withheld():
    recording = simulate(PRESETS["tiny"].replace(final_test_fraction=0.5, n_units=5), seed=3)
    final = recording.tiers == "final_test"
    assert final.sum() == 10 * PRESETS["tiny"].test_repeats
    np.testing.assert_array_equal(recording.withheld, final)
    assert (recording.responses[final] == 0).all() and recording.responses[~final].sum() > 0


def test_oracle_correlation_spread_and_ground_truth_reliability(tiny):
    oracle = oracle_correlation(tiny)
    truth = tiny.ground_truth.reliability
    r = np.corrcoef(oracle, truth)[0, 1]
    print(f"\noracle correlation percentiles 5/50/95: {np.percentile(oracle, [5, 50, 95]).round(2)}; "
          f"ground truth: {np.percentile(truth, [5, 50, 95]).round(2)}; r = {r:.3f}")  # fmt: skip
    assert np.percentile(oracle, 10) < 0.25 and np.percentile(oracle, 90) > 0.6
    assert 0.3 < np.median(oracle) < 0.6
    assert r > 0.7
    assert abs(np.mean(oracle - truth)) < 0.08


def test_expected_oracle_correlation_formula_matches_monte_carlo():
    rng = np.random.default_rng(0)
    n_images, repeats, n_units = 5000, 10, 6
    signal_sd = np.linspace(0.2, 2.0, n_units)
    means = rng.standard_normal((n_images, 1, n_units)) * signal_sd
    trials = means + rng.standard_normal((n_images, repeats, n_units))
    others = (trials.sum(axis=1, keepdims=True) - trials) / (repeats - 1)
    x, y = trials.reshape(-1, n_units), others.reshape(-1, n_units)
    empirical = np.array([np.corrcoef(x[:, u], y[:, u])[0, 1] for u in range(n_units)])
    predicted = expected_oracle_correlation(signal_sd**2, np.ones(n_units), repeats)
    np.testing.assert_allclose(empirical, predicted, atol=0.03)
    # The noise level for a target correlation inverts the formula.
    rho = np.array([0.1, 0.4, 0.8])
    noise = noise_for_oracle_correlation(np.array([0.5, 1.0, 3.0]), rho, repeats)
    np.testing.assert_allclose(expected_oracle_correlation(np.array([0.5, 1.0, 3.0]), noise, repeats), rho)


def test_responses_follow_ground_truth_rates(tiny):
    truth = tiny.ground_truth
    index = {int(i): k for k, i in enumerate(tiny.image_ids)}
    rates = truth.rates[[index[int(i)] for i in tiny.trial_image_ids]]
    train = tiny.tiers == "train"
    # Per unit, single trials correlate with the noise-free rate of their image, more so for reliable units.
    r = np.array([np.corrcoef(rates[train, u], tiny.responses[train, u])[0, 1] for u in range(tiny.n_units)])
    assert np.median(r) > 0.3
    assert np.corrcoef(r, truth.reliability)[0, 1] > 0.5
    # Mean responses match the mean of rate x behavioural gain, the gain as documented in the module.
    pupil, speed = tiny.behavior[:, [0]], tiny.behavior[:, [2]]
    gain = np.exp(truth.extra["running_gain"] * np.tanh(speed / 10) + truth.extra["pupil_gain"] * (pupil - 18) / 5)
    ratio = tiny.responses.mean(0) / (rates * gain).mean(0)
    assert abs(np.median(ratio) - 1) < 0.1


def test_behavioral_gain_is_present(tiny):
    from scipy.stats import rankdata

    truth = tiny.ground_truth
    index = {int(i): k for k, i in enumerate(tiny.image_ids)}
    rates = truth.rates[[index[int(i)] for i in tiny.trial_image_ids]]
    # Rank correlations (robust to the heavy-tailed noise) of running speed with the responses
    # divided by the noise-free rate of the trial's image (the stimulus-driven part removed).
    normalised = rankdata(tiny.responses / rates, axis=0)
    normalised = (normalised - normalised.mean(0)) / normalised.std(0)

    def rank_corr(x):
        x = rankdata(x)
        return (((x - x.mean()) / x.std())[:, None] * normalised).mean(0)

    speed = tiny.behavior[:, 2]
    observed = rank_corr(speed)
    rng = np.random.default_rng(0)
    shuffled = np.array([rank_corr(rng.permutation(speed)).mean() for _ in range(200)])
    across_units = np.corrcoef(observed, truth.extra["running_gain"])[0, 1]
    print(
        f"\nmean rank correlation with running {observed.mean():.3f} "
        f"(shuffled {shuffled.mean():.3f} +- {shuffled.std():.3f}); "
        f"vs running gain across units r = {across_units:.2f}"
    )
    assert observed.mean() > shuffled.mean() + 5 * shuffled.std()
    # Units with a stronger running gain correlate more with running.
    assert across_units > 0.2


def test_ground_truth_rates_are_the_population_rates(tiny, population):
    np.testing.assert_allclose(population.rates(tiny.images), tiny.ground_truth.rates, rtol=1e-5)
    np.testing.assert_array_equal(population.unit_type, tiny.ground_truth.unit_type)


# --- functional types -------------------------------------------------------------------------------


def grating(shape, orientation, wavelength, phase, centre):
    """Grating with bars along (cos, -sin) in (column, row), as documented in pipeline.data.simulate."""
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]].astype(float)
    across = (x - centre[0]) * np.sin(orientation) + (y - centre[1]) * np.cos(orientation)
    return 128 + 100 * np.cos(2 * np.pi * across / wavelength + phase)


def bar(shape, orientation, length, width, centre):
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]].astype(float)
    along = (x - centre[0]) * np.cos(orientation) - (y - centre[1]) * np.sin(orientation)
    across = (x - centre[0]) * np.sin(orientation) + (y - centre[1]) * np.cos(orientation)
    return 128 + 120 * ((np.abs(across) < width / 2) & (np.abs(along) < length / 2))


def own_responses(population, stimuli):
    """``stimuli[u]``: list of images for unit ``u`` -> list of (k_u,) drives of unit ``u`` to them
    (one pass over the filters for all units)."""
    drives = population.drives(np.stack([image for images in stimuli for image in images]))
    bounds = np.cumsum([0] + [len(images) for images in stimuli])
    return [drives[bounds[u] : bounds[u + 1], u] for u in range(len(stimuli))]


def test_types_differ_in_phase_orientation_and_length_tuning(population):
    shape = population.image_shape
    phases = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    orientations = np.linspace(0, np.pi, 12, endpoint=False)
    stimuli = []
    for u in range(population.n_units):
        theta, size = population.rotation[u], population.rf_size[u]
        centre = (population.rf_x[u], population.rf_y[u])
        stimuli.append(
            [grating(shape, o, 3 * size, p, centre) for o in orientations for p in phases]
            + [grating(shape, theta, 3 * size, p, centre) for p in phases]
            + [bar(shape, theta, length * size, size, centre) for length in (1.5, 8.0)]
        )
    measured = {name: {k: [] for k in ("phase", "orientation_error", "orientation_cv", "short_over_long")}
                for name in TYPE_NAMES}  # fmt: skip
    for u, (name, r) in enumerate(zip(population.unit_type, own_responses(population, stimuli))):
        tuning = r[: len(orientations) * len(phases)].reshape(len(orientations), len(phases)).mean(axis=1)
        at_preferred = r[len(orientations) * len(phases) : -2]
        short, long = r[-2:]
        error = np.angle(np.exp(2j * (orientations[tuning.argmax()] - population.rotation[u]))) / 2
        measured[name]["phase"].append(np.ptp(at_preferred) / (at_preferred.max() + at_preferred.min()))
        measured[name]["orientation_error"].append(abs(error))
        measured[name]["orientation_cv"].append(tuning.std() / tuning.mean())
        measured[name]["short_over_long"].append(short / max(long, 1e-9))
    median = {name: {k: np.median(v) for k, v in m.items()} for name, m in measured.items()}
    for name, m in median.items():
        print(f"{name:16s} " + " ".join(f"{k} {v:.2f}" for k, v in m.items()))
    # Simple cells are phase-sensitive, complex (energy) cells phase-invariant.
    assert median["simple"]["phase"] > 0.8 and median["complex"]["phase"] < 0.1
    # Oriented types peak at their ground-truth orientation; centre-surround units are untuned.
    for name in ("simple", "complex", "end_stopped", "curvature", "texture"):
        assert median[name]["orientation_error"] < np.radians(10), name
    assert median["center_surround"]["orientation_cv"] < 0.1 < median["complex"]["orientation_cv"]
    # End-stopped units prefer short bars, complex units long ones.
    assert median["end_stopped"]["short_over_long"] > 2 and median["complex"]["short_over_long"] < 1


def test_texture_and_curvature_units_prefer_their_features(population):
    shape = population.image_shape
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]].astype(float)
    offsets = np.linspace(-1, 1, 5)

    def arc(u, curvature, offset):
        theta, size = population.rotation[u], population.rf_size[u]
        dx, dy = x - population.rf_x[u], y - population.rf_y[u]
        along = dx * np.cos(theta) - dy * np.sin(theta)
        across = dx * np.sin(theta) + dy * np.cos(theta) - offset * size
        bent = np.abs(across - curvature / size * along**2 / 2) < 0.4 * size
        return 128 + 120 * (bent & (np.abs(along) < 2.5 * size))

    stimuli = []
    for u in range(population.n_units):
        theta, size, centre = population.rotation[u], population.rf_size[u], (population.rf_x[u], population.rf_y[u])
        stimuli.append(
            [arc(u, curvature, o) for curvature in (0.6, 0.0) for o in offsets]
            + [grating(shape, theta, 2 * size, p, centre) for p in (0, 1, 2, 3)]
            + [bar(shape, theta, 8 * size, 0.7 * size, (centre[0] + o * np.sin(theta), centre[1] + o * np.cos(theta)))
               for o in np.linspace(-size, size, 6)]
        )  # fmt: skip
    bent_over_straight, texture_over_line = {}, {}
    for name, r in zip(population.unit_type, own_responses(population, stimuli)):
        bent, straight, texture, lines = r[:5], r[5:10], r[10:14], r[14:]
        bent_over_straight.setdefault(name, []).append(bent.max() / straight.max())
        texture_over_line.setdefault(name, []).append(texture.mean() / lines.max())
    assert np.median(bent_over_straight["curvature"]) > 1.2 > np.median(bent_over_straight["complex"])
    assert np.median(texture_over_line["texture"]) > 2 * np.median(texture_over_line["complex"])


def test_eye_position_moves_receptive_fields(population):
    # Receptive fields moved right by 2 pixels see an image shifted right by 2 as the original.
    images = sample_patches(6, population.image_shape, np.random.default_rng(0))
    shifted = np.concatenate([images[:, :, :2], images[:, :, :-2]], axis=2)  # content moves right
    moved = population.rates(shifted, rf_shift=np.tile([2.0, 0.0], (6, 1)))
    np.testing.assert_allclose(moved, population.rates(images), rtol=1e-2)


@pytest.mark.slow
def test_large_preset_is_sensorium_sized():
    recording = simulate("large", seed=0)
    assert recording.responses.shape == (6000, 8000)
    assert (recording.tiers == "test").sum() == 1000
    oracle = oracle_correlation(recording)
    assert np.corrcoef(oracle, recording.ground_truth.reliability)[0, 1] > 0.85


# --- harder variants ---------------------------------------------------------------------------------


def variant(name: str, **changes) -> SimulationConfig:
    """The tiny preset with the changes of variant ``name``."""
    return PRESETS["tiny"].replace(**VARIANTS[name][0], **changes)


def test_variant_presets_change_only_what_they_say():
    default = PRESETS["demo"]
    assert variant_changes(default) == {} and "demo-cardinal" in PRESETS
    for name, (changes, _) in VARIANTS.items():
        preset = PRESETS[f"demo-{name}"]
        assert set(variant_changes(preset)) == set(changes), name
        assert preset.replace(**{k: getattr(default, k) for k in changes}) == default, name
    # fields added for the variants leave the default configs' hashes (stored in scan sources) alone
    assert (
        "orientation_bias" not in default.to_dict()
        and default.hash == SimulationConfig.from_dict({k: v for k, v in default.to_dict().items()}).hash
    )
    assert PRESETS["demo-cardinal"].hash != default.hash
    with pytest.raises(ConfigError, match="not in cell_types"):
        PRESETS["tiny"].replace(unrotated_types=("edge",))
    with pytest.raises(ConfigError, match="same period"):
        PRESETS["tiny"].replace(mixture_types=("simple", "curvature"))
    with pytest.raises(ConfigError, match="scale after '@'"):
        PRESETS["tiny"].replace(cell_types=("simple", "simple@x"), type_fractions=(1, 1))
    with pytest.raises(ConfigError, match="orientation_bias"):
        PRESETS["tiny"].replace(orientation_bias=1.0)


def test_ten_types_are_more_than_six_features():
    recording = simulate(variant("ten-types", n_units=60), seed=0)
    truth = recording.ground_truth
    assert len(set(truth.unit_type)) == 10
    assert set(truth.unit_type) == set(TYPE_NAMES) | {"edge", "cross", "long_contour", "off_center"}
    assert np.isnan(truth.orientation[truth.unit_type == "off_center"]).all()
    assert "ten-types" not in truth.extra["variant"] and "long_contour" in str(truth.extra["variant"])


def test_simulation_is_deterministic_per_seed_for_every_variant():
    for name in ("mixtures", "cardinal"):  # the variants that draw more random numbers
        config = variant(name, n_units=20, n_single_images=40, n_test_images=4, calibration_images=40)
        first, again = (simulate(config, 0) for _ in range(2))
        np.testing.assert_array_equal(first.responses, again.responses)
        np.testing.assert_array_equal(first.ground_truth.orientation, again.ground_truth.orientation)


def _preferred_wavelength(population, units, wavelengths):
    """(len(units),) wavelength (pixels) of the grating at each unit's orientation that drives it most
    (best phase)."""
    shape, phases = population.image_shape, np.linspace(0, 2 * np.pi, 8, endpoint=False)
    stimuli = [
        [
            grating(shape, population.rotation[u], w, p, (population.rf_x[u], population.rf_y[u]))
            for w in wavelengths
            for p in phases
        ]
        for u in units
    ]
    responses = own_responses_of(population, units, stimuli)
    return np.array([wavelengths[r.reshape(len(wavelengths), len(phases)).max(axis=1).argmax()] for r in responses])


def own_responses_of(population, units, stimuli):
    drives = population.drives(np.stack([image for images in stimuli for image in images]))
    bounds = np.cumsum([0] + [len(images) for images in stimuli])
    return [drives[bounds[i] : bounds[i + 1], u] for i, u in enumerate(units)]


def test_scale_types_differ_only_in_size_and_spatial_frequency():
    population = make_population(variant("scales", n_units=36, calibration_images=100), seed=0)
    names, size = population.unit_type, population.rf_size
    for base in ("simple", "complex", "texture"):
        small, large = size[names == base], size[names == base + "@2"]
        assert small.min() >= 2.5 and small.max() <= 4.5 and large.min() >= 5.0 and large.max() <= 9.0
    units = np.flatnonzero(np.isin(names, ("complex", "complex@2")))
    wavelengths = np.geomspace(4, 40, 15)
    preferred = _preferred_wavelength(population, units, wavelengths)
    # Preferred wavelength per pixel of size is one number for both scales (the template's).
    per_size = preferred / size[units]
    is_large = names[units] == "complex@2"
    ratio = np.median(per_size[is_large]) / np.median(per_size[~is_large])
    assert 0.75 < ratio < 1.33
    assert np.median(preferred[is_large]) > 1.6 * np.median(preferred[~is_large])
    truth = simulate(
        variant("scales", n_units=24, n_single_images=60, n_test_images=4, calibration_images=60), seed=0
    ).ground_truth
    np.testing.assert_array_equal(
        truth.extra["type_scale"], np.where(np.char.endswith(truth.unit_type.astype(str), "@2"), 2.0, 1.0)
    )


def test_mixtures_are_graded_between_two_types():
    population = make_population(variant("mixtures", n_units=80, calibration_images=200), seed=0)
    weight, other, names = population.mixture_weight, population.mixture_type, population.unit_type
    pair = np.isin(names, ("simple", "complex"))
    assert (weight[~pair] == 0).all() and (other[~pair] == "").all()
    assert (weight[pair] >= 0).all() and (weight[pair] <= 0.5).all() and np.ptp(weight[pair]) > 0.3
    assert set(other[pair]) == {"simple", "complex"} and (other[pair] != names[pair]).all()
    # The drive follows the weights: mixed units resemble the other type more as its weight grows.
    from pipeline.data.images import sample_patches

    images = sample_patches(300, tuple(population.image_shape), np.random.default_rng(9), scale=(2.0, 6.0))
    mixed = np.flatnonzero(pair)
    drive = population.drives(images)[:, mixed]
    pure_other = population.template_drives(images, other[mixed], mixed, False, 1024)
    pure_own = population.template_drives(images, names[mixed], mixed, False, 1024)
    w, scale = weight[mixed].astype(np.float32), population.component_scale[mixed].astype(np.float32)
    np.testing.assert_allclose(
        drive, (1 - w) * pure_own / scale[:, 0] + w * pure_other / scale[:, 1], rtol=1e-5, atol=1e-6
    )
    similarity = [
        np.corrcoef(drive[:, i], pure_other[:, i])[0, 1] - np.corrcoef(drive[:, i], pure_own[:, i])[0, 1]
        for i in range(len(mixed))
    ]
    assert np.corrcoef(w, similarity)[0, 1] > 0.7


def test_cardinal_bias_concentrates_orientations():
    def near_cardinal(bias: float) -> float:
        config = PRESETS["tiny"].replace(n_units=4000, orientation_bias=bias)
        population, _, _ = sample_population(config, np.random.default_rng(0))
        theta = population.orientation[np.isfinite(population.orientation)]
        distance = np.minimum(np.mod(theta, np.pi / 2), np.pi / 2 - np.mod(theta, np.pi / 2))
        return float(np.mean(distance < np.pi / 8))

    # density (1 + b cos 4 theta) / pi puts 1/2 + b / pi within 22.5 degrees of a cardinal
    assert near_cardinal(0.8) == pytest.approx(0.5 + 0.8 / np.pi, abs=0.03)
    assert near_cardinal(0.0) == pytest.approx(0.5, abs=0.03)
    truth = simulate(
        variant("cardinal", n_units=24, n_single_images=60, n_test_images=4, calibration_images=60), seed=0
    ).ground_truth
    assert '"orientation_bias":0.8' in str(truth.extra["variant"])


def test_unrotated_type_has_one_orientation():
    truth = simulate(
        variant("unrotated", n_units=40, n_single_images=60, n_test_images=4, calibration_images=60), seed=0
    ).ground_truth
    fixed = truth.unit_type == "end_stopped"
    np.testing.assert_array_equal(truth.extra["unrotated"], fixed)
    assert fixed.sum() >= 4 and (truth.orientation[fixed] == 0).all()
    others = np.isfinite(truth.orientation) & ~fixed
    assert np.ptp(truth.orientation[others]) > np.pi / 2


def test_one_size_control_is_the_default_population_at_one_size():
    default, control = (
        make_population(PRESETS[name].replace(n_units=30), seed=2) for name in ("tiny", "tiny-one-size")
    )
    np.testing.assert_array_equal(control.unit_type, default.unit_type)
    np.testing.assert_array_equal(control.rotation, default.rotation)
    np.testing.assert_array_equal(control.rf_x, default.rf_x)
    assert np.ptp(default.rf_size) > 1.0 and (control.rf_size == 3.5).all()
    assert PRESETS["demo-one-size"] == PRESETS["demo"].replace(rf_size=(3.5, 3.5))
