"""The random draws of a simulation that do not depend on its images: independent generators per
stage (:func:`random_streams`), the units (:func:`sample_population`, calibrated by
:func:`calibrated_population`) and the animal's behaviour (:func:`simulate_behavior`)."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from pipeline.data.images import sample_patches
from pipeline.data.simulate.config import SimulationConfig
from pipeline.data.simulate.population import SimulatedPopulation
from pipeline.data.simulate.presets import resolve_config
from pipeline.data.simulate.templates import cell_type_of

_STREAMS = ("population", "calibration", "stimuli", "design", "behavior", "reliability", "noise")


def random_streams(seed: int) -> dict[str, np.random.Generator]:
    """Independent generators per simulation stage, so that e.g. the population of a seed does not
    depend on how many images are drawn."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return dict(zip(_STREAMS, np.random.default_rng(int(seed)).spawn(len(_STREAMS))))


def _type_counts(fractions: Sequence[float], n: int) -> np.ndarray:
    """Largest-remainder rounding of ``fractions * n`` to integers summing to ``n``."""
    share = np.asarray(fractions, float) / np.sum(fractions) * n
    counts = np.floor(share).astype(int)
    counts[np.argsort(-(share - counts), kind="stable")[: n - counts.sum()]] += 1
    return counts


def _ar1(rng: np.random.Generator, n: int, timescale: float, size: int = 1) -> np.ndarray:
    """Stationary AR(1) processes with unit variance and correlation time ``timescale`` steps,
    (n, size)."""
    a = np.exp(-1.0 / timescale)
    noise = rng.standard_normal((n, size))
    out = np.empty((n, size))
    out[0] = noise[0]
    for t in range(1, n):
        out[t] = a * out[t - 1] + np.sqrt(1 - a * a) * noise[t]
    return out


def sample_population(
    config: SimulationConfig, rng: np.random.Generator
) -> tuple[SimulatedPopulation, np.ndarray, np.ndarray]:
    """Draw the units' types and parameters (uncalibrated) plus their cortical positions and
    layers, returned as ``(population, unit_xyz (n, 3) micrometres, unit_layer (n,) str)``."""
    n = config.n_units
    H, W = config.image_shape
    counts = _type_counts(config.type_fractions, n)
    unit_type = rng.permutation(np.repeat(np.array(config.cell_types, dtype=object), counts)).astype(str)
    full_turn = np.array([cell_type_of(t)[0].full_turn for t in unit_type])
    rotation = rng.uniform(0.0, np.pi, n) * np.where(full_turn, 2.0, 1.0)

    half = config.cortex_extent / 2
    cortex_xy = rng.uniform(-half, half, (n, 2))
    is_l23 = rng.uniform(size=n) < config.l23_fraction
    depth = np.where(is_l23, rng.uniform(100.0, 350.0, n), rng.uniform(350.0, 500.0, n))
    unit_xyz = np.column_stack([cortex_xy, depth]).astype(np.float32)
    unit_layer = np.where(is_l23, "L2/3", "L4")

    # Retinotopy: receptive fields follow cortical position (80% of the central region) with scatter.
    rf_x = _retinotopic(cortex_xy[:, 0], W, config.rf_region[1], config, rng)
    rf_y = _retinotopic(cortex_xy[:, 1], H, config.rf_region[0], config, rng)

    population = SimulatedPopulation(
        image_shape=(H, W),
        unit_type=unit_type,
        rotation=rotation,
        rf_x=rf_x,
        rf_y=rf_y,
        rf_size=rng.uniform(*config.rf_size, n) * np.array([cell_type_of(t)[1] for t in unit_type]),
        mean_rate=config.mean_rate * np.exp(config.mean_rate_spread * rng.standard_normal(n)),
        running_gain=config.running_gain[0] + config.running_gain[1] * rng.standard_normal(n),
        pupil_gain=config.pupil_gain[0] + config.pupil_gain[1] * rng.standard_normal(n),
        baseline=config.baseline,
        exponent=config.exponent,
    )
    # The variants draw last from the same stream, so that a config without them draws the same units
    # as the default population does for the same seed.
    _draw_variants(population, config, rng, full_turn)
    return population, unit_xyz, unit_layer


def _retinotopic(
    cortex: np.ndarray, extent: int, region_fraction: float, config: SimulationConfig, rng: np.random.Generator
) -> np.ndarray:
    """(n,) receptive-field centres along one image axis (pixels) for cortical positions ``cortex``
    (n,) micrometres along the same axis: a linear map onto 80% of the central region
    (``region_fraction`` of ``extent`` pixels), plus scatter, clipped to the region."""
    region = region_fraction * extent
    scatter = config.rf_scatter * rng.standard_normal(len(cortex))
    rf = extent / 2 + 0.8 * region * cortex / config.cortex_extent + scatter
    return np.clip(rf, (extent - region) / 2, (extent + region) / 2)


def _draw_variants(
    population: SimulatedPopulation, config: SimulationConfig, rng: np.random.Generator, full_turn: np.ndarray
) -> None:
    """Apply the harder variants' settings to ``population`` in place: cardinal-biased orientations,
    unrotated types and graded mixtures.  ``full_turn`` (n,) bool marks the units whose type a half
    turn changes."""
    n, unit_type = population.n_units, population.unit_type
    if config.orientation_bias > 0:
        theta = _cardinal_orientations(rng, n, config.orientation_bias)
        population.rotation = theta + np.where(full_turn & (rng.uniform(size=n) < 0.5), np.pi, 0.0)
    if config.unrotated_types:
        population.rotation[np.isin(unit_type, config.unrotated_types)] = 0.0
    if config.mixture_types:
        first, second = config.mixture_types
        pair = np.flatnonzero(np.isin(unit_type, config.mixture_types))
        share = rng.uniform(size=len(pair))  # weight of the second type; the unit is the type it leans to
        population.unit_type = unit_type.copy()
        population.unit_type[pair] = np.where(share < 0.5, first, second)
        population.mixture_type = np.full(n, "", dtype=object)
        population.mixture_type[pair] = np.where(share < 0.5, second, first)
        population.mixture_type = population.mixture_type.astype(str)
        population.mixture_weight = np.zeros(n)
        population.mixture_weight[pair] = np.minimum(share, 1 - share)


def _cardinal_orientations(rng: np.random.Generator, n: int, bias: float) -> np.ndarray:
    """(n,) orientations in [0, pi) with density ``(1 + bias cos(4 theta)) / pi``: peaks at the
    cardinal orientations 0 and pi/2, troughs at the obliques (rejection sampling)."""
    out = np.empty(0)
    while len(out) < n:
        theta = rng.uniform(0.0, np.pi, 2 * n)
        keep = rng.uniform(size=2 * n) * (1 + bias) < 1 + bias * np.cos(4 * theta)
        out = np.concatenate([out, theta[keep]])
    return out[:n]


def make_population(config: SimulationConfig | str | Mapping, seed: int, progress: bool = False) -> SimulatedPopulation:
    """The calibrated population that :func:`~pipeline.data.simulate.simulate` uses for this config and seed."""
    config = resolve_config(config)
    return calibrated_population(config, random_streams(seed), progress)[0]


def calibrated_population(
    config: SimulationConfig, streams: dict[str, np.random.Generator], progress: bool
) -> tuple[SimulatedPopulation, np.ndarray, np.ndarray]:
    """:func:`sample_population` from the ``population`` stream, calibrated on natural patches from
    the ``calibration`` stream; with the units' positions (n, 3) and layers (n,)."""
    population, unit_xyz, unit_layer = sample_population(config, streams["population"])
    calibration = sample_patches(
        config.calibration_images, config.image_shape, streams["calibration"], scale=config.patch_scale
    )
    population.calibrate(calibration, progress=progress)
    return population, unit_xyz, unit_layer


def simulate_behavior(
    config: SimulationConfig, n_trials: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Behaviour in time order: (n_trials, 3) pupil size (eye-camera pixels), its change since the
    previous trial, running speed (cm/s); and (n_trials, 2) pupil centre (eye-camera pixels)."""
    arousal, locomotion_drive, pupil_noise = _ar1(rng, n_trials, config.behavior_timescale, 3).T
    # Locomotion shares 60% of its variance with arousal; the animal sits still much of the time.
    locomotion = 0.77 * arousal + 0.63 * locomotion_drive
    speed = 6.0 * np.logaddexp(0.0, 4.0 * (locomotion - 0.3)) + np.abs(0.2 * rng.standard_normal(n_trials))
    pupil = 18.0 + 4.0 * arousal + 1.5 * np.tanh(speed / 10.0) + 0.7 * pupil_noise
    pupil += 0.3 * rng.standard_normal(n_trials)
    pupil = np.maximum(pupil, 4.0)
    dpupil = np.diff(pupil, prepend=pupil[0])
    eye = _ar1(rng, n_trials, config.eye_timescale, 2) * config.eye_std + np.asarray(config.eye_center)
    behavior = np.column_stack([pupil, dpupil, speed]).astype(np.float32)
    return behavior, eye.astype(np.float32)
