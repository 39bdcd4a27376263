"""Trial-to-trial noise of the simulated units (the model: see the package docstring, Noise): the
oracle correlation a noise level gives (:func:`expected_oracle_correlation`) and its inverse, the
per-unit noise chosen to reach a target reliability (:func:`unit_noise`), and the single-trial
responses (:func:`draw_responses`)."""

from __future__ import annotations

import dataclasses

import numpy as np

from pipeline.data.simulate.config import SimulationConfig
from pipeline.data.simulate.population import SimulatedPopulation


def expected_oracle_correlation(signal_var: np.ndarray, noise_var: np.ndarray, repeats: int) -> np.ndarray:
    """Large-sample correlation between single trials and the mean of the other ``repeats - 1``
    repeats of the same image, for across-image variance ``signal_var`` of the mean response and
    mean within-image variance ``noise_var``."""
    S, N = np.asarray(signal_var, float), np.asarray(noise_var, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = S / np.sqrt((S + N) * (S + N / (repeats - 1)))
    return np.nan_to_num(rho, nan=0.0)


def noise_for_oracle_correlation(signal_var: np.ndarray, rho: np.ndarray, repeats: int) -> np.ndarray:
    """The within-image variance ``N`` at which :func:`expected_oracle_correlation` equals ``rho``."""
    S, rho, m = np.asarray(signal_var, float), np.asarray(rho, float), repeats - 1
    # (S + N)(S + N/m) = S^2 / rho^2, a quadratic in N with one non-negative root.
    b = S * (1 + 1 / m)
    return m / 2 * (-b + np.sqrt(b * b + 4 / m * S * S * (1 / rho**2 - 1)))


@dataclasses.dataclass(frozen=True)
class UnitNoise:
    """Noise parameters of every unit, (n_units,) float64 each: the ``target`` oracle correlation
    drawn for it, the log-s.d. ``overdispersion`` of its multiplicative noise, the Gamma scale
    ``phi`` that reaches the target (floored at 1e-3 of the unit's mean rate), and the expected oracle
    correlation ``reliability`` that this ``phi`` gives."""

    target: np.ndarray
    overdispersion: np.ndarray
    phi: np.ndarray
    reliability: np.ndarray


def unit_noise(config: SimulationConfig, oracle_rates: np.ndarray, rng: np.random.Generator) -> UnitNoise:
    """Draw each unit's target reliability and overdispersion and choose its ``phi``.

    ``oracle_rates`` (n_test_images, n_states, n_units) float64 are the noise-free rates times gain of
    the test images under Monte-Carlo behaviour and eye states: their mean over states is the
    trial-averaged response of an image, and their spread adds to the trial-to-trial variance."""
    n_units: int = oracle_rates.shape[2]
    a, b = config.reliability_beta
    lo, hi = config.reliability_range
    target = lo + (hi - lo) * rng.beta(a, b, n_units)
    overdispersion = rng.uniform(*config.overdispersion, n_units)
    first = oracle_rates.mean(axis=1)  # E[mu | image]
    second = (oracle_rates**2).mean(axis=1)  # E[mu^2 | image]
    signal = first.var(axis=0)
    other_noise = (np.exp(overdispersion**2) * second - first**2).mean(axis=0)
    mean_mu = first.mean(axis=0)
    needed = noise_for_oracle_correlation(signal, target, config.test_repeats)
    phi = np.maximum((needed - other_noise) / mean_mu, 1e-3 * mean_mu)
    reliability = expected_oracle_correlation(signal, phi * mean_mu + other_noise, config.test_repeats)
    return UnitNoise(target=target, overdispersion=overdispersion, phi=phi, reliability=reliability)


def draw_responses(
    config: SimulationConfig,
    population: SimulatedPopulation,
    noise: UnitNoise,
    trial_rates: np.ndarray,
    behavior: np.ndarray,
    file_time: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Single-trial responses (n_trials, n_units) float32 in trial-file order.

    ``trial_rates`` (n_trials, n_units) are the noise-free rates before gain and ``behavior``
    (n_trials, 3) the behaviour, both in time order; trial file i holds time slot ``file_time[i]``.
    Trials are drawn in time order in chunks of 512 (to bound memory) and written straight to their
    trial files."""
    n_trials, n_units = len(trial_rates), population.n_units
    file_of_time = np.argsort(file_time)
    responses = np.empty((n_trials, n_units), np.float32)
    c = np.sqrt(config.shared_noise_fraction)
    overdispersion, phi = noise.overdispersion, noise.phi
    for start in range(0, n_trials, 512):
        t = slice(start, min(start + 512, n_trials))
        k = t.stop - t.start
        log_h = c * rng.standard_normal((k, 1)) + np.sqrt(1 - c * c) * rng.standard_normal((k, n_units))
        h = np.exp(overdispersion * log_h - overdispersion**2 / 2)
        mu = trial_rates[t] * population.gain(behavior[t]) * h
        responses[file_of_time[t]] = rng.gamma(mu / phi, phi)
    return responses
