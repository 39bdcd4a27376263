"""Scans in and out of NWB files (pynwb).

Export (:func:`write_nwb`) writes one scan per file:

- ``stimulus_template/StimulusImages``: an ``Images`` container of ``GrayscaleImage`` s named
  ``image_<id>`` in source dtype; ``stimulus/StimulusPresentation``: an ``IndexSeries`` into it,
  one sample per trial at its onset;
- ``intervals/trials``: one row per trial in time order, with ``image_id``, ``tier``, ``trial_idx``,
  ``file_index`` (the scan's trial-file order), ``withheld`` and every further per-trial array;
- ``processing/ophys``: ``ImageSegmentation/PlaneSegmentation`` with per-unit ``unit_id``,
  ``cortical_x/y/z`` (micrometres), ``area``, ``layer``, ``centre_y/x`` (pixels) and a ``pixel_mask``
  when the footprints are known; ``Fluorescence/TrialResponses``, an ``RoiResponseSeries`` sampled
  once per trial at its onset;
- ``processing/behavior``: running speed, pupil size and its change (``TimeSeries``) and the pupil
  centre (``SpatialSeries``), each sampled once per trial at its onset.

Onset times are ``onset_frame / frame_rate`` when the scan carries both, else one second apart.

Import (:func:`read_nwb`) takes such a file back exactly, and also reads the layouts of public
two-photon datasets: a frame-sampled ``RoiResponseSeries`` (in ``DfOverF`` or ``Fluorescence``;
``Neuropil`` and ``Deconvolved`` series alongside are used when present), a trials table (or
another ``intervals`` table) with start times and image ids, ``TimeSeries`` of running speed and
pupil size and a pupil-position ``SpatialSeries`` (each interpolated to the frame times), and the
images in ``stimulus_template``.  Frame-sampled data goes through the same
window extraction as a suite2p folder (:func:`pipeline.data.extraction.extract`).  A series that
holds exactly one sample per trial, at the trials' start times, is taken as per-trial values.
"""

from __future__ import annotations

import datetime
import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.extraction import ExtractionConfig, Footprints, InputError, Schedule, Traces, extract
from pipeline.data.recording import Recording, RecordingError

IMAGE_ID_COLUMNS = ("image_id", "frame_image_id", "image_index", "stimulus_id", "frame")
"""Trial-table columns naming the image of each trial, in order of preference."""

_FIXED_COLUMNS = {"start_time", "stop_time", "image_id", "tier", "trial_idx", "file_index", "withheld", "id"}


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


_CCF_AREAS = {"V1": "VISp", "LM": "VISl", "AL": "VISal", "RL": "VISrl", "PM": "VISpm", "AM": "VISam", "LI": "VISli"}
"""Visual areas by their usual names -> Allen Mouse Brain CCF abbreviations (NWB's location terms)."""


def write_nwb(
    recording: Recording,
    path: str | Path,
    footprints: Footprints | None = None,
    session_start: datetime.datetime | None = None,
    age: str = "P8W/P104W",
    extraction: dict | None = None,
) -> Path:
    """Write one scan to a new NWB file (see the module docstring for the layout).

    ``age`` is the animal's ISO 8601 age (or range); scans carry none, so the default says "an
    adult mouse": give the real age where known.  ``session_start`` defaults to 2000-01-01 UTC
    (scans carry no date either).  ``extraction`` (the extraction config and source sizes of a scan
    extracted from imaging) is kept as JSON in the ``comments`` of the trial responses.
    """
    from pynwb import NWBHDF5IO, NWBFile, TimeSeries
    from pynwb.base import Images
    from pynwb.behavior import BehavioralTimeSeries, EyeTracking, PupilTracking, SpatialSeries
    from pynwb.file import Subject
    from pynwb.image import GrayscaleImage, IndexSeries
    from pynwb.ophys import Fluorescence, ImageSegmentation, OpticalChannel, RoiResponseSeries

    recording.validate()
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path}: refusing to overwrite an existing file")
    times = _times(recording)
    order = np.lexsort((np.arange(recording.n_trials), times))  # time order of the trial files
    t = times[order]
    gaps = np.diff(t)
    duration = float(gaps[gaps > 0].min()) if (gaps > 0).any() else 1.0

    clock = _clock(t)
    nwb = NWBFile(
        session_description=f"two-photon scan {recording.scan_name}: natural images, trial responses per unit",
        identifier=str(uuid.uuid5(uuid.NAMESPACE_URL, f"v1pipeline/{recording.scan_name}/{recording.source}")),
        session_start_time=session_start or datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc),
        session_id=recording.scan_name,
        experiment_description=recording.source or "scan exported by the v1pipeline",
        keywords=["two-photon calcium imaging", "mouse visual cortex", "natural images"],
        subject=Subject(
            subject_id=str(recording.animal_id),
            species="Mus musculus",
            sex="U",
            age=age,
            description=f"animal {recording.animal_id}, session {recording.session}",
        ),
    )
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

    nwb.add_trial_column("image_id", "id of the stimulus image")
    nwb.add_trial_column("tier", "data split: train, validation, test, final_test")
    nwb.add_trial_column("trial_idx", "the experiment's trial number")
    nwb.add_trial_column("file_index", "position of the trial in the scan's trial-file order")
    nwb.add_trial_column("withheld", "responses withheld (zeros that are not data)")
    extras = {name: np.asarray(v) for name, v in recording.extra_trial_arrays.items()}
    clash = sorted(set(extras) & _FIXED_COLUMNS)
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

    device = nwb.create_device(name="Microscope", description="two-photon microscope")
    channel = OpticalChannel(
        name="OpticalChannel", description="green calcium indicator channel", emission_lambda=510.0
    )
    plane = nwb.create_imaging_plane(
        name="ImagingPlane",
        optical_channel=channel,
        device=device,
        excitation_lambda=920.0,
        indicator="GCaMP",
        location=_location(recording.unit_area),
        imaging_rate=float(recording.frame_rate or 0.0),
        description="imaging plane of the scan",
    )
    ophys = nwb.create_processing_module("ophys", "units and their trial responses")
    segmentation = ImageSegmentation()
    ophys.add(segmentation)
    segmentation_plane = segmentation.create_plane_segmentation(
        name="PlaneSegmentation", description="units of the scan", imaging_plane=plane
    )
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
    if footprints is not None:
        for pixels in footprints.pixels:  # NWB's pixel-mask element is (x, y, weight)
            segmentation_plane.add_roi(
                pixel_mask=[(int(y_x_w[1]), int(y_x_w[0]), float(y_x_w[2])) for y_x_w in np.asarray(pixels, np.float32)]
            )
    else:  # empty masks: the ROI table needs a mask column to be readable, and no pixels are invented
        segmentation_plane.id.extend(list(range(recording.n_units)))
        segmentation_plane.add_column(
            "pixel_mask", "ROI footprint: none known", data=[[] for _ in range(recording.n_units)], index=True
        )
    # the other columns whole, so that they keep their dtypes (row-wise values become float64)
    for name, (description, values) in columns.items():
        values = np.asarray(values)
        segmentation_plane.add_column(name, description, data=values.tolist() if values.dtype.kind in "UO" else values)
    region = segmentation_plane.create_roi_table_region(region=list(range(recording.n_units)), description="all units")
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
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return path


# --------------------------------------------------------------------------------------- reading


def _fail(path: Path, field: str, problem: str) -> InputError:
    return InputError(path, field, problem)


def _series(module, kinds: tuple[str, ...]) -> list:
    """RoiResponseSeries of a processing module's containers of the given neurodata types."""
    found = []
    for container in module.data_interfaces.values():
        if type(container).__name__ in kinds:
            found.extend(container.roi_response_series.values())
    return found


def _timestamps(series) -> np.ndarray:
    n = len(series.data)
    if series.timestamps is not None:
        return np.asarray(series.timestamps[:], np.float64)
    if series.rate:
        return float(series.starting_time or 0.0) + np.arange(n) / float(series.rate)
    raise ValueError("neither timestamps nor a rate")


def _numeric(path: Path, field: str, data, kinds: str = "iuf") -> np.ndarray:
    array = np.asarray(data[:])
    if array.dtype.kind not in kinds:
        raise _fail(path, field, f"dtype {array.dtype}, expected numbers")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise _fail(path, field, f"{int((~np.isfinite(array)).sum())} NaN or infinite value(s)")
    return array


def _find_timeseries(nwb, names: tuple[str, ...]):
    """The first TimeSeries whose name (lower case) contains one of ``names``, in processing or acquisition."""
    from pynwb import TimeSeries

    candidates = []
    for module in nwb.processing.values():
        for container in module.data_interfaces.values():
            if isinstance(container, TimeSeries):
                candidates.append(container)
            for attribute in ("time_series", "spatial_series"):
                candidates.extend(getattr(container, attribute, {}).values())
    candidates.extend(s for s in nwb.acquisition.values() if isinstance(s, TimeSeries))
    for name in names:
        for series in candidates:
            if name in series.name.lower():
                return series
    return None


def _trials_table(nwb, path: Path):
    if nwb.trials is not None and len(nwb.trials):
        return nwb.trials, "intervals/trials"
    for name, table in (nwb.intervals or {}).items():
        if len(table) and any(c in table.colnames for c in IMAGE_ID_COLUMNS):
            return table, f"intervals/{name}"
    raise _fail(
        path,
        "intervals/trials",
        f"no trials table or stimulus-presentation table with image ids (one of the columns {list(IMAGE_ID_COLUMNS)})",
    )


def _images(nwb, path: Path, needed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n_images, H, W) images and their ids from stimulus_template."""
    from pynwb.base import Images

    for container in nwb.stimulus_template.values():
        if isinstance(container, Images):
            ids, pixels = [], []
            for k, (name, image) in enumerate(container.images.items()):
                suffix = name.rsplit("_", 1)[-1]
                ids.append(int(suffix) if suffix.lstrip("-").isdigit() else k)
                pixels.append(np.asarray(image.data[:]))
            if len({p.shape for p in pixels}) != 1:
                raise _fail(path, f"stimulus_template/{container.name}", "images of different shapes")
            order = np.argsort(ids, kind="stable")
            return np.stack(pixels)[order], np.asarray(ids, np.int64)[order]
        data = getattr(container, "data", None)
        if data is not None and np.ndim(data) == 3:  # an ImageSeries/OpticalSeries of all stimuli
            return np.asarray(data[:]), np.arange(len(data), dtype=np.int64)
    raise _fail(path, "stimulus_template", "no stimulus images (an Images container or an image series)")


def _per_trial(series, starts: np.ndarray) -> bool:
    try:
        stamps = _timestamps(series)
    except ValueError:
        return False
    tolerance = 1e-6 * max(1.0, float(np.abs(starts).max(initial=0.0)))
    return len(stamps) == len(starts) and np.allclose(np.sort(stamps), np.sort(starts), rtol=0, atol=tolerance)


def read_nwb(
    path: str | Path, config: ExtractionConfig | None = None, scan: dict[str, int] | None = None
) -> tuple[Recording, Footprints, dict]:
    """Read one scan from an NWB file.

    Parameters
    ----------
    config : window extraction for frame-sampled traces (ignored for per-trial series).
    scan : identity of the scan; default from ``session_id`` written ``animal-session-scan``.

    Returns
    -------
    (recording, footprints of the units, info) with info ``layout`` ('trials' or 'frames'),
    ``n_frames`` and ``n_rois`` of the source.
    """
    from pynwb import NWBHDF5IO

    path = Path(path)
    if not path.exists():
        raise _fail(path, "file", "no such file")
    config = config or ExtractionConfig()
    try:
        io = NWBHDF5IO(str(path), "r")
        nwb = io.read()
    except Exception as e:  # h5py and hdmf raise many types for a file that is not NWB
        raise _fail(
            path, "file", f"not a readable NWB file ({type(e).__name__}: {' '.join(str(e).split())[:200]})"
        ) from None
    try:
        return _read(nwb, path, config, scan)
    finally:
        io.close()


def _scan_identity(nwb, path: Path, scan: dict | None) -> dict[str, int]:
    if scan is not None:
        return scan
    parts = str(nwb.session_id or "").split("-")
    if len(parts) == 3 and all(p.isdigit() for p in parts):
        return dict(animal_id=int(parts[0]), session=int(parts[1]), scan_idx=int(parts[2]))
    raise _fail(path, "session_id", f"{nwb.session_id!r} is not written animal-session-scan; give the scan explicitly")


def _read(nwb, path: Path, config: ExtractionConfig, scan: dict | None) -> tuple[Recording, Footprints, dict]:
    if "ophys" not in nwb.processing:
        raise _fail(path, "processing/ophys", "missing: no optical physiology (RoiResponseSeries) in the file")
    ophys = nwb.processing["ophys"]
    series = _series(ophys, ("DfOverF", "Fluorescence"))
    if not series:
        raise _fail(path, "processing/ophys", "no RoiResponseSeries in a DfOverF or Fluorescence container")
    table, table_name = _trials_table(nwb, path)
    columns = set(table.colnames)
    id_column = next((c for c in IMAGE_ID_COLUMNS if c in columns), None)
    if id_column is None:
        raise _fail(path, table_name, f"no image-id column (one of {list(IMAGE_ID_COLUMNS)})")
    starts = _numeric(path, f"{table_name}.start_time", table["start_time"], "f")
    image_id = _numeric(path, f"{table_name}.{id_column}", table[id_column], "iu").astype(np.int64)
    n_trials = len(starts)
    images, image_ids = _images(nwb, path, image_id)
    if "tier" in columns:
        tier = np.asarray([str(v) for v in table["tier"][:]])
    else:  # public data carries no split: repeated images are the test set, 10% of the rest validation
        counts = dict(zip(*np.unique(image_id, return_counts=True)))
        tier = np.array(["test" if counts[i] > 1 else ("validation" if i % 10 == 0 else "train") for i in image_id])
    trial_idx = (
        np.asarray(table["trial_idx"][:]) if "trial_idx" in columns else np.argsort(np.argsort(starts, kind="stable"))
    )
    file_index = np.asarray(table["file_index"][:]) if "file_index" in columns else np.arange(n_trials)
    if sorted(file_index.tolist()) != list(range(n_trials)):
        raise _fail(path, f"{table_name}.file_index", "not a permutation of the trial rows")
    rows = np.argsort(file_index)  # table row of each trial file
    key = _scan_identity(nwb, path, scan)

    segmentation, footprints = _segmentation(ophys, path, series[0])
    per_trial = [s for s in series if _per_trial(s, starts)]
    if per_trial:
        recording = _read_trials(
            nwb,
            path,
            per_trial[0],
            table,
            table_name,
            rows,
            starts,
            image_id,
            tier,
            trial_idx,
            images,
            image_ids,
            segmentation,
            key,
        )
        info = dict(layout="trials", n_frames=0, n_rois=len(footprints))
        try:
            info.update(json.loads(per_trial[0].comments)["extraction"])
        except (ValueError, KeyError, TypeError):
            pass
        return recording, footprints, info
    traces = _traces(ophys, series, path, footprints)
    frame_times = _timestamps(series[0])
    onset_frame = np.searchsorted(frame_times, starts[rows] - 1e-9)
    behavior = {}
    for name, patterns in (
        ("running_speed", ("running", "speed")),
        ("pupil_size", ("pupil_area", "pupil_size", "pupil")),
    ):
        found = _find_timeseries(nwb, patterns)
        if found is not None:
            values = _numeric(path, found.name, found.data, "iuf").astype(np.float64).reshape(len(found.data), -1)[:, 0]
            behavior[name] = np.interp(frame_times, _timestamps(found), values)
    eye = _find_timeseries(nwb, ("pupil_center", "pupil_position", "eye_position"))
    if eye is not None and np.ndim(eye.data) == 2 and eye.data.shape[1] >= 2:
        values = _numeric(path, eye.name, eye.data, "iuf").astype(np.float64)
        for k, name in enumerate(("pupil_x", "pupil_y")):
            behavior[name] = np.interp(frame_times, _timestamps(eye), values[:, k])
    schedule = Schedule(
        onset_frame=onset_frame.astype(np.int64),
        image_id=image_id[rows],
        tier=tier[rows],
        trial_idx=np.asarray(trial_idx)[rows].astype(np.int64),
        images=images,
        image_ids=image_ids,
        behavior=behavior,
        files={"onset_frame": f"{path} {table_name}.start_time"},
    )
    recording, kept = extract(traces, schedule, config, key, area=_area(ophys), source=f"nwb:{path.name}")
    return recording, kept, dict(layout="frames", n_frames=traces.n_frames, n_rois=len(footprints))


def _area(ophys) -> str:
    for container in ophys.data_interfaces.values():
        for plane in getattr(container, "plane_segmentations", {}).values():
            return str(plane.imaging_plane.location or "unknown")
    return "unknown"


def _segmentation(ophys, path: Path, series) -> tuple[object, Footprints]:
    """The plane segmentation behind ``series`` and its ROIs' footprints (pixel or image masks)."""
    table = series.rois.table
    n = len(table)
    shape = tuple(series.data.shape)
    if len(shape) != 2 or shape[1] != n:
        raise _fail(path, f"{series.name}.data", f"shape {np.shape(series.data)}, expected (n_samples, {n} ROIs)")
    ids = np.asarray(table.id[:])
    if len(np.unique(ids)) != n:
        raise _fail(path, f"{table.name}.id", "duplicated ROI ids")
    columns = set(table.colnames)
    pixels = []
    if "pixel_mask" in columns:
        for r in range(n):
            mask = table["pixel_mask"][r]
            if isinstance(mask, np.ndarray) and mask.dtype.names:
                x, y, w = (np.asarray(mask[name], np.float64) for name in mask.dtype.names[:3])
            else:
                x, y, w = np.array([tuple(p) for p in mask], np.float64).reshape(-1, 3).T
            pixels.append(np.column_stack([y, x, w]).astype(np.float32))
    elif "image_mask" in columns:
        for r in range(n):
            image = np.asarray(table["image_mask"][r])
            iy, ix = np.nonzero(image)
            pixels.append(np.column_stack([iy, ix, image[iy, ix]]).astype(np.float32))
    else:
        pixels = [np.zeros((0, 3), np.float32) for _ in range(n)]
    seen: dict[bytes, int] = {}
    for r, mask in enumerate(pixels):
        if len(mask):
            signature = mask[:, :2].tobytes()
            if signature in seen:
                raise _fail(path, f"{table.name}[{r}]", f"duplicated ROI: same pixels as row {seen[signature]}")
            seen[signature] = r
    if "centre_y" in columns:
        centre = np.column_stack([table["centre_y"][:], table["centre_x"][:]]).astype(np.float64)
    else:
        centre = np.array([m[:, :2].mean(0) if len(m) else (np.nan, np.nan) for m in pixels], np.float64).reshape(n, 2)
    footprints = Footprints(
        plane=np.asarray(table["plane"][:], np.int64) if "plane" in columns else np.zeros(n, np.int64),
        roi=np.asarray(table["roi"][:], np.int64) if "roi" in columns else ids.astype(np.int64),
        centre=centre,
        pixels=pixels,
        iscell=np.asarray(table["iscell"][:], np.float64) if "iscell" in columns else np.ones(n),
    )
    return table, footprints


def _traces(ophys, series: list, path: Path, footprints: Footprints) -> Traces:
    by_role: dict[str, Any] = {}  # pynwb series
    for s in series:
        name, container = s.name.lower(), type(s.parent).__name__
        if "neuropil" in name:
            by_role.setdefault("neuropil", s)
        elif "deconv" in name or "spike" in name or "spks" in name:
            by_role.setdefault("spikes", s)
        elif container == "DfOverF":
            by_role.setdefault("dff", s)
        else:
            by_role.setdefault("fluorescence", s)
    n_frames = {s.name: len(s.data) for s in by_role.values()}
    if len(set(n_frames.values())) != 1:
        raise _fail(path, "processing/ophys", f"mismatched frame counts between series {n_frames}")
    reference = next(iter(by_role.values()))
    stamps = _timestamps(reference)
    if len(stamps) < 2:
        raise _fail(path, f"{reference.name}.timestamps", "fewer than two frames")
    rate = 1.0 / float(np.median(np.diff(stamps)))
    arrays = {role: _numeric(path, f"{s.name}.data", s.data, "f").T for role, s in by_role.items()}
    return Traces(
        footprints=footprints,
        frame_rate=rate,
        fluorescence=arrays.get("fluorescence"),
        neuropil=arrays.get("neuropil"),
        spikes=arrays.get("spikes"),
        dff=arrays.get("dff"),
        file=str(path),
        names={role: f"processing/ophys/{s.name}" for role, s in by_role.items()},
    )


def _read_trials(
    nwb, path, series, table, table_name, rows, starts, image_id, tier, trial_idx, images, image_ids, segmentation, key
) -> Recording:
    """A per-trial layout (as :func:`write_nwb` writes it) back into a recording, trial-file order."""
    stamps = _timestamps(series)
    order = np.argsort(stamps, kind="stable")
    slot = np.searchsorted(stamps[order], starts[rows] - 1e-6 * max(1.0, float(np.abs(starts).max())))
    responses = _numeric(path, f"{series.name}.data", series.data, "f")[order][slot]

    def trial_series(names: tuple[str, ...], width: int):
        found = _find_timeseries(nwb, names)
        if found is None or not _per_trial(found, starts):
            return None
        data = _numeric(path, found.name, found.data, "f")
        return data[np.argsort(_timestamps(found), kind="stable")][slot].reshape(len(rows), width)

    speed = trial_series(("running_speed",), 1)
    size = trial_series(("pupil_size",), 1)
    change = trial_series(("pupil_size_change",), 1)
    centre = trial_series(("pupil_center",), 2)
    if speed is None or size is None or change is None or centre is None:
        raise _fail(
            path,
            "processing/behavior",
            "per-trial running_speed, pupil_size, pupil_size_change and "
            "pupil_center series are needed with per-trial responses",
        )
    columns = [c for c in table.colnames if c not in _FIXED_COLUMNS]
    extra = {c: np.asarray(table[c][:])[rows] for c in columns}
    withheld = (
        np.asarray(table["withheld"][:], bool)[rows] if "withheld" in table.colnames else np.zeros(len(rows), bool)
    )
    unit_columns = set(segmentation.colnames)
    needed = ("unit_id", "cortical_x", "cortical_y", "cortical_z", "area", "layer")
    missing = [c for c in needed if c not in unit_columns]
    if missing:
        raise _fail(path, f"{segmentation.name}", f"missing unit column(s) {missing}")
    rate = float(series.rois.table.imaging_plane.imaging_rate or 0.0)
    recording = Recording(
        **key,
        images=images,
        image_ids=image_ids,
        trial_idx=np.asarray(trial_idx)[rows],
        trial_image_ids=image_id[rows],
        tiers=np.asarray(tier)[rows],
        responses=responses,
        withheld=withheld,
        behavior=np.concatenate([size, change, speed], axis=1),
        pupil_center=centre,
        unit_ids=np.asarray(segmentation["unit_id"][:]),
        unit_area=np.asarray([str(v) for v in segmentation["area"][:]]),
        unit_layer=np.asarray([str(v) for v in segmentation["layer"][:]]),
        unit_xyz=np.column_stack([segmentation[c][:] for c in ("cortical_x", "cortical_y", "cortical_z")]),
        frame_rate=rate or None,
        extra_trial_arrays=extra,
        source=str(nwb.experiment_description or f"nwb:{path.name}"),
    )
    try:
        return recording.validate()
    except RecordingError as e:
        raise _fail(path, "file", f"inconsistent scan ({e})") from None
