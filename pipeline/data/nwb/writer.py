"""Writing one scan to an NWB file (:func:`write_nwb`; the layout: see the package docstring)."""

from __future__ import annotations

import datetime
import json
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.data.extraction import Footprints
from pipeline.data.nwb.layout import FIXED_COLUMNS
from pipeline.data.recording import Recording, RecordingError

_CCF_AREAS = {"V1": "VISp", "LM": "VISl", "AL": "VISal", "RL": "VISrl", "PM": "VISpm", "AM": "VISam", "LI": "VISli"}
"""Visual areas by their usual names -> Allen Mouse Brain CCF abbreviations (NWB's location terms)."""


def _location(areas) -> str:
    """One Allen CCF term for the imaging plane: the area's when all units share a known one, else 'root'."""
    names = sorted(set(map(str, areas)))
    return _CCF_AREAS.get(names[0], names[0] if names[0].startswith("VIS") else "root") if len(names) == 1 else "root"


def _clock(t: np.ndarray) -> dict:
    """Timing arguments of a series sampled at ``t``: a rate when regular (NWB best practice), else timestamps."""
    step = np.diff(t)
    if len(t) > 1 and step[0] > 0 and np.allclose(step, step[0], rtol=0, atol=1e-9 * max(1.0, abs(t[-1]))):
        return dict(starting_time=float(t[0]), rate=float(1.0 / step[0]))
    return dict(timestamps=t)


def _times(recording: Recording) -> np.ndarray:
    """(n_trials,) onset time of each trial in seconds, trial-file order."""
    onset = recording.extra_trial_arrays.get("onset_frame")
    if onset is not None and recording.frame_rate:
        return np.asarray(onset, np.float64) / float(recording.frame_rate)
    rank = np.empty(recording.n_trials, np.float64)
    rank[np.lexsort((np.arange(recording.n_trials), recording.trial_idx))] = np.arange(recording.n_trials)
    return rank


SEXES = ("M", "F", "U", "O")
"""NWB's sex terms: male, female, unknown, other."""

_ISO_AGE = re.compile(r"P(?=\d)(\d+Y)?(\d+M)?(\d+W)?(\d+D)?(/(P(?=\d)(\d+Y)?(\d+M)?(\d+W)?(\d+D)?)?)?")
"""An ISO 8601 duration in years, months, weeks and days, or a range of two (``P8W/P12W``, ``P90D/``)."""


@dataclass(frozen=True)
class SessionInfo:
    """What an archive needs to know of the session and is not in a scan: nothing here has a default,
    so no exported file carries a made-up date, age or experimenter.

    session_start : timezone-aware start of the recording session.
    experimenter : one or more names, "Last, First".
    age : the animal's age on that day, ISO 8601 duration (``P90D``) or range (``P8W/P12W``).
    sex : one of :data:`SEXES`.
    species : Latin binomial (the scan's ``Animal.species``).
    institution : where the data were recorded ("" when not given).
    """

    session_start: datetime.datetime
    experimenter: tuple[str, ...]
    age: str
    sex: str
    species: str
    institution: str = ""

    def __post_init__(self) -> None:
        if self.session_start.tzinfo is None:
            raise ValueError(f"session start {self.session_start.isoformat()}: give a time zone, e.g. +01:00")
        if not self.experimenter or not all(name.strip() for name in self.experimenter):
            raise ValueError("experimenter: give at least one name, e.g. 'Doe, Jane'")
        if not _ISO_AGE.fullmatch(self.age):
            raise ValueError(f"age {self.age!r}: expected an ISO 8601 duration such as P90D or a range P8W/P12W")
        if self.sex not in SEXES:
            raise ValueError(f"sex {self.sex!r}: expected one of {', '.join(SEXES)}")
        if not self.species.strip():
            raise ValueError("species: empty")


def write_nwb(
    recording: Recording,
    path: str | Path,
    session: SessionInfo,
    footprints: Footprints | None = None,
    extraction: dict | None = None,
) -> Path:
    """Write one scan to a new NWB file (see the package docstring for the layout).

    ``session`` gives the session start, the experimenter and the subject, which scans do not
    carry.  ``extraction`` (the extraction config and source sizes of a scan extracted from imaging)
    is kept as JSON in the ``comments`` of the trial responses.  Pixel masks are written only when
    every unit has pixels (NWB tools cannot read an empty mask); without footprints the ROI table
    has no mask column.
    """
    from pynwb import NWBHDF5IO

    recording.validate()
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path}: refusing to overwrite an existing file")
    times = _times(recording)
    order = np.lexsort((np.arange(recording.n_trials), times))  # time order of the trial files
    t = times[order]
    clock = _clock(t)
    nwb = _nwb_file(recording, session)
    _add_stimuli(nwb, recording, order, clock)
    _add_trials(nwb, recording, order, t)
    _add_units(nwb, recording, footprints, order, clock, extraction)
    _add_behavior(nwb, recording, order, clock)
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return path


def _nwb_file(recording: Recording, session: SessionInfo):
    """The NWBFile of the scan: identifier derived from the scan's name and source, subject, session."""
    from pynwb import NWBFile
    from pynwb.file import Subject

    return NWBFile(
        session_description=f"two-photon scan {recording.scan_name}: natural images, trial responses per unit",
        identifier=str(uuid.uuid5(uuid.NAMESPACE_URL, f"v1pipeline/{recording.scan_name}/{recording.source}")),
        session_start_time=session.session_start,
        session_id=recording.scan_name,
        experimenter=list(session.experimenter),
        institution=session.institution or None,
        experiment_description=recording.source or "scan exported by the v1pipeline",
        keywords=["two-photon calcium imaging", "mouse visual cortex", "natural images"],
        subject=Subject(
            subject_id=str(recording.animal_id),
            species=session.species,
            sex=session.sex,
            age=session.age,
            description=f"animal {recording.animal_id}, session {recording.session}",
        ),
    )


def _add_stimuli(nwb, recording: Recording, order: np.ndarray, clock: dict) -> None:
    """The images as ``stimulus_template/StimulusImages`` and the trials' images, in time order
    ``order`` (n_trials,), as the ``StimulusPresentation`` index series."""
    from pynwb.base import Images
    from pynwb.image import GrayscaleImage, IndexSeries

    image_ids = np.asarray(recording.image_ids)
    images = Images(
        name="StimulusImages",
        images=[
            GrayscaleImage(name=f"image_{int(i)}", data=np.asarray(img), description=f"stimulus image id {int(i)}")
            for i, img in zip(image_ids, recording.images)
        ],
        description="stimulus images by id, grey levels 0-255",
    )
    nwb.add_stimulus_template(images)
    slot = {int(i): k for k, i in enumerate(image_ids)}
    nwb.add_stimulus(
        IndexSeries(
            name="StimulusPresentation",
            data=np.array([slot[int(i)] for i in recording.trial_image_ids[order]], np.uint32),
            indexed_images=images,
            unit="N/A",
            **clock,
            description="index into StimulusImages of the image shown on each trial",
        )
    )


def _add_trials(nwb, recording: Recording, order: np.ndarray, t: np.ndarray) -> None:
    """The trials table, one row per trial in time order ``order`` with onset ``t`` (n_trials,)
    seconds; each trial lasts the shortest gap between onsets (1 s when all share one onset)."""
    gaps = np.diff(t)
    duration = float(gaps[gaps > 0].min()) if (gaps > 0).any() else 1.0
    nwb.add_trial_column("image_id", "id of the stimulus image")
    nwb.add_trial_column("tier", "data split: train, validation, test, final_test")
    nwb.add_trial_column("trial_idx", "the experiment's trial number")
    nwb.add_trial_column("file_index", "position of the trial in the scan's trial-file order")
    nwb.add_trial_column("withheld", "responses withheld (zeros that are not data)")
    extras = {name: np.asarray(v) for name, v in recording.extra_trial_arrays.items()}
    clash = sorted(set(extras) & FIXED_COLUMNS)
    if clash:
        raise RecordingError(f"extra_trial_arrays: name(s) {clash} are reserved in the NWB trials table")
    for name in extras:
        nwb.add_trial_column(name, f"per-trial array {name} of the source")
    for k, i in enumerate(order):
        nwb.add_trial(
            start_time=float(t[k]),
            stop_time=float(t[k]) + duration,
            image_id=int(recording.trial_image_ids[i]),
            tier=str(recording.tiers[i]),
            trial_idx=recording.trial_idx[i],
            file_index=int(i),
            withheld=bool(recording.withheld[i]),
            **{name: values[i] for name, values in extras.items()},
        )


def _imaging_plane(nwb, recording: Recording):
    """The microscope, its optical channel and the imaging plane of the scan."""
    from pynwb.ophys import OpticalChannel

    device = nwb.create_device(name="Microscope", description="two-photon microscope")
    channel = OpticalChannel(
        name="OpticalChannel", description="green calcium indicator channel", emission_lambda=510.0
    )
    return nwb.create_imaging_plane(
        name="ImagingPlane",
        optical_channel=channel,
        device=device,
        excitation_lambda=920.0,
        indicator="GCaMP",
        location=_location(recording.unit_area),
        imaging_rate=float(recording.frame_rate or 0.0),
        description="imaging plane of the scan",
    )


def _unit_columns(recording: Recording, footprints: Footprints | None) -> dict[str, tuple[str, np.ndarray]]:
    """Per-unit columns of the ROI table by name: (description, (n_units,) values)."""
    xyz = np.asarray(recording.unit_xyz)
    columns = {
        "unit_id": ("unit id within the scan", recording.unit_ids),
        "cortical_x": ("cortical x position, micrometres", xyz[:, 0]),
        "cortical_y": ("cortical y position, micrometres", xyz[:, 1]),
        "cortical_z": ("cortical depth, micrometres", xyz[:, 2]),
        "area": ("brain area", np.asarray(recording.unit_area).astype(str)),
        "layer": ("cortical layer", np.asarray(recording.unit_layer).astype(str)),
    }
    if footprints is not None:
        columns.update(
            {
                "centre_y": ("ROI centre row, pixels", footprints.centre[:, 0]),
                "centre_x": ("ROI centre column, pixels", footprints.centre[:, 1]),
                "plane": ("imaging plane index", footprints.plane),
                "roi": ("ROI index in the source segmentation", footprints.roi),
                "iscell": ("classifier probability of being a cell", footprints.iscell),
            }
        )
    return columns


def _masks(recording: Recording, footprints: Footprints | None) -> list[np.ndarray] | None:
    """Each unit's (k, 3) (y, x, weight) pixels, or None when no unit has any; a partial set is refused."""
    if footprints is None or not any(len(p) for p in footprints.pixels):
        return None
    empty = [int(u) for u, p in zip(recording.unit_ids, footprints.pixels) if not len(p)]
    if empty:
        raise RecordingError(f"footprints: unit(s) {empty[:10]} have no pixels (NWB has no empty pixel mask)")
    return [np.asarray(p, np.float32) for p in footprints.pixels]


def _plane_segmentation(ophys, plane, recording: Recording, footprints: Footprints | None):
    """The ROI table: one row per unit, its pixel mask (an all-zero image mask when the footprints
    are unknown: no pixels are invented, and no empty pixel mask is written) and the
    :func:`_unit_columns`."""
    from pynwb.ophys import ImageSegmentation

    segmentation = ImageSegmentation()
    ophys.add(segmentation)
    table = segmentation.create_plane_segmentation(
        name="PlaneSegmentation", description="units of the scan", imaging_plane=plane
    )
    masks = _masks(recording, footprints)
    if masks is not None:
        for pixels in masks:  # NWB's pixel-mask element is (x, y, weight)
            table.add_roi(pixel_mask=[(int(y_x_w[1]), int(y_x_w[0]), float(y_x_w[2])) for y_x_w in pixels])
    else:  # NWB needs a mask column: all-zero 1x1 image masks claim no pixel (read back as no footprint)
        table.id.extend(list(range(recording.n_units)))
        table.add_column("image_mask", "ROI footprint: none known (all zero)", data=np.zeros((recording.n_units, 1, 1)))
    # the other columns whole, so that they keep their dtypes (row-wise values become float64)
    for name, (description, values) in _unit_columns(recording, footprints).items():
        values = np.asarray(values)
        table.add_column(name, description, data=values.tolist() if values.dtype.kind in "UO" else values)
    return table


def _add_units(
    nwb, recording: Recording, footprints: Footprints | None, order: np.ndarray, clock: dict, extraction: dict | None
) -> None:
    """``processing/ophys``: the ROI table and the units' responses (n_trials, n_units) in time
    order ``order`` as ``Fluorescence/TrialResponses``, ``extraction`` as JSON in its comments."""
    from pynwb.ophys import Fluorescence, RoiResponseSeries

    plane = _imaging_plane(nwb, recording)
    ophys = nwb.create_processing_module("ophys", "units and their trial responses")
    table = _plane_segmentation(ophys, plane, recording, footprints)
    region = table.create_roi_table_region(region=list(range(recording.n_units)), description="all units")
    fluorescence = Fluorescence(name="Fluorescence")
    ophys.add(fluorescence)  # before the series, so that its ROI region shares an ancestor with the table
    fluorescence.add_roi_response_series(
        RoiResponseSeries(
            name="TrialResponses",
            data=np.asarray(recording.responses)[order],
            rois=region,
            unit="a.u.",
            **clock,
            description="response of each unit on each trial (one sample per trial, at its onset)",
            comments=json.dumps({"extraction": extraction}) if extraction else "no comments",
        )
    )


def _add_behavior(nwb, recording: Recording, order: np.ndarray, clock: dict) -> None:
    """``processing/behavior``: running speed, pupil size and its change, and the pupil centre, one
    sample per trial at its onset, in time order ``order``."""
    from pynwb import TimeSeries
    from pynwb.behavior import BehavioralTimeSeries, EyeTracking, PupilTracking, SpatialSeries

    behavior_module = nwb.create_processing_module("behavior", "behaviour per trial")
    behavior = np.asarray(recording.behavior)[order]
    pupil_center = np.asarray(recording.pupil_center)[order]

    def per_trial(name: str, data: np.ndarray, unit: str, description: str) -> TimeSeries:
        """A (n_trials,) series, one sample per trial at its onset."""
        return TimeSeries(name=name, data=data, unit=unit, **clock, description=description)

    behavior_module.add(
        BehavioralTimeSeries(
            name="BehavioralTimeSeries",
            time_series=[per_trial("running_speed", behavior[:, 2], "cm/s", "running speed per trial")],
        )
    )
    behavior_module.add(
        PupilTracking(
            name="PupilTracking",
            time_series=[
                per_trial("pupil_size", behavior[:, 0], "pixels", "pupil size per trial"),
                per_trial("pupil_size_change", behavior[:, 1], "pixels", "change of pupil size per trial"),
            ],
        )
    )
    behavior_module.add(
        EyeTracking(
            name="EyeTracking",
            spatial_series=[
                SpatialSeries(
                    name="pupil_center",
                    data=pupil_center,
                    reference_frame="eye camera pixels",
                    unit="pixels",
                    **clock,
                    description="horizontal, vertical eye position per trial",
                )
            ],
        )
    )
