"""Two-photon recordings: animals, sessions, scans, units, stimulus images, trials and responses.

A scan is inserted whole or not at all (:func:`insert_recording`), and read back whole as a
:class:`pipeline.data.recording.Recording` (:func:`fetch_recording`).  Responses are one
``(n_kept_trials, n_units)`` float32 ``.npy`` per scan in the object store, so one scan's matrix
loads with a single read; withheld trials (competition ``final_test`` with zeroed responses) have
no row in it.

A scan extracted from imaging traces (suite2p folder, NWB file) also has an :class:`Extraction` row
naming its :class:`ExtractionConfig` and source, with the ROI (footprint and centre) of each unit.
"""

from __future__ import annotations

import hashlib

import datajoint as dj
import numpy as np

from pipeline.data import recording as rec
from pipeline.data.recording import TIERS, Recording
from schemas import db
from schemas.binding import StageSchema, tables_kept_in

schema = StageSchema("recordings")

_TIER_ENUM = ", ".join(f"'{t}'" for t in TIERS)


class DuplicateScanError(ValueError):
    """The scan is already in the database."""


@schema
class Animal(dj.Manual):
    definition = """
    animal_id: int32
    ---
    species = 'Mus musculus': varchar(64)
    """


@schema
class Session(dj.Manual):
    definition = """
    -> Animal
    session: int32
    """


@schema
class StimulusImage(dj.Manual):
    definition = """
    # a stimulus image, stored once however many scans show it
    image_hash: char(32)                # md5 of dtype, shape and pixels
    ---
    height: int32                       # pixels
    width: int32                        # pixels
    dtype: varchar(16)                  # numpy dtype of the source pixels
    pixels: <npy@pipeline>              # (height, width) grey levels 0-255, source dtype
    """

    @staticmethod
    def content_hash(image: np.ndarray) -> str:
        image = np.ascontiguousarray(image)
        digest = hashlib.md5(f"{image.dtype.str}{image.shape}".encode())
        digest.update(image.tobytes())
        return digest.hexdigest()


@schema
class Scan(dj.Manual):
    definition = """
    # one two-photon scan and its stimulus presentation
    -> Session
    scan_idx: int32
    ---
    area: varchar(32)                   # brain area(s) of the units, e.g. 'V1'
    layers: varchar(64)                 # cortical layers of the units, e.g. 'L2/3,L4'
    depth_min = null: float32           # shallowest unit, micrometres below the surface
    depth_max = null: float32           # deepest unit, micrometres
    frame_rate = null: float32          # Hz, when known
    n_trials: int32
    n_units: int32
    n_withheld: int32                   # trials whose responses were withheld (not stored)
    image_height: int32                 # source image height, pixels
    image_width: int32                  # source image width, pixels
    image_id_name: varchar(64)          # name of the per-trial image-id array in the source
    source_dtypes: json                 # numpy dtype of each source array, for a faithful export
    simulated: bool                     # True for data from pipeline.data.simulate
    source: varchar(1024)               # where the data came from
    """

    class Unit(dj.Part):
        definition = """
        -> master
        unit_id: int32
        ---
        unit_index: int32               # column of this unit in the response matrix
        area: varchar(32)
        layer: varchar(32)
        cortical_x: float64             # micrometres
        cortical_y: float64             # micrometres
        cortical_z: float64             # micrometres (depth)
        """

    class Image(dj.Part):
        definition = """
        # the scan's stimulus ids and the images they name
        -> master
        image_id: int64                 # the experiment's image id
        ---
        -> StimulusImage
        """

    class Trial(dj.Part):
        definition = """
        -> master
        trial: int32                    # trial file index (the order of the source files)
        ---
        trial_idx: int64                # the experiment's trial number
        -> master.Image
        tier: enum({tiers})
        withheld: bool                  # responses withheld (zeros in the source, not stored)
        response_row = null: int32      # row in Responses.matrix; null when withheld
        pupil_size: float64
        pupil_size_change: float64
        running_speed: float64          # cm/s
        pupil_x: float64                # horizontal eye position
        pupil_y: float64                # vertical eye position
        """.format(tiers=_TIER_ENUM)

    class Responses(dj.Part):
        definition = """
        # deconvolved responses of the non-withheld trials, one matrix per scan
        -> master
        ---
        matrix: <npy@pipeline>  # (n_kept_trials, n_units) float32 (source dtype), rows by trial, columns by unit_index
        """

    class TrialArray(dj.Part):
        definition = """
        # further per-trial arrays carried by the source, kept for a faithful export
        -> master
        name: varchar(64)
        ---
        values: <npy@pipeline>          # (n_trials, ...) in trial file order
        """

    def responses(self, key: dict | None = None, mmap: bool = False) -> np.ndarray:
        """(n_kept_trials, n_units) float32 response matrix of one scan."""
        ref = ((Scan.Responses & self) & (key or {})).fetch1("matrix")
        if mmap:
            return ref.load(mmap_mode="r")
        if db.is_local_store(ref.store):
            # One copy out of the page cache: load() reads the file into a buffer and then parses a
            # second copy out of it, about 3x slower for a Sensorium-sized scan.  Remote stores keep
            # load(): DataJoint's memory map of a remote file is a local cache it never refreshes.
            return np.array(ref.load(mmap_mode="r"))
        return ref.load()


@schema
class GroundTruth(dj.Manual):
    definition = """
    # what the simulator knows about a simulated scan
    -> Scan
    ---
    rates: <npy@pipeline>               # (n_images, n_units) noise-free mean responses, images by Scan.Image order
    rate_image_ids: <npy@pipeline>      # (n_images,) image ids of the rows of rates
    extra: <blob>                       # further per-unit arrays, by unit_index
    """

    class Unit(dj.Part):
        definition = """
        -> master
        -> Scan.Unit
        ---
        unit_type: varchar(32)          # simulated functional type
        orientation = null: float32     # preferred orientation, radians in [0, pi); null when orientation-free
        reliability: float32            # expected oracle correlation
        """


_TYPED_ARRAYS = (
    "responses",
    "behavior",
    "pupil_center",
    "trial_idx",
    "tiers",
    "unit_ids",
    "unit_area",
    "unit_layer",
    "unit_xyz",
)


def scan_restriction(key) -> dict:
    """The scan key (animal_id, session, scan_idx as ints) of any mapping that holds it."""
    return {k: int(key[k]) for k in ("animal_id", "session", "scan_idx")}


def scan_exists(key) -> bool:
    return bool(Scan & scan_restriction(key))


def insert_recording(recording: Recording, image_id_name: str = "frame_image_id", then=None) -> dict:
    """Insert one scan with its units, images, trials and responses in one transaction.

    ``then(key)``, when given, inserts further rows that belong to the scan inside the same
    transaction.  Returns the scan key.  Raises :class:`DuplicateScanError` when the scan is already present;
    on any other failure nothing is left in the database (store files written before the failure
    are orphans for ``populate gc``).
    """
    recording.validate()
    key = recording.scan_key
    if scan_exists(key):
        raise DuplicateScanError(f"scan {recording.scan_name} is already in the database; nothing inserted")
    withheld = np.asarray(recording.withheld, bool)
    image_hashes = [StimulusImage.content_hash(image) for image in recording.images]
    with dj.conn().transaction:
        Animal.insert1(dict(animal_id=key["animal_id"]), skip_duplicates=True)
        Session.insert1(dict(animal_id=key["animal_id"], session=key["session"]), skip_duplicates=True)
        stored = set((StimulusImage & [dict(image_hash=h) for h in image_hashes]).to_arrays("image_hash"))
        new = {h: image for h, image in zip(image_hashes, recording.images) if h not in stored}
        StimulusImage.insert(
            dict(image_hash=h, height=image.shape[0], width=image.shape[1], dtype=image.dtype.str, pixels=image)
            for h, image in new.items()
        )
        Scan.insert1(_scan_row(recording, image_id_name))
        Scan.Unit.insert(_unit_rows(recording))
        Scan.Image.insert(dict(key, image_id=int(i), image_hash=h) for i, h in zip(recording.image_ids, image_hashes))
        Scan.Trial.insert(_trial_rows(recording))
        Scan.Responses.insert1(dict(key, matrix=np.ascontiguousarray(recording.responses[~withheld])))
        Scan.TrialArray.insert(
            dict(key, name=name, values=np.asarray(values)) for name, values in recording.extra_trial_arrays.items()
        )
        if recording.ground_truth is not None:
            _insert_ground_truth(recording)
        if then is not None:
            then(key)
    return key


def _scan_row(recording: Recording, image_id_name: str) -> dict:
    """The :class:`Scan` row of a recording: areas, layers, depth range (um), counts, source."""
    xyz = np.asarray(recording.unit_xyz, np.float64)
    return dict(
        recording.scan_key,
        area=",".join(sorted(set(map(str, recording.unit_area)))),
        layers=",".join(sorted(set(map(str, recording.unit_layer)))),
        depth_min=float(xyz[:, 2].min()) if len(xyz) else None,
        depth_max=float(xyz[:, 2].max()) if len(xyz) else None,
        frame_rate=recording.frame_rate,
        n_trials=recording.n_trials,
        n_units=recording.n_units,
        n_withheld=int(np.asarray(recording.withheld, bool).sum()),
        image_height=int(recording.images.shape[1]),
        image_width=int(recording.images.shape[2]),
        image_id_name=image_id_name,
        source_dtypes={name: np.asarray(getattr(recording, name)).dtype.str for name in _TYPED_ARRAYS},
        simulated=recording.ground_truth is not None,
        source=recording.source[:1024],
    )


def _unit_rows(recording: Recording):
    """:class:`Scan.Unit` rows, one per response column: area, layer and cortical position (um)."""
    xyz = np.asarray(recording.unit_xyz, np.float64)
    units = zip(recording.unit_ids, recording.unit_area, recording.unit_layer, xyz)
    return (
        dict(
            recording.scan_key,
            unit_id=int(u),
            unit_index=i,
            area=str(a),
            layer=str(layer),
            cortical_x=float(x[0]),
            cortical_y=float(x[1]),
            cortical_z=float(x[2]),
        )
        for i, (u, a, layer, x) in enumerate(units)
    )


def _trial_rows(recording: Recording):
    """:class:`Scan.Trial` rows in trial file order; a withheld trial has no response row."""
    withheld = np.asarray(recording.withheld, bool)
    kept_rows = np.cumsum(~withheld) - 1
    behavior = np.asarray(recording.behavior, np.float64)
    pupil = np.asarray(recording.pupil_center, np.float64)
    return (
        dict(
            recording.scan_key,
            trial=t,
            trial_idx=int(recording.trial_idx[t]),
            image_id=int(recording.trial_image_ids[t]),
            tier=str(recording.tiers[t]),
            withheld=bool(withheld[t]),
            response_row=None if withheld[t] else int(kept_rows[t]),
            pupil_size=behavior[t, 0],
            pupil_size_change=behavior[t, 1],
            running_speed=behavior[t, 2],
            pupil_x=pupil[t, 0],
            pupil_y=pupil[t, 1],
        )
        for t in range(recording.n_trials)
    )


def _insert_ground_truth(recording: Recording) -> None:
    """The simulator's rates (n_images, n_units) and per-unit type, orientation and reliability."""
    key, truth = recording.scan_key, recording.ground_truth
    GroundTruth.insert1(
        dict(
            key,
            rates=np.asarray(truth.rates, np.float32),
            rate_image_ids=np.asarray(recording.image_ids, np.int64),
            extra={k: np.asarray(v) for k, v in truth.extra.items()},
        )
    )
    GroundTruth.Unit.insert(
        dict(
            key,
            unit_id=int(u),
            unit_type=str(kind),
            orientation=None if not np.isfinite(o) else float(o),
            reliability=float(r),
        )
        for u, kind, o, r in zip(recording.unit_ids, truth.unit_type, truth.orientation, truth.reliability)
    )


def _radians(orientation) -> np.ndarray:
    """(n_units,) float64 orientations in radians, NaN where the stored value is null (orientation-free)."""
    return np.array([np.nan if o is None else o for o in orientation], np.float64)


def ground_truth_of(scan_key) -> dict | None:
    """The simulator's ``unit_type`` (n_units,) str and ``orientation`` (n_units,) radians (NaN where
    orientation-free) in unit order (``unit_index``), or None for a recorded scan."""
    query = GroundTruth.Unit * Scan.Unit & scan_key
    if not query:
        return None
    types, orientation = query.to_arrays("unit_type", "orientation", order_by="unit_index")
    return dict(unit_type=types.astype(str), orientation=_radians(orientation))


def fetch_recording(key) -> Recording:
    """Read one scan back as a :class:`Recording` (every array as imported)."""
    key = scan_restriction(key)
    scan = (Scan & key).fetch1()
    units = (Scan.Unit & key).to_arrays(order_by="unit_index")
    units = {name: units[name] for name in units.dtype.names}
    images = (Scan.Image * StimulusImage & key).to_dicts(order_by="image_id")
    trials = (Scan.Trial & key).to_arrays(order_by="trial")
    withheld = trials["withheld"].astype(bool)
    matrix = (Scan.Responses & key).fetch1("matrix").load()
    dtypes = scan["source_dtypes"]
    responses = np.zeros((scan["n_trials"], scan["n_units"]), matrix.dtype)
    responses[~withheld] = matrix
    extra = {row["name"]: np.asarray(row["values"].load()) for row in (Scan.TrialArray & key).to_dicts()}
    truth = None
    if GroundTruth & key:
        gt = (GroundTruth & key).fetch1()
        gt_units = (GroundTruth.Unit * Scan.Unit & key).to_arrays(order_by="unit_index")
        truth = rec.GroundTruth(
            unit_type=np.asarray(gt_units["unit_type"]).astype(str),
            orientation=_radians(gt_units["orientation"]),
            rates=gt["rates"].load(),
            reliability=gt_units["reliability"].astype(np.float64),
            extra=dict(gt["extra"]),
        )
    return Recording(
        animal_id=key["animal_id"],
        session=key["session"],
        scan_idx=key["scan_idx"],
        images=np.stack([np.asarray(row["pixels"].load()) for row in images]),
        image_ids=np.array([row["image_id"] for row in images], np.int64),
        trial_idx=trials["trial_idx"].astype(dtypes["trial_idx"]),
        trial_image_ids=trials["image_id"].astype(np.int64),
        tiers=np.asarray(trials["tier"]).astype(dtypes["tiers"]),
        responses=responses,
        withheld=withheld,
        behavior=np.stack([trials["pupil_size"], trials["pupil_size_change"], trials["running_speed"]], 1).astype(
            dtypes["behavior"]
        ),
        pupil_center=np.stack([trials["pupil_x"], trials["pupil_y"]], 1).astype(dtypes["pupil_center"]),
        unit_ids=units["unit_id"].astype(dtypes["unit_ids"]),
        unit_area=np.asarray(units["area"]).astype(dtypes["unit_area"]),
        unit_layer=np.asarray(units["layer"]).astype(dtypes["unit_layer"]),
        unit_xyz=np.stack([units["cortical_x"], units["cortical_y"], units["cortical_z"]], 1).astype(
            dtypes["unit_xyz"]
        ),
        frame_rate=scan["frame_rate"],
        extra_trial_arrays=extra,
        source=scan["source"],
        ground_truth=truth,
    )


# Scans extracted from imaging traces: tables of this schema, kept in a module of their own.
KEPT_TABLES = {
    "schemas.extraction": ("Extraction", "ExtractionConfig", "fetch_footprints"),
    "schemas.config_notes": ("ConfigNote",),
}
__getattr__ = tables_kept_in(__name__, KEPT_TABLES)
