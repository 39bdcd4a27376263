"""Trial responses from imaging traces: the window extraction shared by the suite2p and NWB importers.

An importer reads its source into :class:`Traces` (per-ROI fluorescence, neuropil and deconvolved
activity on one frame clock, with each ROI's footprint) and a :class:`Schedule` (onset frame, image
and tier of each trial, the images, behaviour per frame).  :func:`extract` turns the pair into a
:class:`~pipeline.data.recording.Recording` under an :class:`ExtractionConfig`: the cells kept (by
classifier probability), the signal (ΔF/F with neuropil subtraction, or deconvolved activity) and
the response window after each onset.  The config has a canonical hash, so that two extractions of
one movie are two entries that coexist.

Every problem with the input raises :class:`InputError` naming the file and the field.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Literal

import numpy as np
from scipy import ndimage

from pipeline.config import Config, ConfigError
from pipeline.data.recording import TIERS, Recording, RecordingError


class InputError(ValueError):
    """An imaging input (suite2p folder, stimulus table, NWB file) is unusable.

    Attributes: ``file`` (path as given), ``field`` (array, column or NWB object), ``problem``.
    """

    def __init__(self, file: str | os.PathLike, field: str, problem: str):
        self.file, self.field, self.problem = str(file), field, problem
        super().__init__(f"{file}: {field}: {problem}")


@dataclasses.dataclass(frozen=True)
class ExtractionConfig(Config):
    """How trial responses are computed from traces.

    signal : ``"spikes"`` (deconvolved activity as the source computed it) or ``"dff"``
        (``(F - c * Fneu - F0) / F0`` with ``F0`` a sliding max-of-min baseline of the corrected trace).
    neuropil_coefficient : ``c`` above.  Deconvolved activity already has the source's coefficient
        baked in, so with ``"spikes"`` it must equal the source's (suite2p ``ops['neucoeff']``).
    iscell_threshold : ROIs whose classifier probability is below this are not units.
    window_s : (start, end) seconds after each onset; the response is the mean over the frames whose
        time since onset lies in [start, end).
    baseline_window_s, baseline_sigma_s : the ΔF/F baseline: Gaussian smoothing of ``baseline_sigma_s``,
        then a minimum and a maximum filter over ``baseline_window_s`` (suite2p's "maximin").
    """

    signal: Literal["spikes", "dff"] = "spikes"
    neuropil_coefficient: float = 0.7
    iscell_threshold: float = 0.5
    window_s: tuple[float, ...] = (0.0, 0.5)
    baseline_window_s: float = 60.0
    baseline_sigma_s: float = 1.0

    def validate(self) -> None:
        if len(self.window_s) != 2 or not 0 <= self.window_s[0] < self.window_s[1]:
            raise ConfigError(f"window_s must be (start, end) with 0 <= start < end seconds, got {self.window_s}")
        if not 0 <= self.neuropil_coefficient <= 1.5:
            raise ConfigError(f"neuropil_coefficient must be in [0, 1.5], got {self.neuropil_coefficient}")
        if not 0 <= self.iscell_threshold <= 1:
            raise ConfigError(f"iscell_threshold must be in [0, 1], got {self.iscell_threshold}")
        if self.baseline_window_s <= 0 or self.baseline_sigma_s < 0:
            raise ConfigError("baseline_window_s must be > 0 and baseline_sigma_s >= 0")


@dataclasses.dataclass
class Footprints:
    """Spatial footprints of ROIs.

    plane : (n,) int, imaging plane of each ROI.
    roi : (n,) int, the ROI's index in its source (suite2p ``stat.npy`` row, NWB plane-segmentation row).
    centre : (n, 2) float64, (y, x) centre in pixels of the plane.
    pixels : list of n (k, 3) float32 arrays, rows (y, x, weight).
    iscell : (n,) float64, classifier probability of being a cell (1 where the source has none).
    """

    plane: np.ndarray
    roi: np.ndarray
    centre: np.ndarray
    pixels: list[np.ndarray]
    iscell: np.ndarray

    def __len__(self) -> int:
        return len(self.roi)

    def subset(self, keep: np.ndarray) -> "Footprints":
        idx = np.flatnonzero(keep) if np.asarray(keep).dtype == bool else np.asarray(keep)
        return Footprints(
            self.plane[idx], self.roi[idx], self.centre[idx], [self.pixels[i] for i in idx], self.iscell[idx]
        )


@dataclasses.dataclass
class Traces:
    """Per-ROI time series on one frame clock.

    fluorescence, neuropil, spikes : (n_rois, n_frames) float arrays; ``neuropil`` and ``spikes``
        may be None when the source lacks them; ``dff`` (n_rois, n_frames) when the source holds ΔF/F
        directly (then ``fluorescence`` may be None).
    frame_rate : Hz.
    footprints : one entry per ROI.
    neuropil_coefficient : the coefficient the source's deconvolution used, when known.
    file : the source, for messages.
    """

    footprints: Footprints
    frame_rate: float
    fluorescence: np.ndarray | None = None
    neuropil: np.ndarray | None = None
    spikes: np.ndarray | None = None
    dff: np.ndarray | None = None
    neuropil_coefficient: float | None = None
    file: str = ""
    names: dict[str, str] = dataclasses.field(default_factory=dict)  # field -> name in the source, for messages

    @property
    def n_frames(self) -> int:
        for array in (self.fluorescence, self.dff, self.spikes):
            if array is not None:
                return array.shape[1]
        return 0


@dataclasses.dataclass
class Schedule:
    """The stimulus schedule of one movie.

    onset_frame : (n_trials,) int64, frame of each trial's onset (one row per trial; the row order
        becomes the trial-file order of the scan).
    image_id : (n_trials,) int64; tier : (n_trials,) str; trial_idx : (n_trials,) int64.
    images : (n_images, H, W); image_ids : (n_images,) int64.
    behavior : per-frame (n_frames,) arrays by name among ``pupil_size``, ``running_speed``,
        ``pupil_x``, ``pupil_y``; absent ones are zero in the scan and marked withheld.
    files : field -> file it came from, for messages.
    """

    onset_frame: np.ndarray
    image_id: np.ndarray
    tier: np.ndarray
    trial_idx: np.ndarray
    images: np.ndarray
    image_ids: np.ndarray
    behavior: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    files: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def n_trials(self) -> int:
        return len(self.onset_frame)


BEHAVIOR_NAMES = ("pupil_size", "running_speed", "pupil_x", "pupil_y")


def check_schedule(
    schedule: Schedule, n_frames: int, frame_rate: float, config: ExtractionConfig, traces_file: str = "traces"
) -> tuple[int, int]:
    """Check a schedule against a movie of ``n_frames``; returns the window as (first, stop) frame offsets."""
    table = schedule.files.get("onset_frame", "stimulus table")
    first = int(np.ceil(config.window_s[0] * frame_rate - 1e-9))
    stop = int(np.ceil(config.window_s[1] * frame_rate - 1e-9))
    if stop <= first:
        raise InputError(table, "window_s", f"window {config.window_s} s holds no frame at {frame_rate} Hz")
    onsets = schedule.onset_frame
    if len(onsets) == 0:
        raise InputError(table, "onset_frame", "no trials")
    if onsets.min() < 0:
        raise InputError(table, "onset_frame", f"negative onset frame {int(onsets.min())}")
    beyond = np.flatnonzero(onsets + stop > n_frames)
    if beyond.size:
        t = int(beyond[0])
        raise InputError(
            table,
            "onset_frame",
            f"row {t}: onset {int(onsets[t])} with its window of {stop} frames "
            f"ends beyond the movie ({n_frames} frames in {traces_file}); {beyond.size} such trial(s)",
        )
    for name, values in schedule.behavior.items():
        if len(values) != n_frames:
            raise InputError(
                schedule.files.get(name, "behaviour"),
                name,
                f"{len(values)} frames, but {traces_file} has {n_frames} (mismatched frame counts)",
            )
    unknown = sorted(set(map(str, schedule.tier)) - set(TIERS))
    if unknown:
        raise InputError(
            schedule.files.get("tier", table), "tier", f"unknown tier(s) {unknown}; expected {list(TIERS)}"
        )
    missing = np.setdiff1d(schedule.image_id, schedule.image_ids)
    if missing.size:
        raise InputError(
            schedule.files.get("image_id", table),
            "image_id",
            f"{missing.size} image id(s) without an image, e.g. {int(missing[0])}",
        )
    return first, stop


def maximin_baseline(traces: np.ndarray, frame_rate: float, window_s: float, sigma_s: float) -> np.ndarray:
    """(n, T) sliding baseline: Gaussian smoothing, then min and max filters over ``window_s``."""
    smooth = ndimage.gaussian_filter1d(traces, sigma_s * frame_rate, axis=1) if sigma_s > 0 else traces
    size = max(int(round(window_s * frame_rate)), 1)
    return ndimage.maximum_filter1d(ndimage.minimum_filter1d(smooth, size, axis=1), size, axis=1)


def signal(traces: Traces, config: ExtractionConfig) -> np.ndarray:
    """(n_rois, n_frames) float32 trace of the configured signal."""
    if config.signal == "spikes":
        if traces.spikes is None:
            raise InputError(traces.file, traces.names.get("spikes", "spikes"), "no deconvolved activity in the source")
        known = traces.neuropil_coefficient
        if known is not None and abs(known - config.neuropil_coefficient) > 1e-9:
            raise InputError(
                traces.file,
                "neucoeff",
                f"deconvolved activity was computed with neuropil coefficient "
                f"{known}; extraction config asks for {config.neuropil_coefficient} (use signal 'dff')",
            )
        return np.asarray(traces.spikes, np.float32)
    if traces.dff is not None:
        return np.asarray(traces.dff, np.float32)
    if traces.fluorescence is None:
        raise InputError(traces.file, traces.names.get("fluorescence", "fluorescence"), "no fluorescence in the source")
    corrected = np.asarray(traces.fluorescence, np.float64)
    if traces.neuropil is not None:
        corrected = corrected - config.neuropil_coefficient * np.asarray(traces.neuropil, np.float64)
    baseline = maximin_baseline(corrected, traces.frame_rate, config.baseline_window_s, config.baseline_sigma_s)
    # A neuropil-corrected baseline can come near zero (bright neuropil, dim cell); dividing by it would
    # blow up the ΔF/F, so it is floored at 10% of the ROI's mean raw fluorescence.
    floor = 0.1 * np.abs(np.asarray(traces.fluorescence, np.float64)).mean(axis=1, keepdims=True) + 1e-12
    return ((corrected - baseline) / np.maximum(baseline, floor)).astype(np.float32)


def window_means(trace: np.ndarray, onsets: np.ndarray, first: int, stop: int) -> np.ndarray:
    """(n_trials, n) mean of ``trace`` (n, T) over frames ``onset + first .. onset + stop - 1``."""
    frames = onsets[:, None] + np.arange(first, stop)[None, :]
    return np.asarray(trace, np.float64)[..., frames].mean(axis=-1).T.astype(np.float32)


def trial_behavior(schedule: Schedule, first: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Behaviour (n_trials, 3) = pupil size, its change since the previous trial in time, running
    speed; and pupil centre (n_trials, 2): the means of the schedule's per-frame behaviour over each
    trial's response window (frames ``onset + first .. onset + stop - 1``); zeros where missing."""
    n_trials = schedule.n_trials
    per_trial = {
        name: window_means(values[None].astype(np.float64), schedule.onset_frame, first, stop)[:, 0]
        for name, values in schedule.behavior.items()
    }
    zeros = np.zeros(n_trials, np.float32)
    pupil = per_trial.get("pupil_size", zeros)
    time_order = np.argsort(schedule.onset_frame, kind="stable")
    change = np.zeros(n_trials, np.float32)
    change[time_order] = np.diff(pupil[time_order], prepend=pupil[time_order][:1])
    behavior = np.stack([pupil, change, per_trial.get("running_speed", zeros)], 1).astype(np.float32)
    pupil_center = np.stack([per_trial.get("pupil_x", zeros), per_trial.get("pupil_y", zeros)], 1).astype(np.float32)
    return behavior, pupil_center


def unit_coordinates(footprints: Footprints, um_per_pixel: float, plane_depths_um: tuple[float, ...]) -> np.ndarray:
    """(n_units, 3) float32 micrometres: x, y from the ROI centre, z the depth of its plane (the last
    depth for higher planes)."""
    depths = np.asarray(plane_depths_um, np.float64)
    z = depths[np.minimum(footprints.plane, len(depths) - 1)]
    xyz = np.column_stack([footprints.centre[:, 1] * um_per_pixel, footprints.centre[:, 0] * um_per_pixel, z])
    return xyz.astype(np.float32)


def extract(
    traces: Traces,
    schedule: Schedule,
    config: ExtractionConfig,
    scan: dict[str, int],
    um_per_pixel: float = 1.0,
    plane_depths_um: tuple[float, ...] = (0.0,),
    area: str = "unknown",
    layer: str = "unknown",
    source: str = "",
) -> tuple[Recording, Footprints]:
    """Build a scan from traces and a schedule.

    Parameters
    ----------
    scan : ``{animal_id, session, scan_idx}`` of the new scan.
    um_per_pixel, plane_depths_um : unit coordinates in micrometres: x, y from the ROI centre, z the
        depth of its plane (the last depth is used for higher planes).
    area, layer : brain area and cortical layer written for every unit.

    Returns
    -------
    The validated recording (units are the kept ROIs, unit id ``plane * 100000 + roi``) and the kept
    ROIs' footprints, in unit order.
    """
    n_frames = traces.n_frames
    first, stop = check_schedule(schedule, n_frames, traces.frame_rate, config, traces.file)
    keep = traces.footprints.iscell >= config.iscell_threshold
    if not keep.any():
        raise InputError(
            traces.file,
            traces.names.get("iscell", "iscell"),
            f"no ROI reaches the iscell threshold {config.iscell_threshold}",
        )
    trace = signal(traces, config)[keep]
    footprints = traces.footprints.subset(keep)
    responses = window_means(trace, schedule.onset_frame, first, stop)
    behavior, pupil_center = trial_behavior(schedule, first, stop)
    n_trials = schedule.n_trials
    extra = {"onset_frame": schedule.onset_frame.astype(np.int64)}
    if not all(name in schedule.behavior for name in BEHAVIOR_NAMES):
        extra["behavior_withheld"] = np.ones(n_trials, bool)
    xyz = unit_coordinates(footprints, um_per_pixel, plane_depths_um)
    n_units = len(footprints)
    recording = Recording(
        animal_id=scan["animal_id"],
        session=scan["session"],
        scan_idx=scan["scan_idx"],
        images=schedule.images,
        image_ids=schedule.image_ids.astype(np.int64),
        trial_idx=schedule.trial_idx.astype(np.int64),
        trial_image_ids=schedule.image_id.astype(np.int64),
        tiers=np.asarray(schedule.tier).astype(str),
        responses=responses,
        withheld=np.zeros(n_trials, bool),
        behavior=behavior,
        pupil_center=pupil_center,
        unit_ids=(footprints.plane.astype(np.int64) * 100000 + footprints.roi.astype(np.int64)),
        unit_area=np.full(n_units, area),
        unit_layer=np.full(n_units, layer),
        unit_xyz=xyz,
        frame_rate=float(traces.frame_rate),
        extra_trial_arrays=extra,
        source=source,
    )
    try:
        return recording.validate(), footprints
    except RecordingError as e:
        raise InputError(traces.file, "recording", str(e)) from None
