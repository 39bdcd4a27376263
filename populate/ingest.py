"""Getting recordings into and out of the database: the simulator, Sensorium import and export."""

from __future__ import annotations

import datetime
import logging
import re
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

_SCAN_NAME = re.compile(r"([0-9]+)-([0-9]+)-([0-9]+)")
INT32_MAX = 2**31 - 1
INT64 = (-(2**63), 2**63 - 1)


class IngestError(ValueError):
    """Input that cannot be imported as it is."""


def check_ids(recording, file: str | Path | None = None) -> None:
    """Refuse ids the database columns cannot hold or the command line cannot address; the error
    names ``file``, the file the ids were read from, when given.

    Scan ids (``animal_id``, ``session``, ``scan_idx``) are written ``animal-session-scan`` with
    non-negative numbers; they and unit ids are int32 columns, trial and image ids int64.
    """
    try:
        _check_ids(recording)
    except IngestError as e:
        raise IngestError(f"{file}: {e}" if file is not None else str(e)) from None


def _check_ids(recording) -> None:
    import numpy as np

    for name, value in recording.scan_key.items():
        if not 0 <= value <= INT32_MAX:
            raise IngestError(f"{name} {value}: scan ids must be between 0 and {INT32_MAX}")
    for name, array, (low, high) in (
        ("unit_ids", recording.unit_ids, (-(2**31), INT32_MAX)),
        ("trial_idx", recording.trial_idx, INT64),
        ("image_ids", recording.image_ids, INT64),
    ):
        values = np.asarray(array)
        if values.size and values.dtype.kind in "iu" and (values.min() < low or values.max() > high):
            raise IngestError(
                f"{name}: values from {int(values.min())} to {int(values.max())} are outside {low}..{high}"
            )


def import_budget():
    """A fresh :class:`~pipeline.data.limits.Budget` for one import, under the machine's limits as
    overridden by ``PIPELINE_IMPORT_MAX_FILE_MB``, ``PIPELINE_IMPORT_MAX_GB`` and
    ``PIPELINE_IMPORT_MAX_EXPANSION`` (see docs/own_recordings.md)."""
    from pipeline.data.limits import Budget, ImportLimits

    try:
        return Budget(ImportLimits.from_environment())
    except ValueError as e:
        raise IngestError(str(e)) from None


def _insert_once(key: dict, insert) -> tuple[dict, bool]:
    """Run ``insert()`` unless scan ``key`` is present, under the prefix's import lock.

    Concurrent imports (the same scan, or scans sharing images) would otherwise race between
    the existence check and the insert; under the lock the later one finds the scan and does
    nothing.
    """
    from schemas import db, recordings

    with db.named_lock("import"):
        if recordings.scan_exists(key):
            return key, False
        return insert(), True


def parse_scan(text: str) -> dict[str, int]:
    """``"11521-7-2"`` -> ``{"animal_id": 11521, "session": 7, "scan_idx": 2}``."""
    match = _SCAN_NAME.fullmatch(text.strip())
    if not match:
        raise ValueError(f"scan {text!r} is not written animal-session-scan, e.g. 11521-7-2")
    key = dict(zip(("animal_id", "session", "scan_idx"), map(int, match.groups())))
    for name, value in key.items():
        if value > INT32_MAX:
            raise ValueError(f"scan {text!r}: {name} {value} exceeds {INT32_MAX}")
    return key


def scan_name(key) -> str:
    """``{"animal_id": 11521, "session": 7, "scan_idx": 2, ...}`` (any mapping holding the scan key) ->
    ``"11521-7-2"``."""
    return "-".join(str(int(key[k])) for k in ("animal_id", "session", "scan_idx"))


def simulate(preset: str, seed: int, scan: str | None = None) -> tuple[dict, bool]:
    """Simulate a scan and insert it; returns (scan key, inserted).  Already present -> not inserted."""
    from pipeline.data.simulate import simulate as run_simulation
    from schemas import recordings

    if scan is not None and recordings.scan_exists(parse_scan(scan)):
        return parse_scan(scan), False
    recording = run_simulation(preset, seed=seed)
    if scan is not None:
        key = parse_scan(scan)
        recording.animal_id, recording.session, recording.scan_idx = key["animal_id"], key["session"], key["scan_idx"]
    recording.source = f"simulated: preset={preset} seed={seed}"
    check_ids(recording)
    return _insert_once(recording.scan_key, lambda: recordings.insert_recording(recording))


def import_sensorium(path: str | Path) -> tuple[dict, bool]:
    """Import one Sensorium folder or .zip; returns (scan key, inserted)."""
    from pipeline.data.sensorium import IMAGE_ID_NAMES, read_sensorium
    from schemas import recordings

    recording = read_sensorium(path, limits=import_budget().limits)
    recording.source = recording.source or Path(path).name
    check_ids(recording, path)
    image_id_name = next((n for n in IMAGE_ID_NAMES if n in recording.extra_trial_arrays), IMAGE_ID_NAMES[0])
    return _insert_once(recording.scan_key, lambda: recordings.insert_recording(recording, image_id_name=image_id_name))


def export_sensorium(scan: str, out: str | Path) -> Path:
    """Write a stored scan back in the Sensorium layout."""
    from pipeline.data.sensorium import write_sensorium
    from schemas import recordings

    key = parse_scan(scan)
    if not recordings.scan_exists(key):
        raise LookupError(f"scan {scan} is not in the database")
    return write_sensorium(recordings.fetch_recording(key), out)


def import_cifar10(path: str | Path, name: str = "cifar10") -> tuple[dict, bool]:
    """Import a ``cifar-10-batches-py`` folder as grayscale; returns (key, inserted)."""
    from pipeline.data.cifar import read_cifar10
    from schemas import db
    from schemas.classifiers import ClassificationSet

    images = read_cifar10(path, budget=import_budget())
    with db.named_lock("import"):
        return ClassificationSet.add(name, images)


def photo_classes(n_train_per_class: int, n_test_per_class: int, seed: int = 0, name: str = "photos"):
    """Insert the embedded photograph classification set; returns (key, inserted)."""
    from pipeline.data.photo_classes import photo_classification_set
    from schemas.classifiers import ClassificationSet

    if ClassificationSet & dict(classification_set=name):
        return dict(classification_set=name), False
    return ClassificationSet.add(name, photo_classification_set(n_train_per_class, n_test_per_class, seed))


def shapes_classes(
    n_train_per_class: int, n_validation_per_class: int, n_test_per_class: int, seed: int = 0, name: str = "shapes"
):
    """Insert the shapes classification set (:mod:`pipeline.data.shapes`, with its own validation split);
    returns (key, inserted)."""
    from pipeline.data.shapes import shapes_classification_set
    from schemas.classifiers import ClassificationSet

    if ClassificationSet & dict(classification_set=name):
        return dict(classification_set=name), False
    images = shapes_classification_set(n_train_per_class, n_validation_per_class, n_test_per_class, seed)
    return ClassificationSet.add(name, images)


def _insert_extracted(
    traces,
    schedule,
    scan: str,
    extraction: dict | None,
    source_kind: str,
    source: str,
    um_per_pixel: float,
    depth_um: float,
    area: str,
    layer: str,
) -> tuple[dict, bool]:
    """Extract a scan from traces + schedule and insert it with its extraction and ROIs."""
    from pipeline.data.extraction import extract
    from pipeline.data.suite2p import content_hash
    from schemas import recordings

    key = parse_scan(scan)
    config = recordings.ExtractionConfig.validated(extraction or {})
    # every check runs first: bad input is refused even where the same traces are already imported
    recording, footprints = extract(
        traces,
        schedule,
        config,
        key,
        um_per_pixel=um_per_pixel,
        plane_depths_um=(depth_um,),
        area=area,
        layer=layer,
        source=source,
    )
    source_hash = content_hash(traces, schedule)
    same = _extracted_scan(source_hash, config)
    if same:
        return same, False
    if recordings.scan_exists(key):
        raise recordings.DuplicateScanError(
            f"scan {scan} is already in the database with other data; give another --scan for this extraction"
        )
    then = _extraction_writer(
        config,
        footprints,
        recording.unit_ids,
        source_kind,
        source_hash,
        traces.n_frames,
        len(traces.footprints),
        um_per_pixel,
    )
    return recordings.insert_recording(recording, image_id_name="image_id", then=then), True


def _extracted_scan(source_hash: str, config) -> dict[str, int] | None:
    """The key of the scan already extracted from the same source with the same extraction config, if any."""
    from schemas import recordings

    same = recordings.Extraction & dict(source_hash=source_hash, extraction_hash=config.hash)
    if not same:
        return None
    row = same.to_dicts()[0]
    return {k: int(row[k]) for k in ("animal_id", "session", "scan_idx")}


def _extraction_writer(
    config,
    footprints,
    unit_ids,
    source_kind: str,
    source_hash: str,
    n_frames: int,
    n_rois: int,
    um_per_pixel: float,
):
    """The step ``insert_recording`` runs inside the scan's transaction (all rows or none): the extraction
    config and the scan's Extraction rows (``n_frames`` movie frames, ``n_rois`` detected ROIs)."""
    from schemas import recordings

    def then(scan_key: dict) -> None:
        config_key = recordings.ExtractionConfig.add(config)
        recordings.Extraction.inserter(
            footprints, unit_ids, config_key, source_kind, source_hash, n_frames, n_rois, um_per_pixel
        )(scan_key)

    return then


def import_suite2p(
    folder: str | Path,
    stimuli: str | Path,
    images: str | Path,
    scan: str,
    behavior: str | Path | None = None,
    extraction: dict | None = None,
    um_per_pixel: float = 1.0,
    depth_um: float = 0.0,
    area: str = "unknown",
    layer: str = "unknown",
) -> tuple[dict, bool]:
    """Import a suite2p output folder with its stimulus table as scan ``scan``; returns (key, inserted).

    The same folder under the same extraction config is imported once (a second call returns the
    existing scan); another extraction config makes another scan.
    """
    from pipeline.data.suite2p import read_schedule, read_suite2p

    budget = import_budget()  # one import: the folder, the table and the .npz files share the limits
    traces = read_suite2p(folder, budget)
    schedule = read_schedule(stimuli, images, behavior, budget)
    return _insert_extracted(
        traces,
        schedule,
        scan,
        extraction,
        "suite2p",
        f"suite2p:{Path(folder).name}",
        um_per_pixel,
        depth_um,
        area,
        layer,
    )


def import_nwb(
    path: str | Path, scan: str | None = None, extraction: dict | None = None, um_per_pixel: float = 1.0
) -> tuple[dict, bool]:
    """Import one NWB file; returns (scan key, inserted).

    A file with per-trial responses (as ``export nwb`` writes it) becomes the scan it holds; a file
    with frame-sampled traces goes through the window extraction of ``extraction``.  ``scan``
    overrides the file's ``session_id``.
    """
    from pipeline.data.extraction import ExtractionConfig
    from pipeline.data.nwb import read_nwb
    from schemas import recordings

    config = ExtractionConfig.from_dict(extraction or {})
    key = parse_scan(scan) if scan else None
    recording, footprints, info = read_nwb(path, config, key, budget=import_budget())
    if "config" in info:  # a scan exported with its extraction: it keeps the config it was extracted with
        config = ExtractionConfig.from_dict(info["config"])
        um_per_pixel = float(info.get("um_per_pixel", um_per_pixel))
    recording.source = recording.source or f"nwb:{Path(path).name}"
    check_ids(recording, path)
    if recordings.scan_exists(recording.scan_key):
        return recording.scan_key, False
    has_rois = len(footprints) and any(len(p) for p in footprints.pixels)
    then = None
    if info["layout"] == "frames" or has_rois:
        import hashlib

        digest = hashlib.md5()
        with open(path, "rb") as f:  # streamed: the file may be far larger than what was read from it
            for block in iter(lambda: f.read(2**24), b""):
                digest.update(block)
        source_hash = digest.hexdigest()
        same = _extracted_scan(source_hash, config)
        if same:
            return same, False
        then = _extraction_writer(
            config, footprints, recording.unit_ids, "nwb", source_hash, info["n_frames"], info["n_rois"], um_per_pixel
        )

    return recordings.insert_recording(recording, image_id_name="image_id", then=then), True


def export_nwb(
    scan: str,
    out: str | Path,
    *,
    session_start: str | datetime.datetime,
    experimenter: Sequence[str],
    age: str,
    sex: str,
    institution: str = "",
) -> Path:
    """Write a stored scan (with its ROI footprints when it has them) to a new NWB file.

    Scans do not record when, by whom or on which animal's age they were recorded, so these are
    required here: ``session_start`` (ISO 8601 with a UTC offset, e.g. ``2024-03-01T09:30+01:00``),
    ``experimenter`` ("Last, First", one or more), ``age`` (ISO 8601 duration, e.g. ``P90D``) and
    ``sex`` (M, F, U or O); the species is the scan's ``Animal.species``.
    """
    from pipeline.data.nwb.writer import SessionInfo, write_nwb
    from schemas import recordings

    key = parse_scan(scan)
    if not recordings.scan_exists(key):
        raise LookupError(f"scan {scan} is not in the database")
    if isinstance(session_start, str):
        try:
            session_start = datetime.datetime.fromisoformat(session_start)
        except ValueError:
            raise ValueError(f"session start {session_start!r}: not ISO 8601, e.g. 2024-03-01T09:30+01:00") from None
    species = (recordings.Animal & key).fetch1("species")
    session = SessionInfo(session_start, tuple(experimenter), age, sex, species, institution)
    extraction = None
    if recordings.Extraction & key:
        row = (recordings.Extraction * recordings.ExtractionConfig & key).fetch1()
        extraction = dict(
            config=row["config"], n_frames=row["n_frames"], n_rois=row["n_rois"], um_per_pixel=row["um_per_pixel"]
        )
    footprints = recordings.fetch_footprints(key)
    return write_nwb(recordings.fetch_recording(key), out, session, footprints=footprints, extraction=extraction)


def simulate_movie(out: str | Path, seed: int = 0, run_suite2p: bool = False) -> dict[str, Path]:
    """Write a simulated two-photon movie with its stimulus table, images, behaviour and ground truth."""
    from pipeline.data import movie

    sim = movie.simulate_movie(seed=seed)
    paths = movie.write_movie_folder(sim, out)
    if run_suite2p:
        from pipeline.data.suite2p import run_suite2p

        log.info("running suite2p on %s (%d frames)", paths["movie"], sim.n_frames)
        paths["suite2p"] = run_suite2p(paths["movie"], out, sim.frame_rate) / "suite2p"
    return paths
