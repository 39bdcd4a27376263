"""Finding and checking the parts of an NWB file that a scan is read from: the ROI response series,
their timestamps, behaviour series, the trials table, the stimulus images, the ROI table with the
footprints, and the frame-sampled traces.  Every problem raises
:class:`~pipeline.data.extraction.InputError` naming the file and the field."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.extraction import Footprints, InputError, Traces
from pipeline.data.nwb.hdf5 import charge, read
from pipeline.data.nwb.layout import IMAGE_ID_COLUMNS

SESSION_ID = re.compile(r"([0-9]+)-([0-9]+)-([0-9]+)")
"""A session_id that names its scan, ``animal-session-scan`` (matched whole: no sign, space or newline);
the ids' ranges are checked where the scan is imported, as for every importer."""


def roi_response_series(module, kinds: tuple[str, ...]) -> list:
    """RoiResponseSeries of a processing module's containers of the given neurodata types."""
    found = []
    for container in module.data_interfaces.values():
        if type(container).__name__ in kinds:
            found.extend(container.roi_response_series.values())
    return found


def timestamps(series) -> np.ndarray:
    """(n_samples,) sample times of ``series`` in seconds, from its timestamps or its rate."""
    n = len(series.data)
    if series.timestamps is not None:
        return read(series.timestamps, f"{series.name}.timestamps").astype(np.float64, copy=False)
    if series.rate:
        return float(series.starting_time or 0.0) + np.arange(n) / float(series.rate)
    raise ValueError("neither timestamps nor a rate")


def numeric(path: Path, field: str, data, kinds: str = "iuf") -> np.ndarray:
    """``data`` as an array of a numeric dtype kind in ``kinds``, refused when it holds NaN or inf."""
    array = read(data, field)
    if array.dtype.kind not in kinds:
        raise InputError(path, field, f"dtype {array.dtype}, expected numbers")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InputError(path, field, f"{int((~np.isfinite(array)).sum())} NaN or infinite value(s)")
    return array


def find_timeseries(nwb, names: tuple[str, ...]):
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


def trials_table(nwb, path: Path):
    """The trials table (``intervals/trials``), else the first interval table with an image-id column;
    with its name in the file."""
    if nwb.trials is not None and len(nwb.trials):
        return nwb.trials, "intervals/trials"
    for name, table in (nwb.intervals or {}).items():
        if len(table) and any(c in table.colnames for c in IMAGE_ID_COLUMNS):
            return table, f"intervals/{name}"
    raise InputError(
        path,
        "intervals/trials",
        f"no trials table or stimulus-presentation table with image ids (one of the columns {list(IMAGE_ID_COLUMNS)})",
    )


def stimulus_images(nwb, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(n_images, H, W) images and their ids (n_images,) int64, sorted by id, from stimulus_template."""
    from pynwb.base import Images

    for container in nwb.stimulus_template.values():
        if isinstance(container, Images):
            ids, pixels = [], []
            for k, (name, image) in enumerate(container.images.items()):
                suffix = name.rsplit("_", 1)[-1]
                ids.append(int(suffix) if suffix.lstrip("-").isdigit() else k)
                pixels.append(read(image.data, f"stimulus_template/{container.name}/{name}"))
            if len({p.shape for p in pixels}) != 1:
                raise InputError(path, f"stimulus_template/{container.name}", "images of different shapes")
            order = np.argsort(ids, kind="stable")
            return np.stack(pixels)[order], np.asarray(ids, np.int64)[order]
        data = getattr(container, "data", None)
        if data is not None and np.ndim(data) == 3:  # an ImageSeries/OpticalSeries of all stimuli
            return read(data, f"stimulus_template/{container.name}"), np.arange(len(data), dtype=np.int64)
    raise InputError(path, "stimulus_template", "no stimulus images (an Images container or an image series)")


def is_per_trial(series, starts: np.ndarray) -> bool:
    """Whether ``series`` holds one sample per trial, at the trials' start times ``starts`` (n_trials,) s."""
    try:
        stamps = timestamps(series)
    except ValueError:
        return False
    tolerance = 1e-6 * max(1.0, float(np.abs(starts).max(initial=0.0)))
    return len(stamps) == len(starts) and np.allclose(np.sort(stamps), np.sort(starts), rtol=0, atol=tolerance)


def scan_identity(nwb, path: Path, scan: dict | None) -> dict[str, int]:
    """``scan`` when given, else ``{animal_id, session, scan_idx}`` from a session_id ``animal-session-scan``."""
    if scan is not None:
        return scan
    match = SESSION_ID.fullmatch(str(nwb.session_id or ""))
    if match:
        return dict(zip(("animal_id", "session", "scan_idx"), map(int, match.groups())))
    raise InputError(
        path, "session_id", f"{nwb.session_id!r} is not written animal-session-scan; give the scan explicitly"
    )


def imaging_area(ophys) -> str:
    """The location of the first imaging plane behind a ROI table, else 'unknown'."""
    for container in ophys.data_interfaces.values():
        for plane in getattr(container, "plane_segmentations", {}).values():
            return str(plane.imaging_plane.location or "unknown")
    return "unknown"


def segmentation(ophys, path: Path, series) -> tuple[object, Footprints]:
    """The plane segmentation behind ``series`` and its ROIs' footprints (pixel or image masks)."""
    table = series.rois.table
    n = len(table)
    shape = tuple(series.data.shape)
    if len(shape) != 2 or shape[1] != n:
        raise InputError(path, f"{series.name}.data", f"shape {np.shape(series.data)}, expected (n_samples, {n} ROIs)")
    ids = read(table.id.data, f"{table.name}.id")
    if len(np.unique(ids)) != n:
        raise InputError(path, f"{table.name}.id", "duplicated ROI ids")
    columns = set(table.colnames)
    for column in columns:
        charge(table[column], f"{table.name}.{column}")
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
                raise InputError(path, f"{table.name}[{r}]", f"duplicated ROI: same pixels as row {seen[signature]}")
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


def roi_traces(series: list, path: Path, footprints: Footprints) -> Traces:
    """Frame-sampled traces (n_rois, n_frames) by role (fluorescence, neuropil, deconvolved spikes,
    ΔF/F) from the series' names and containers; all must share one frame count."""
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
        raise InputError(path, "processing/ophys", f"mismatched frame counts between series {n_frames}")
    reference = next(iter(by_role.values()))
    stamps = timestamps(reference)
    if len(stamps) < 2:
        raise InputError(path, f"{reference.name}.timestamps", "fewer than two frames")
    rate = 1.0 / float(np.median(np.diff(stamps)))
    arrays = {role: numeric(path, f"{s.name}.data", s.data, "f").T for role, s in by_role.items()}
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
