"""The simulation's entry point: :func:`simulate` draws one scan in steps, each from its own random
stream: the units, the stimuli, the trial design, the behaviour, the noise-free rates, the per-unit
noise and the single-trial responses; then it records the ground truth."""

from __future__ import annotations

import dataclasses
import logging
from typing import Mapping

import numpy as np

from pipeline.config import canonical_json
from pipeline.data.images import sample_patches
from pipeline.data.recording import GroundTruth, Recording
from pipeline.data.simulate.config import SimulationConfig
from pipeline.data.simulate.noise import UnitNoise, draw_responses, unit_noise
from pipeline.data.simulate.population import SimulatedPopulation, shift_images
from pipeline.data.simulate.presets import resolve_config, variant_changes
from pipeline.data.simulate.sampling import calibrated_population, random_streams, simulate_behavior
from pipeline.data.simulate.templates import cell_type_of

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TrialDesign:
    """Which image each trial shows and the order in which trials are shown and stored.

    ``image_ids`` (n_images,) int64, sorted; ``image_tier`` (n_images,) tier name of each image
    (object); ``time_image`` (n_trials,) index of the image shown in each time slot; ``file_time``
    (n_trials,) the time slot that trial file i holds.
    """

    image_ids: np.ndarray
    image_tier: np.ndarray
    time_image: np.ndarray
    file_time: np.ndarray

    @property
    def n_trials(self) -> int:
        return len(self.time_image)


def stimulus_images(config: SimulationConfig, rng: np.random.Generator) -> np.ndarray:
    """(n_images, H, W) uint8 natural-image patches: the single-shown images, then the test images."""
    n_images = config.n_single_images + config.n_test_images
    return np.round(sample_patches(n_images, config.image_shape, rng, scale=config.patch_scale)).astype(np.uint8)


def trial_design(config: SimulationConfig, rng: np.random.Generator) -> TrialDesign:
    """Image ids and tiers; test images repeated ``test_repeats`` times; trials shown in a random
    order and stored in another random (file) order."""
    n_images = config.n_single_images + config.n_test_images
    image_ids = np.sort(rng.choice(np.arange(1, 100 * n_images + 1), n_images, replace=False)).astype(np.int64)
    image_tier = np.full(n_images, "train", dtype=object)
    order = rng.permutation(n_images)
    n_final = round(config.final_test_fraction * config.n_test_images)
    n_validation = round(config.validation_fraction * config.n_single_images)
    image_tier[order[: config.n_test_images]] = "test"
    image_tier[order[:n_final]] = "final_test"
    image_tier[order[config.n_test_images : config.n_test_images + n_validation]] = "validation"
    repeats = np.where(np.isin(image_tier, ("test", "final_test")), config.test_repeats, 1)
    time_image = rng.permutation(np.repeat(np.arange(n_images), repeats))  # image index per time slot
    file_time = rng.permutation(len(time_image))  # trial file i holds time slot file_time[i]
    return TrialDesign(image_ids=image_ids, image_tier=image_tier, time_image=time_image, file_time=file_time)


def noise_free_rates(
    population: SimulatedPopulation,
    images: np.ndarray,
    design: TrialDesign,
    behavior: np.ndarray,
    rf_shift: np.ndarray,
    n_states: int,
    rng: np.random.Generator,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noise-free rates of every unit: per unique image (eye centred: the ground truth), per trial
    (through the trial's eye position ``rf_shift`` (n_trials, 2) pixels), and for each non-withheld
    test image under ``n_states`` behaviour and eye states drawn from the trials (Monte-Carlo, for
    the reliability).  Returns ``(image_rates (n_images, n_units), trial_rates (n_trials, n_units)
    before gain, oracle_rates (n_test_images, n_states, n_units) float64 with gain)``."""
    n_trials, n_units = design.n_trials, population.n_units
    oracle_images = np.flatnonzero(design.image_tier == "test")
    state_time = rng.integers(n_trials, size=(len(oracle_images), n_states)).ravel()
    image_rates = population.rates(images, progress=progress)
    # Every trial and every Monte-Carlo state in one pass, each seen through its eye position.
    shifted = np.concatenate(
        [
            shift_images(images[design.time_image], rf_shift),
            shift_images(images[np.repeat(oracle_images, n_states)], rf_shift[state_time]),
        ]
    )
    rates = population.rates(shifted, progress=progress)
    del shifted
    oracle_rates = rates[n_trials:] * population.gain(behavior[state_time])
    oracle_rates = oracle_rates.reshape(len(oracle_images), n_states, n_units).astype(np.float64)
    return image_rates, rates[:n_trials], oracle_rates


def _variant_truth(config: SimulationConfig, population: SimulatedPopulation) -> dict[str, np.ndarray]:
    """Ground-truth entries of a harder variant: ``variant`` (JSON text of :func:`variant_changes`)
    and the per-unit arrays the variant set: ``type_scale`` (size factor of the unit's type),
    ``unrotated`` (bool), ``mixture_type`` (the other type, '' for none) and ``mixture_weight``
    (its weight, 0 for none)."""
    changes = variant_changes(config)
    if not changes:
        return {}
    out = dict(
        variant=np.array(canonical_json(changes)),
        type_scale=np.array([cell_type_of(t)[1] for t in population.unit_type]),
    )
    if config.unrotated_types:
        out["unrotated"] = np.isin(population.unit_type, config.unrotated_types)
    if population.mixture_type is not None and population.mixture_weight is not None:
        out["mixture_type"] = population.mixture_type
        out["mixture_weight"] = population.mixture_weight
    return out


def ground_truth(
    config: SimulationConfig, population: SimulatedPopulation, image_rates: np.ndarray, noise: UnitNoise
) -> GroundTruth:
    """The simulation's ground truth: types, orientations, noise-free rates per image
    (n_images, n_units), expected reliabilities and every unit parameter (see the package docstring)."""
    drive_scale, amplitude = population.calibration()
    return GroundTruth(
        unit_type=population.unit_type,
        orientation=population.orientation,
        rates=image_rates,
        reliability=noise.reliability,
        extra=dict(
            rf_x=population.rf_x,
            rf_y=population.rf_y,
            rf_size=population.rf_size,
            rotation=population.rotation,
            mean_rate=population.mean_rate,
            running_gain=population.running_gain,
            pupil_gain=population.pupil_gain,
            noise_scale=noise.phi,
            overdispersion=noise.overdispersion,
            target_reliability=noise.target,
            drive_scale=drive_scale,
            amplitude=amplitude,
            **_variant_truth(config, population),
        ),
    )


def simulate(config: SimulationConfig | str | Mapping, seed: int, progress: bool = False) -> Recording:
    """Simulate one scan; fully deterministic given ``config`` and ``seed``.  See the package
    docstring for the model and :data:`~pipeline.data.simulate.PRESETS` for the sizes."""
    config = resolve_config(config)
    streams = random_streams(seed)
    log.info("simulating %d units x %d trials (seed %d)", config.n_units, config.n_trials, seed)
    population, unit_xyz, unit_layer = calibrated_population(config, streams, progress)
    images = stimulus_images(config, streams["stimuli"])
    design = trial_design(config, streams["design"])
    behavior_t, eye_t = simulate_behavior(config, design.n_trials, streams["behavior"])
    rf_shift_t = config.eye_to_stimulus * (eye_t.astype(np.float64) - np.asarray(config.eye_center))
    image_rates, trial_rates, oracle_rates = noise_free_rates(
        population, images, design, behavior_t, rf_shift_t, config.reliability_samples, streams["reliability"], progress
    )
    noise = unit_noise(config, oracle_rates, streams["noise"])
    responses = draw_responses(config, population, noise, trial_rates, behavior_t, design.file_time, streams["noise"])
    del trial_rates

    file_time, trial_image = design.file_time, design.time_image[design.file_time]
    tiers = design.image_tier[trial_image].astype(str)
    withheld = tiers == "final_test"
    responses[withheld] = 0.0
    n_units = population.n_units
    recording = Recording(
        animal_id=config.animal_id,
        session=config.session,
        scan_idx=config.scan_idx,
        images=images,
        image_ids=design.image_ids,
        trial_idx=file_time.astype(np.int64),
        trial_image_ids=design.image_ids[trial_image],
        tiers=tiers,
        responses=responses,
        withheld=withheld,
        behavior=behavior_t[file_time],
        pupil_center=eye_t[file_time],
        unit_ids=np.arange(1, n_units + 1, dtype=np.int64),
        unit_area=np.full(n_units, "V1"),
        unit_layer=unit_layer,
        unit_xyz=unit_xyz,
        source=f"simulated V1 population, config {config.hash}, seed {seed}",
        ground_truth=ground_truth(config, population, image_rates, noise),
    )
    return recording.validate()
