"""A short simulated two-photon movie with ground truth, for testing the path movie -> suite2p -> scan.

:func:`simulate_movie` takes a simulated scan (:func:`pipeline.data.simulate.simulate`) and renders
its trials in time order as a calcium-imaging movie:

- every trial starts at an onset frame (``frames_per_trial`` apart); the unit's single-trial
  response of the scan is its activity in that trial, delivered ``latency_frames`` after the onset;
- calcium follows the activity through a double-exponential indicator kernel (``rise_s``,
  ``decay_s``), and fluorescence is ``brightness * (1 + dff_per_unit * calcium)``;
- each neuron is an elliptical Gaussian footprint placed without overlap in the field of view;
- the neuropil is a smooth spatial field whose brightness follows the mean population activity and
  a slow drift; a constant background is added; photon shot noise is Poisson with
  ``photons_per_unit`` photons per grey level;
- motion (optional) shifts whole frames by a random walk of whole pixels.

The result holds everything needed to check an extraction: footprints, the trial responses that
drove the movie and the noise-free rates of the scan.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
from scipy import ndimage, optimize

from pipeline.config import Config, ConfigError
from pipeline.data.recording import Recording
from pipeline.data.simulate import SimulationConfig, simulate


@dataclasses.dataclass(frozen=True)
class MovieConfig(Config):
    """Settings of a simulated movie (sizes in pixels, times in seconds)."""

    field_of_view: tuple[int, ...] = (96, 96)  # (Ly, Lx) pixels
    frame_rate: float = 8.0  # Hz
    frames_per_trial: int = 6
    latency_frames: int = 1  # activity starts this many frames after the onset
    rise_s: float = 0.05
    decay_s: float = 0.4
    cell_sigma: tuple[float, ...] = (1.8, 2.6)  # range of the footprints' Gaussian widths, pixels
    min_distance: float = 11.0  # pixels between neuron centres
    brightness: tuple[float, ...] = (150.0, 300.0)  # range of resting brightness at the footprint peak
    dff_per_unit: float = 1.0  # ΔF/F per unit of activity at the peak of the calcium kernel
    neuropil: float = 60.0  # mean neuropil brightness
    neuropil_activity: float = 0.3  # relative modulation of the neuropil by the mean activity
    background: float = 100.0
    photons_per_unit: float = 1.0  # photons per grey level (shot noise)
    motion_pixels: int = 0  # largest frame shift; 0 = no motion
    lead_frames: int = 16  # frames before the first and after the last trial

    def validate(self) -> None:
        if len(self.field_of_view) != 2 or min(self.field_of_view) < 16:
            raise ConfigError(f"field_of_view must be (Ly, Lx) >= 16 pixels, got {self.field_of_view}")
        for name in ("frame_rate", "rise_s", "decay_s", "min_distance", "photons_per_unit"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.frames_per_trial < 1 or self.latency_frames < 0 or self.lead_frames < 0 or self.motion_pixels < 0:
            raise ConfigError("frames_per_trial must be >= 1; latency_frames, lead_frames, motion_pixels >= 0")
        if self.latency_frames >= self.frames_per_trial:
            raise ConfigError("latency_frames must be below frames_per_trial")


MOVIE_SIMULATION = SimulationConfig(
    n_units=30, n_single_images=200, n_test_images=10, test_repeats=5, calibration_images=200
)
"""The scan behind the default movie: 250 trials of 30 units (a 1,530-frame movie at 8 Hz)."""


@dataclasses.dataclass
class MovieSimulation:
    """A rendered movie and its ground truth.

    Attributes
    ----------
    movie : (n_frames, Ly, Lx) uint16 photon counts.
    frame_rate : Hz.
    onset_frames : (n_trials,) int64, onset frame of each trial, in the scan's trial-file order.
    recording : the simulated scan (trial-file order); ``recording.responses`` (n_trials, n_units)
        are the activities that drove the movie, ``recording.ground_truth.rates`` the noise-free rates.
    footprints : (n_units, Ly, Lx) float32, spatial weight of each neuron (peak 1).
    centres : (n_units, 2) float64, (y, x) pixel centre of each neuron.
    activity : (n_units, n_frames) float32, activity per frame (the responses at their frames).
    behavior_frames : per-frame arrays ``pupil_size``, ``running_speed``, ``pupil_x``, ``pupil_y``
        (n_frames,) float32: each trial's values held over its frames.
    shifts : (n_frames, 2) int, (dy, dx) motion of each frame.
    """

    movie: np.ndarray
    frame_rate: float
    onset_frames: np.ndarray
    recording: Recording
    footprints: np.ndarray
    centres: np.ndarray
    activity: np.ndarray
    behavior_frames: dict[str, np.ndarray]
    shifts: np.ndarray

    @property
    def n_frames(self) -> int:
        return len(self.movie)


def calcium_kernel(frame_rate: float, rise_s: float, decay_s: float) -> np.ndarray:
    """(k,) double-exponential indicator kernel sampled at ``frame_rate``, peak 1."""
    t = np.arange(int(np.ceil(6 * decay_s * frame_rate)) + 1) / frame_rate
    kernel = np.exp(-t / decay_s) - np.exp(-t / rise_s)
    return kernel / kernel.max()


def _place_centres(
    n: int, shape: tuple[int, int], min_distance: float, margin: float, rng: np.random.Generator
) -> np.ndarray:
    centres: list[np.ndarray] = []
    for _ in range(200 * n):
        candidate = rng.uniform(margin, np.array(shape) - margin)
        if all(np.hypot(*(candidate - c)) >= min_distance for c in centres):
            centres.append(candidate)
            if len(centres) == n:
                return np.array(centres)
    raise ConfigError(f"cannot place {n} neurons {min_distance} pixels apart in a {shape} field of view")


def _footprints(
    centres: np.ndarray, shape: tuple[int, int], sigma: tuple[float, float], rng: np.random.Generator
) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    out = np.zeros((len(centres), *shape), np.float32)
    for n, (cy, cx) in enumerate(centres):
        sy, sx = rng.uniform(*sigma, 2)
        angle = rng.uniform(0, np.pi)
        dy, dx = yy - cy, xx - cx
        u = np.cos(angle) * dx + np.sin(angle) * dy
        v = -np.sin(angle) * dx + np.cos(angle) * dy
        weight = np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2))
        weight[weight < np.exp(-0.5 * 2.5**2)] = 0  # truncate at 2.5 sigma: a compact soma
        out[n] = weight
    return out


def simulate_movie(
    movie_config: MovieConfig | None = None, simulation: SimulationConfig | str | None = None, seed: int = 0
) -> MovieSimulation:
    """Render a simulated scan as a two-photon movie (see the module docstring); deterministic in ``seed``."""
    config = movie_config or MovieConfig()
    recording = simulate(simulation or MOVIE_SIMULATION, seed=seed)
    rng = np.random.default_rng([seed, 7])
    shape = int(config.field_of_view[0]), int(config.field_of_view[1])
    n_trials, n_units = recording.n_trials, recording.n_units

    time_order = np.argsort(recording.trial_idx, kind="stable")
    onsets_time = config.lead_frames + config.frames_per_trial * np.arange(n_trials)
    onset_frames = np.empty(n_trials, np.int64)
    onset_frames[time_order] = onsets_time
    n_frames = int(onsets_time[-1] + config.frames_per_trial + config.lead_frames)

    activity = np.zeros((n_units, n_frames), np.float32)
    activity[:, onset_frames + config.latency_frames] = recording.responses.T
    kernel = calcium_kernel(config.frame_rate, config.rise_s, config.decay_s)
    calcium = np.stack([np.convolve(a, kernel)[:n_frames] for a in activity])

    centres = _place_centres(n_units, shape, config.min_distance, margin=8.0, rng=rng)
    footprints = _footprints(centres, shape, (config.cell_sigma[0], config.cell_sigma[1]), rng)
    brightness = rng.uniform(config.brightness[0], config.brightness[1], n_units)
    fluorescence = brightness[:, None] * (1 + config.dff_per_unit * calcium)  # (n_units, n_frames)

    neuropil_map = ndimage.gaussian_filter(rng.standard_normal(shape), 12.0)
    neuropil_map = 1 + 0.5 * neuropil_map / (np.abs(neuropil_map).max() + 1e-12)
    drift = 1 + 0.1 * np.sin(2 * np.pi * np.arange(n_frames) / max(n_frames, 1) + rng.uniform(0, 2 * np.pi))
    mean_calcium = calcium.mean(axis=0)
    neuropil_trace = (
        config.neuropil * drift * (1 + config.neuropil_activity * mean_calcium / (mean_calcium.mean() + 1e-12))
    )

    movie, shifts = _render(config, fluorescence, footprints, neuropil_trace, neuropil_map, rng)
    return MovieSimulation(
        movie=movie,
        frame_rate=config.frame_rate,
        onset_frames=onset_frames,
        recording=recording,
        footprints=footprints,
        centres=centres,
        activity=activity,
        behavior_frames=_behavior_frames(recording, onsets_time, time_order, n_frames),
        shifts=shifts,
    )


def _render(
    config: MovieConfig,
    fluorescence: np.ndarray,
    footprints: np.ndarray,
    neuropil_trace: np.ndarray,
    neuropil_map: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """The movie (n_frames, Ly, Lx) uint16 and its frame shifts (n_frames, 2) pixels: the units'
    ``fluorescence`` (n_units, n_frames) through their ``footprints`` (n_units, Ly, Lx), plus the
    background and the neuropil (``neuropil_trace`` (n_frames,) times ``neuropil_map`` (Ly, Lx)),
    shifted by the motion walk, with Poisson shot noise; rendered in blocks of 256 frames."""
    n_units, n_frames = fluorescence.shape
    shape = footprints.shape[1:]
    flat = footprints.reshape(n_units, -1)
    movie = np.empty((n_frames, *shape), np.uint16)
    shifts = np.zeros((n_frames, 2), int)
    if config.motion_pixels:
        walk = np.cumsum(rng.integers(-1, 2, (n_frames, 2)), axis=0)
        shifts = np.clip(walk, -config.motion_pixels, config.motion_pixels)
    for start in range(0, n_frames, 256):
        stop = min(start + 256, n_frames)
        frames = (fluorescence[:, start:stop].T @ flat).reshape(stop - start, *shape)
        frames += config.background + neuropil_trace[start:stop, None, None] * neuropil_map
        for i, (dy, dx) in enumerate(shifts[start:stop]):
            if dy or dx:
                frames[i] = np.roll(frames[i], (dy, dx), axis=(0, 1))
        photons = rng.poisson(frames * config.photons_per_unit) / config.photons_per_unit
        movie[start:stop] = np.clip(np.round(photons), 0, np.iinfo(np.uint16).max)
    return movie, shifts


def _behavior_frames(
    recording: Recording, onsets_time: np.ndarray, time_order: np.ndarray, n_frames: int
) -> dict[str, np.ndarray]:
    """Per-frame (n_frames,) float32 pupil size, running speed and pupil position: each frame takes
    the values of the trial running at it (``onsets_time`` (n_trials,) onset frames in time order,
    ``time_order`` the trial file of each time slot)."""
    n_trials = len(onsets_time)
    trial_of_frame = np.clip(np.searchsorted(onsets_time, np.arange(n_frames), side="right") - 1, 0, n_trials - 1)
    trial_file = time_order[trial_of_frame]
    behavior_frames = {}
    for name, values in (
        ("pupil_size", recording.behavior[:, 0]),
        ("running_speed", recording.behavior[:, 2]),
        ("pupil_x", recording.pupil_center[:, 0]),
        ("pupil_y", recording.pupil_center[:, 1]),
    ):
        behavior_frames[name] = np.asarray(values, np.float32)[trial_file]
    return behavior_frames


def write_movie_folder(sim: MovieSimulation, out: str | Path) -> dict[str, Path]:
    """Write a simulated movie as a lab would have it: the movie, its stimulus table, images, behaviour.

    Files (in ``out``, which is created)::

        movie.tif       (n_frames, Ly, Lx) uint16, the input of suite2p
        stimuli.csv     one row per trial in time order: onset_frame, image_id, tier, trial_idx
        images.npz      images (n_images, H, W) uint8 and image_ids (n_images,)
        behavior.npz    per-frame pupil_size, running_speed, pupil_x, pupil_y (n_frames,)
        truth.npz       footprints, centres, onset_frames, responses (n_trials, n_units) in the row
                        order of stimuli.csv, rates (n_images, n_units), image_ids

    Returns the paths by name (``movie``, ``stimuli``, ``images``, ``behavior``, ``truth``).
    """
    import tifffile  # a suite2p dependency: only needed where suite2p is installed

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    recording = sim.recording
    order = np.argsort(sim.onset_frames, kind="stable")
    paths = {
        name: out / file
        for name, file in (
            ("movie", "movie.tif"),
            ("stimuli", "stimuli.csv"),
            ("images", "images.npz"),
            ("behavior", "behavior.npz"),
            ("truth", "truth.npz"),
        )
    }
    tifffile.imwrite(paths["movie"], sim.movie)
    with open(paths["stimuli"], "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["onset_frame", "image_id", "tier", "trial_idx"])
        for t in order:
            writer.writerow(
                [
                    int(sim.onset_frames[t]),
                    int(recording.trial_image_ids[t]),
                    str(recording.tiers[t]),
                    int(recording.trial_idx[t]),
                ]
            )
    np.savez(paths["images"], images=recording.images, image_ids=recording.image_ids)
    np.savez(paths["behavior"], **sim.behavior_frames)  # type: ignore[arg-type]  # numpy stubs take no **arrays
    truth = recording.ground_truth
    if truth is None:
        raise ValueError("write_movie_folder: the recording has no ground truth (not simulated)")
    np.savez(
        paths["truth"],
        footprints=sim.footprints,
        centres=sim.centres,
        onset_frames=sim.onset_frames[order],
        responses=recording.responses[order],
        rates=truth.rates,
        image_ids=recording.image_ids,
        frame_rate=np.array(sim.frame_rate),
    )
    return paths


def match_rois(
    true_footprints: np.ndarray,
    roi_pixels: list[np.ndarray],
    shape: tuple[int, int],
    min_iou: float = 0.3,
    threshold: float = 0.2,
) -> tuple[np.ndarray, np.ndarray]:
    """Match detected ROIs to simulated neurons by footprint overlap (one-to-one, Hungarian).

    Parameters
    ----------
    true_footprints : (n_units, Ly, Lx) simulated weights; a neuron's pixels are those above
        ``threshold`` of its peak.
    roi_pixels : per ROI, (k, 2) int (y, x) pixel coordinates of its footprint.
    min_iou : pairs overlapping less (intersection over union) are not matched.

    Returns
    -------
    (n_units,) int index of the matched ROI or -1, and (n_units,) float IoU of the match (0 if none).
    """
    n_units = len(true_footprints)
    truth = true_footprints.reshape(n_units, -1) >= threshold * true_footprints.reshape(n_units, -1).max(
        1, keepdims=True
    )
    rois = np.zeros((len(roi_pixels), shape[0] * shape[1]), bool)
    for r, yx in enumerate(roi_pixels):
        rois[r, np.ravel_multi_index((yx[:, 0], yx[:, 1]), shape)] = True
    inter = truth.astype(np.float64) @ rois.T.astype(np.float64)
    union = truth.sum(1)[:, None] + rois.sum(1)[None, :] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    match = np.full(n_units, -1)
    score = np.zeros(n_units)
    if len(roi_pixels):
        rows, cols = optimize.linear_sum_assignment(-iou)
        keep = iou[rows, cols] >= min_iou
        match[rows[keep]], score[rows[keep]] = cols[keep], iou[rows[keep], cols[keep]]
    return match, score
