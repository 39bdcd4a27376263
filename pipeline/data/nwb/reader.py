"""Reading one scan from an NWB file (:func:`read_nwb`): a per-trial layout (as
:func:`~pipeline.data.nwb.write_nwb` writes it) directly, a frame-sampled one through the window
extraction (:func:`pipeline.data.extraction.extract`)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.extraction import ExtractionConfig, Footprints, InputError, Schedule, extract
from pipeline.data.limits import Budget
from pipeline.data.nwb.hdf5 import charge, open_hdf5, reading
from pipeline.data.nwb.layout import FIXED_COLUMNS, IMAGE_ID_COLUMNS
from pipeline.data.nwb.sources import (
    find_timeseries,
    imaging_area,
    is_per_trial,
    numeric,
    roi_response_series,
    roi_traces,
    scan_identity,
    segmentation,
    stimulus_images,
    timestamps,
    trials_table,
)
from pipeline.data.recording import Recording, RecordingError


@dataclasses.dataclass(frozen=True)
class _Trials:
    """The trials of a file, each (n_trials,) in table-row order: ``starts`` (s), ``image_id``,
    ``tier`` and ``trial_idx``; ``rows`` (n_trials,) is the table row of each trial file."""

    table: Any  # the pynwb table
    name: str  # its name in the file, for messages
    starts: np.ndarray
    image_id: np.ndarray
    tier: np.ndarray
    trial_idx: np.ndarray
    rows: np.ndarray


def read_nwb(
    path: str | Path,
    config: ExtractionConfig | None = None,
    scan: dict[str, int] | None = None,
    budget: Budget | None = None,
) -> tuple[Recording, Footprints, dict]:
    """Read one scan from an NWB file.

    Parameters
    ----------
    config : window extraction for frame-sampled traces (ignored for per-trial series).
    scan : identity of the scan; default from ``session_id`` written ``animal-session-scan``.
    budget : the import's limits (default: the machine's); every dataset's declared size is charged
        before it is read, and the file is refused first when it reaches outside itself
        (:func:`~pipeline.data.nwb.hdf5.open_hdf5`) or declares more than the expansion limit.

    Returns
    -------
    (recording, footprints of the units, info) with info ``layout`` ('trials' or 'frames'),
    ``n_frames`` and ``n_rois`` of the source.
    """
    from pynwb import NWBHDF5IO

    path = Path(path)
    if not path.exists():
        raise InputError(path, "file", "no such file")
    config = config or ExtractionConfig()
    budget = budget or Budget()
    file = open_hdf5(path, budget)
    try:
        io = NWBHDF5IO(file=file, mode="r")
        nwb = io.read()
    except Exception as e:  # h5py and hdmf raise many types for a file that is not NWB
        file.close()
        raise InputError(
            path, "file", f"not a readable NWB file ({type(e).__name__}: {' '.join(str(e).split())[:200]})"
        ) from None
    try:
        with reading(path, budget):
            return _read(nwb, path, config, scan)
    finally:
        io.close()
        file.close()


def _read(nwb, path: Path, config: ExtractionConfig, scan: dict | None) -> tuple[Recording, Footprints, dict]:
    if "ophys" not in nwb.processing:
        raise InputError(path, "processing/ophys", "missing: no optical physiology (RoiResponseSeries) in the file")
    ophys = nwb.processing["ophys"]
    series = roi_response_series(ophys, ("DfOverF", "Fluorescence"))
    if not series:
        raise InputError(path, "processing/ophys", "no RoiResponseSeries in a DfOverF or Fluorescence container")
    trials, images, image_ids = _trials_and_images(nwb, path)
    key = scan_identity(nwb, path, scan)
    units, footprints = segmentation(ophys, path, series[0])
    per_trial = [s for s in series if is_per_trial(s, trials.starts)]
    if per_trial:
        recording = _read_trials(nwb, path, per_trial[0], trials, images, image_ids, units, key)
        info = dict(layout="trials", n_frames=0, n_rois=len(footprints))
        try:
            info.update(json.loads(per_trial[0].comments)["extraction"])
        except (ValueError, KeyError, TypeError):
            pass
        return recording, footprints, info
    traces = roi_traces(series, path, footprints)
    schedule = _schedule(nwb, path, timestamps(series[0]), trials, images, image_ids)
    recording, kept = extract(traces, schedule, config, key, area=imaging_area(ophys), source=f"nwb:{path.name}")
    return recording, kept, dict(layout="frames", n_frames=traces.n_frames, n_rois=len(footprints))


def _trials_and_images(nwb, path: Path) -> tuple[_Trials, np.ndarray, np.ndarray]:
    """The trials table's columns, and the stimulus images (n_images, H, W) with their ids.

    A table without tiers (public data carries no split) gets repeated images as the test set and
    every tenth image id of the rest as validation; without ``trial_idx`` the trials are numbered by
    start time, and without ``file_index`` the table rows are the trial files."""
    table, table_name = trials_table(nwb, path)
    columns = set(table.colnames)
    for column in columns:
        charge(table[column], f"{table_name}.{column}")
    id_column = next((c for c in IMAGE_ID_COLUMNS if c in columns), None)
    if id_column is None:
        raise InputError(path, table_name, f"no image-id column (one of {list(IMAGE_ID_COLUMNS)})")
    starts = numeric(path, f"{table_name}.start_time", table["start_time"], "f")
    image_id = numeric(path, f"{table_name}.{id_column}", table[id_column], "iu").astype(np.int64)
    n_trials = len(starts)
    images, image_ids = stimulus_images(nwb, path)
    if "tier" in columns:
        tier = np.asarray([str(v) for v in table["tier"][:]])
    else:
        counts = dict(zip(*np.unique(image_id, return_counts=True)))
        tier = np.array(["test" if counts[i] > 1 else ("validation" if i % 10 == 0 else "train") for i in image_id])
    trial_idx = (
        np.asarray(table["trial_idx"][:]) if "trial_idx" in columns else np.argsort(np.argsort(starts, kind="stable"))
    )
    file_index = np.asarray(table["file_index"][:]) if "file_index" in columns else np.arange(n_trials)
    if sorted(file_index.tolist()) != list(range(n_trials)):
        raise InputError(path, f"{table_name}.file_index", "not a permutation of the trial rows")
    rows = np.argsort(file_index)  # table row of each trial file
    trials = _Trials(table, table_name, starts, image_id, tier, np.asarray(trial_idx), rows)
    return trials, images, image_ids


def _schedule(
    nwb, path: Path, frame_times: np.ndarray, trials: _Trials, images: np.ndarray, image_ids: np.ndarray
) -> Schedule:
    """The trials of a frame-sampled file as an extraction schedule: each trial's onset is the first
    frame at its start time, and the behaviour series found are interpolated to the ``frame_times``
    (n_frames,) s."""
    rows = trials.rows
    onset_frame = np.searchsorted(frame_times, trials.starts[rows] - 1e-9)
    return Schedule(
        onset_frame=onset_frame.astype(np.int64),
        image_id=trials.image_id[rows],
        tier=trials.tier[rows],
        trial_idx=trials.trial_idx[rows].astype(np.int64),
        images=images,
        image_ids=image_ids,
        behavior=_frame_behavior(nwb, path, frame_times),
        files={"onset_frame": f"{path} {trials.name}.start_time"},
    )


def _frame_behavior(nwb, path: Path, frame_times: np.ndarray) -> dict[str, np.ndarray]:
    """Running speed, pupil size and pupil position (``pupil_x``, ``pupil_y``) at ``frame_times``
    (n_frames,), each where the file has a matching series."""
    behavior = {}
    for name, patterns in (
        ("running_speed", ("running", "speed")),
        ("pupil_size", ("pupil_area", "pupil_size", "pupil")),
    ):
        found = find_timeseries(nwb, patterns)
        if found is not None:
            values = numeric(path, found.name, found.data, "iuf").astype(np.float64).reshape(len(found.data), -1)[:, 0]
            behavior[name] = np.interp(frame_times, timestamps(found), values)
    eye = find_timeseries(nwb, ("pupil_center", "pupil_position", "eye_position"))
    if eye is not None and np.ndim(eye.data) == 2 and eye.data.shape[1] >= 2:
        values = numeric(path, eye.name, eye.data, "iuf").astype(np.float64)
        for k, name in enumerate(("pupil_x", "pupil_y")):
            behavior[name] = np.interp(frame_times, timestamps(eye), values[:, k])
    return behavior


def _read_trials(
    nwb,
    path: Path,
    series,
    trials: _Trials,
    images: np.ndarray,
    image_ids: np.ndarray,
    units,
    key: dict[str, Any],
) -> Recording:
    """A per-trial layout (as :func:`~pipeline.data.nwb.write_nwb` writes it) back into a recording,
    trial-file order; ``series`` holds the responses and ``units`` is the ROI table."""
    rows, starts = trials.rows, trials.starts
    stamps = timestamps(series)
    order = np.argsort(stamps, kind="stable")
    slot = np.searchsorted(stamps[order], starts[rows] - 1e-6 * max(1.0, float(np.abs(starts).max())))
    responses = numeric(path, f"{series.name}.data", series.data, "f")[order][slot]
    behavior, pupil_center = _trial_behavior(nwb, path, trials, slot)
    table = trials.table
    columns = [c for c in table.colnames if c not in FIXED_COLUMNS]
    extra = {c: np.asarray(table[c][:])[rows] for c in columns}
    withheld = (
        np.asarray(table["withheld"][:], bool)[rows] if "withheld" in table.colnames else np.zeros(len(rows), bool)
    )
    needed = ("unit_id", "cortical_x", "cortical_y", "cortical_z", "area", "layer")
    missing = [c for c in needed if c not in set(units.colnames)]
    if missing:
        raise InputError(path, f"{units.name}", f"missing unit column(s) {missing}")
    rate = float(series.rois.table.imaging_plane.imaging_rate or 0.0)
    recording = Recording(
        **key,
        images=images,
        image_ids=image_ids,
        trial_idx=trials.trial_idx[rows],
        trial_image_ids=trials.image_id[rows],
        tiers=np.asarray(trials.tier)[rows],
        responses=responses,
        withheld=withheld,
        behavior=behavior,
        pupil_center=pupil_center,
        unit_ids=np.asarray(units["unit_id"][:]),
        unit_area=np.asarray([str(v) for v in units["area"][:]]),
        unit_layer=np.asarray([str(v) for v in units["layer"][:]]),
        unit_xyz=np.column_stack([units[c][:] for c in ("cortical_x", "cortical_y", "cortical_z")]),
        frame_rate=rate or None,
        extra_trial_arrays=extra,
        source=str(nwb.experiment_description or f"nwb:{path.name}"),
    )
    try:
        return recording.validate()
    except RecordingError as e:
        raise InputError(path, "file", f"inconsistent scan ({e})") from None


def _trial_behavior(nwb, path: Path, trials: _Trials, slot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Behaviour (n_trials, 3) = pupil size, its change, running speed, and pupil centre
    (n_trials, 2), trial-file order, from per-trial series; ``slot`` (n_trials,) is each trial
    file's sample in time order."""

    def trial_series(names: tuple[str, ...], width: int):
        found = find_timeseries(nwb, names)
        if found is None or not is_per_trial(found, trials.starts):
            return None
        data = numeric(path, found.name, found.data, "f")
        return data[np.argsort(timestamps(found), kind="stable")][slot].reshape(len(trials.rows), width)

    speed = trial_series(("running_speed",), 1)
    size = trial_series(("pupil_size",), 1)
    change = trial_series(("pupil_size_change",), 1)
    centre = trial_series(("pupil_center",), 2)
    if speed is None or size is None or change is None or centre is None:
        raise InputError(
            path,
            "processing/behavior",
            "per-trial running_speed, pupil_size, pupil_size_change and "
            "pupil_center series are needed with per-trial responses",
        )
    return np.concatenate([size, change, speed], axis=1), centre
