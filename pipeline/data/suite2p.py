"""Read a suite2p output folder and a stimulus table; run suite2p on a movie.

A suite2p folder holds one ``plane<k>/`` per imaging plane (or is itself a plane folder)::

    F.npy       (n_rois, n_frames) float32 ROI fluorescence
    Fneu.npy    (n_rois, n_frames) float32 neuropil fluorescence
    spks.npy    (n_rois, n_frames) float32 deconvolved activity (from F - neucoeff * Fneu)
    iscell.npy  (n_rois, 2) float: is-cell label, classifier probability
    stat.npy    (n_rois,) dicts with ypix, xpix, lam (footprint) and med (y, x centre)
    ops.npy     dict of settings: fs (frame rate per plane, Hz), neucoeff, Ly, Lx, ...

The files are read with numpy only (:mod:`pipeline.data.safe_load`), each one's declared size checked
against the import limits (:mod:`pipeline.data.limits`) before its bytes are read.  ``stat.npy``
and ``ops.npy`` are pickled Python objects (that is how suite2p stores them); they are unpickled by
:class:`~pipeline.data.safe_load.ArrayOnlyUnpickler`, which rebuilds containers, numbers, strings
and numpy arrays and refuses every other class, so a collaborator's folder runs no code.

The stimulus table is a CSV file with one row per trial and the columns ``onset_frame`` (frame of
the image onset, counted in frames of one plane), ``image_id``, ``tier`` (train, validation, test,
final_test) and optionally ``trial_idx`` (default: the row number).  The images come in an ``.npz``
with ``images`` (n_images, H, W) and ``image_ids`` (n_images,); behaviour, when recorded, in an
``.npz`` of per-frame arrays ``pupil_size``, ``running_speed``, ``pupil_x``, ``pupil_y``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from pipeline.data.extraction import BEHAVIOR_NAMES, Footprints, InputError, Schedule, Traces
from pipeline.data.limits import Budget
from pipeline.data.safe_load import charge_pickle, read_npy, read_npz, read_pickled_npy

TRACE_FILES = ("F.npy", "Fneu.npy", "spks.npy")
INT64 = np.iinfo(np.int64)  # ids are stored as 64-bit signed integers


def plane_folders(folder: Path) -> list[Path]:
    """The plane folders of a suite2p output: ``plane0, plane1, ...`` (under ``suite2p/`` or not)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "folder", "no such folder")
    for root in (folder, folder / "suite2p"):
        planes = sorted(
            (p for p in root.glob("plane*") if p.is_dir() and p.name[5:].isdigit()), key=lambda p: int(p.name[5:])
        )
        if planes:
            return planes
    if (folder / "F.npy").exists() or (folder / "stat.npy").exists():
        return [folder]
    raise InputError(folder, "plane*", "no plane folder (plane0, ...) and no F.npy: not a suite2p output folder")


def _load(path: Path, budget: Budget, pickled: bool = False) -> np.ndarray:
    """One ``.npy`` of the folder, its declared size charged to ``budget`` before it is read."""
    if not path.exists():
        raise InputError(path, path.stem, "missing file")

    def error(problem: str) -> InputError:
        return InputError(path, path.stem, problem)

    try:
        return read_pickled_npy(path, budget, error) if pickled else read_npy(path, budget, error)
    except InputError:
        raise
    except (OSError, ValueError, EOFError) as e:
        raise error(f"cannot read ({' '.join(str(e).split())[:200]})") from None


def _float_traces(path: Path, n_rois: int | None, budget: Budget) -> np.ndarray:
    array = _load(path, budget)
    if array.dtype.kind != "f":
        raise InputError(path, path.stem, f"dtype {array.dtype}, expected floating point traces")
    if array.ndim != 2:
        raise InputError(path, path.stem, f"shape {array.shape}, expected (n_rois, n_frames)")
    if n_rois is not None and array.shape[0] != n_rois:
        raise InputError(path, path.stem, f"{array.shape[0]} ROIs, but stat.npy has {n_rois}")
    if not np.isfinite(array).all():
        raise InputError(path, path.stem, f"{int((~np.isfinite(array)).sum())} NaN or infinite value(s)")
    return array


def _plane(folder: Path, plane: int, budget: Budget) -> tuple[dict, Footprints, dict[str, np.ndarray]]:
    ops = _load(folder / "ops.npy", budget, pickled=True)
    if ops.dtype != object or ops.ndim != 0 or not isinstance(ops.item(), dict):
        raise InputError(folder / "ops.npy", "ops", "expected a pickled dict of suite2p settings")
    ops = ops.item()
    for name in ("fs",):
        if not isinstance(ops.get(name), (int, float, np.number)) or not ops[name] > 0:
            raise InputError(folder / "ops.npy", name, f"missing or not a positive number ({ops.get(name)!r})")

    stat_path = folder / "stat.npy"
    stat = _load(stat_path, budget, pickled=True)
    if stat.dtype != object or stat.ndim != 1 or not all(isinstance(s, dict) for s in stat):
        raise InputError(stat_path, "stat", "expected an array of per-ROI dicts")
    n_rois = len(stat)
    pixels, centres = [], []
    seen: dict[tuple[bytes, bytes], int] = {}
    for r, s in enumerate(stat):
        for key in ("ypix", "xpix", "lam"):
            if key not in s:
                raise InputError(stat_path, f"stat[{r}].{key}", "missing")
        y, x, lam = (np.asarray(s[k]) for k in ("ypix", "xpix", "lam"))
        if y.dtype.kind not in "iu" or x.dtype.kind not in "iu" or lam.dtype.kind != "f":
            raise InputError(
                stat_path,
                f"stat[{r}]",
                f"dtypes ypix {y.dtype}, xpix {x.dtype}, lam {lam.dtype}; "
                "expected integer pixel coordinates and floating point weights",
            )
        if not (len(y) == len(x) == len(lam)) or len(y) == 0:
            raise InputError(stat_path, f"stat[{r}]", f"ypix, xpix, lam have {len(y)}, {len(x)}, {len(lam)} entries")
        signature = (y.tobytes(), x.tobytes())
        if signature in seen:
            raise InputError(stat_path, f"stat[{r}]", f"duplicated ROI: same pixels as stat[{seen[signature]}]")
        seen[signature] = r
        pixels.append(np.column_stack([y, x, lam]).astype(np.float32))
        med = np.asarray(s.get("med", (np.median(y), np.median(x))), np.float64)
        centres.append(med[:2])

    iscell_path = folder / "iscell.npy"
    if not iscell_path.exists():
        raise InputError(iscell_path, "iscell", "missing file (needed to select cells; run suite2p's classifier)")
    iscell = _load(iscell_path, budget)
    if iscell.dtype.kind not in "fiub" or iscell.ndim != 2 or iscell.shape != (n_rois, 2):
        raise InputError(
            iscell_path, "iscell", f"shape {iscell.shape} dtype {iscell.dtype}, expected ({n_rois}, 2) numbers"
        )

    traces = {}
    for file in TRACE_FILES:
        traces[file] = _float_traces(folder / file, n_rois, budget)
    frames = {file: a.shape[1] for file, a in traces.items()}
    if len(set(frames.values())) != 1:
        raise InputError(folder, "n_frames", f"mismatched frame counts {frames}")
    footprints = Footprints(
        plane=np.full(n_rois, plane, np.int64),
        roi=np.arange(n_rois, dtype=np.int64),
        centre=np.array(centres, np.float64).reshape(n_rois, 2),
        pixels=pixels,
        iscell=iscell[:, 1].astype(np.float64),
    )
    return ops, footprints, traces


def read_suite2p(folder: str | Path, budget: Budget | None = None) -> Traces:
    """All planes of a suite2p output folder as one :class:`Traces` (ROIs of all planes stacked).

    Every file's size is charged to ``budget`` (default: the machine's import limits) before it is read.
    Raises :class:`InputError` naming the file and field: missing files (``iscell.npy``...), wrong
    dtypes, mismatched frame counts between files or planes, duplicated ROIs, bad ``ops``, a size
    over the import limits, a pickle naming a class other than containers, numbers and arrays.
    """
    budget = budget or Budget()
    planes = plane_folders(Path(folder))
    parts = []
    for k, plane in enumerate(planes):
        index = int(plane.name[5:]) if plane.name.startswith("plane") and plane.name[5:].isdigit() else k
        parts.append((plane, *_plane(plane, index, budget)))
    first_ops = parts[0][1]
    n_frames = {str(p): t["F.npy"].shape[1] for p, _, _, t in parts}
    if len(set(n_frames.values())) != 1:
        raise InputError(folder, "n_frames", f"planes have different frame counts {n_frames}")
    rates = {float(ops["fs"]) for _, ops, _, _ in parts}
    if len(rates) != 1:
        raise InputError(folder, "ops.fs", f"planes have different frame rates {sorted(rates)}")
    coefficients = {float(ops.get("neucoeff", 0.7)) for _, ops, _, _ in parts}
    footprints = Footprints(
        plane=np.concatenate([f.plane for _, _, f, _ in parts]),
        roi=np.concatenate([f.roi for _, _, f, _ in parts]),
        centre=np.concatenate([f.centre for _, _, f, _ in parts]),
        pixels=[p for _, _, f, _ in parts for p in f.pixels],
        iscell=np.concatenate([f.iscell for _, _, f, _ in parts]),
    )
    stack = {file: np.concatenate([t[file] for _, _, _, t in parts]) for file in TRACE_FILES}
    return Traces(
        footprints=footprints,
        frame_rate=float(first_ops["fs"]),
        fluorescence=stack["F.npy"],
        neuropil=stack["Fneu.npy"],
        spikes=stack["spks.npy"],
        neuropil_coefficient=coefficients.pop() if len(coefficients) == 1 else None,
        file=str(folder),
        names={"spikes": "spks.npy", "fluorescence": "F.npy", "iscell": "iscell.npy"},
    )


def content_hash(traces: Traces, schedule: Schedule | None = None) -> str:
    """md5 of the traces, footprints and stimulus schedule: identifies the imaging session, whatever
    folder it sits in."""
    import hashlib

    digest = hashlib.md5()
    for array in (traces.fluorescence, traces.neuropil, traces.spikes, traces.dff):
        if array is not None:
            digest.update(np.ascontiguousarray(array).tobytes())
    for pixels in traces.footprints.pixels:
        digest.update(np.ascontiguousarray(pixels).tobytes())
    if schedule is not None:
        for array in (
            schedule.onset_frame,
            schedule.image_id,
            schedule.trial_idx,
            schedule.images,
            schedule.image_ids,
            *(schedule.behavior[name] for name in sorted(schedule.behavior)),
        ):
            digest.update(np.ascontiguousarray(array).tobytes())
        digest.update("\0".join(map(str, schedule.tier)).encode())
        digest.update(" ".join(sorted(schedule.behavior)).encode())
    return digest.hexdigest()


def _npz(path: Path, what: str, budget: Budget) -> dict[str, np.ndarray]:
    if not path.exists():
        raise InputError(path, what, "missing file")
    return read_npz(path, budget, lambda problem: InputError(path, what, problem))


def read_schedule(
    stimuli: str | Path, images: str | Path, behavior: str | Path | None = None, budget: Budget | None = None
) -> Schedule:
    """Read a stimulus table (CSV), its images (.npz) and optional per-frame behaviour (.npz); every
    file's declared size is charged to ``budget`` (default: the machine's import limits) before it is read."""
    stimuli, images = Path(stimuli), Path(images)
    budget = budget or Budget()
    if not stimuli.exists():
        raise InputError(stimuli, "stimulus table", "missing file")
    # parsed rows take tens of bytes of Python objects per byte of text, like a pickle's objects
    charge_pickle(stimuli, budget, lambda problem: InputError(stimuli, "stimulus table", problem))
    with open(stimuli, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise InputError(stimuli, "rows", "no trials")
    columns = set(rows[0])
    for name in ("onset_frame", "image_id", "tier"):
        if name not in columns:
            raise InputError(stimuli, name, f"missing column (columns: {sorted(columns)})")

    def integers(name: str) -> np.ndarray:
        values = []
        for i, row in enumerate(rows):
            text = (row.get(name) or "").strip()
            try:
                value = int(text)
            except ValueError:
                raise InputError(stimuli, name, f"row {i + 1}: {text!r} is not an integer (wrong dtype)") from None
            if not INT64.min <= value <= INT64.max:
                raise InputError(stimuli, name, f"row {i + 1}: {text!r} is outside the 64-bit integer range")
            values.append(value)
        return np.array(values, np.int64)

    onset = integers("onset_frame")
    trial_idx = integers("trial_idx") if "trial_idx" in columns else np.arange(len(rows), dtype=np.int64)
    if len(np.unique(trial_idx)) != len(trial_idx):
        raise InputError(stimuli, "trial_idx", "duplicate trial numbers")
    image_data = _npz(images, "images", budget)
    for name in ("images", "image_ids"):
        if name not in image_data:
            raise InputError(images, name, f"missing array (arrays: {sorted(image_data)})")
    pixels, ids = image_data["images"], image_data["image_ids"]
    if pixels.ndim != 3 or pixels.dtype.kind not in "uif":
        raise InputError(
            images, "images", f"shape {pixels.shape} dtype {pixels.dtype}, expected (n_images, H, W) numbers"
        )
    if ids.shape != (len(pixels),) or ids.dtype.kind not in "iu":
        raise InputError(
            images, "image_ids", f"shape {ids.shape} dtype {ids.dtype}, expected ({len(pixels)},) integers"
        )
    if ids.size and ids.dtype.kind == "u" and ids.max() > INT64.max:
        raise InputError(images, "image_ids", f"id {ids.max()} is outside the 64-bit signed integer range")
    if len(np.unique(ids)) != len(ids):
        raise InputError(images, "image_ids", "duplicate image ids")
    behaviour, files = {}, {"onset_frame": str(stimuli), "image_id": str(stimuli), "tier": str(stimuli)}
    if behavior is not None:
        behavior = Path(behavior)
        data = _npz(behavior, "behavior", budget)
        unknown = sorted(set(data) - set(BEHAVIOR_NAMES))
        if unknown:
            raise InputError(behavior, unknown[0], f"unknown array; expected some of {list(BEHAVIOR_NAMES)}")
        for name, values in data.items():
            if values.ndim != 1 or values.dtype.kind not in "uif":
                raise InputError(
                    behavior, name, f"shape {values.shape} dtype {values.dtype}, expected (n_frames,) numbers"
                )
            if not np.isfinite(values).all():
                raise InputError(behavior, name, "NaN or infinite value(s)")
            behaviour[name] = values
            files[name] = str(behavior)
    return Schedule(
        onset_frame=onset,
        image_id=integers("image_id"),
        tier=np.array([r["tier"].strip() for r in rows]),
        trial_idx=trial_idx,
        images=pixels,
        image_ids=ids.astype(np.int64),
        behavior=behaviour,
        files=files,
    )


def run_suite2p(movie: str | Path, out: str | Path, frame_rate: float, **ops) -> Path:
    """Run suite2p (registration, detection, extraction, classification, deconvolution) on one tiff.

    ``ops`` override suite2p's defaults; the defaults here suit small movies of somata about 6
    pixels across.  Returns the output folder holding ``suite2p/plane0``.
    """
    import contextlib
    import io

    import suite2p

    movie, out = Path(movie), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    settings = dict(
        suite2p.default_ops(),
        fs=float(frame_rate),
        tau=0.4,
        nonrigid=False,
        spatial_scale=1,
        threshold_scaling=0.5,
        nimg_init=200,
        batch_size=500,
        do_regmetrics=False,
    )
    settings.update(ops)
    db = dict(data_path=[str(movie.parent)], tiff_list=[movie.name], save_path0=str(out), fast_disk=str(out))
    with contextlib.redirect_stdout(io.StringIO()):  # suite2p prints its progress; keep our output readable
        suite2p.run_s2p(ops=settings, db=db)
    return out
