"""Read and write the Sensorium 2022 static dataset format (one scan per folder or .zip).

Layout (``i`` is the trial file index, 0..n_trials-1, and the index into every meta/trials array)::

    data/images/{i}.npy         (1, H, W) stimulus of trial i, grey levels 0-255
    data/responses/{i}.npy      (n_units,) deconvolved activity
    data/behavior/{i}.npy       (3,) pupil size, change of pupil size, running speed
    data/pupil_center/{i}.npy   (2,) horizontal, vertical eye position
    meta/neurons/*.npy          unit_ids, area, layer, animal_ids, sessions, scan_idx,
                                cell_motor_coordinates (n_units, 3) in micrometres
    meta/trials/*.npy           tiers, trial_idx, frame_image_id (or colorframeprojector_image_id,
                                or image_id) and further per-trial arrays
    meta/statistics/<images|responses|behavior|pupil_center>/<all|stimulus_frame>/
                                {mean,std,min,max,median}.npy

:func:`read_sensorium` turns a folder or zip into a validated :class:`Recording` without writing
anything to disk; :func:`write_sensorium` writes a :class:`Recording` back in the same layout.

Conventions of the conversion
- Every array keeps its source dtype (images, responses, behaviour, pupil centre, unit ids,
  coordinates, strings), so that read -> write reproduces each file bit for bit.
  ``trial_image_ids`` is the exception: it is int64, and the source image-id array itself is kept
  verbatim in ``extra_trial_arrays`` under its source name (see below).
- ``extra_trial_arrays`` holds every meta/trials array except ``tiers`` and ``trial_idx``, verbatim,
  including the image-id array (``frame_image_id`` etc.), plus the derived boolean
  ``behavior_withheld`` (not a source file, never written back).  The writer writes
  ``trial_image_ids`` as ``frame_image_id`` only when no image-id array is among the extras.
- Withheld data (competition scans): a ``test`` or ``final_test`` tier whose responses are all
  exactly zero is marked ``withheld``; a tier (any) whose behaviour and pupil centre are all exactly
  zero is marked ``behavior_withheld``.  The zeros are kept in the arrays but are not data.
- meta/statistics is derived data: it is ignored when reading and recomputed when writing.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from pipeline.data.recording import TIERS, Recording, RecordingError
from pipeline.progress import progress_bar

IMAGE_ID_NAMES = ("frame_image_id", "colorframeprojector_image_id", "image_id")
"""Names of the per-trial image-id array, in order of preference."""

BEHAVIOR_WITHHELD = "behavior_withheld"
"""Key of the derived (n_trials,) bool array in ``extra_trial_arrays``: behaviour was zeroed."""

DERIVED_TRIAL_ARRAYS = frozenset({BEHAVIOR_WITHHELD})
"""Keys of ``extra_trial_arrays`` that the reader derives and the writer does not write."""

WITHHOLDABLE_TIERS = ("test", "final_test")
"""Tiers whose responses competition scans ship zeroed."""

STATISTICS = ("mean", "std", "min", "max", "median")
STATISTICS_SOURCES = ("all", "stimulus_frame")

_TRIAL_DATA = ("images", "responses", "behavior", "pupil_center")
_UNIT_META = ("unit_ids", "area", "layer", "cell_motor_coordinates")
_SCAN_META = {"animal_id": "animal_ids", "session": "sessions", "scan_idx": "scan_idx"}
_FOLDER_NAME = re.compile(r"static(\d+)-(\d+)-(\d+)(?:-|$)")
_NPY_MAGIC = b"\x93NUMPY"


class SensoriumFormatError(ValueError):
    """A Sensorium dataset is malformed.

    Attributes
    ----------
    file : path of the offending file or folder, relative to the dataset root.
    problem : what is wrong with it.
    dataset : the folder or zip being read, when known.
    """

    def __init__(self, file: str, problem: str, dataset: str | Path | None = None):
        self.file, self.problem, self.dataset = file, problem, dataset
        where = f" (dataset {dataset})" if dataset else ""
        super().__init__(f"{file}: {problem}{where}")


# --------------------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class ImportLimits:
    """Bounds on what one import may read, checked before the bytes are decompressed or loaded.

    A zip member's declared size is checked before it is inflated and its inflated bytes are
    capped at that size, so a zip bomb is refused at its header; a .npy header's shape is
    checked against the file's bytes (see :class:`_NpyParser`), so arrays are bounded by files.
    """

    max_file_bytes: int = 512 * 2**20
    """largest single file (Sensorium's largest are per-trial images of ~150 kB)"""
    max_total_bytes: int = 16 * 2**30
    """all files of one dataset together, decompressed"""


DEFAULT_LIMITS = ImportLimits()


class _Tree:
    """Read-only access to the files of one dataset, by path relative to its root."""

    label: str  # the folder or zip, for messages
    name: str  # name of the dataset folder (carries the scan identity)
    limits: ImportLimits = DEFAULT_LIMITS
    _read_bytes: int = 0

    def charge(self, rel: str, size: int) -> None:
        """Count ``size`` bytes about to be read from ``rel`` against the limits; refuse past them."""
        if size > self.limits.max_file_bytes:
            raise self.error(
                rel,
                f"{size / 2**20:.0f} MiB decompressed exceeds the import limit of "
                f"{self.limits.max_file_bytes / 2**20:.0f} MiB per file",
            )
        self._read_bytes += size
        if self._read_bytes > self.limits.max_total_bytes:
            raise self.error(
                rel,
                f"the dataset exceeds the import limit of {self.limits.max_total_bytes / 2**30:.1f} GiB "
                "decompressed in all",
            )

    def listdir(self, folder: str) -> list[str] | None:
        """File names directly inside ``folder``, or None when the folder does not exist."""
        raise NotImplementedError

    def read(self, rel: str) -> bytes:
        raise NotImplementedError

    def exists(self, rel: str) -> bool:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def error(self, rel: str, problem: str) -> SensoriumFormatError:
        return SensoriumFormatError(rel, problem, self.label)


class _FolderTree(_Tree):
    def __init__(self, root: Path, label: str):
        self.root, self.label, self.name = root, label, root.name

    def listdir(self, folder: str) -> list[str] | None:
        path = self.root / folder
        if not path.is_dir():
            return None
        return [entry.name for entry in os.scandir(path) if entry.is_file()]

    def read(self, rel: str) -> bytes:
        try:
            self.charge(rel, (self.root / rel).stat().st_size)
            return (self.root / rel).read_bytes()
        except FileNotFoundError:
            raise self.error(rel, "missing file") from None
        except OSError as e:
            raise self.error(rel, f"cannot read file ({e})") from None

    def exists(self, rel: str) -> bool:
        return (self.root / rel).is_file()


class _ZipTree(_Tree):
    def __init__(self, archive: zipfile.ZipFile, prefix: str, label: str, name: str):
        self.archive, self.prefix, self.label, self.name = archive, prefix, label, name
        self.members = {
            info.filename[len(prefix) :]: info
            for info in archive.infolist()
            if info.filename.startswith(prefix) and not info.is_dir()
        }
        self.folders: dict[str, list[str]] = {}
        for rel in self.members:
            folder, _, file = rel.rpartition("/")
            self.folders.setdefault(folder, []).append(file)
            # register every ancestor so that listdir tells empty from missing folders
            while folder:
                folder = folder.rpartition("/")[0]
                self.folders.setdefault(folder, [])

    def check_declared(self) -> None:
        """Refuse a zip whose members declare more than the limits before inflating any."""
        declared = sum(info.file_size for info in self.members.values())
        if declared > self.limits.max_total_bytes:
            raise self.error(
                ".",
                f"the zip declares {declared / 2**30:.1f} GiB decompressed, over the import limit of "
                f"{self.limits.max_total_bytes / 2**30:.1f} GiB",
            )
        for rel, info in self.members.items():
            if info.file_size > self.limits.max_file_bytes:
                raise self.error(
                    rel,
                    f"{info.file_size / 2**20:.0f} MiB decompressed exceeds the import limit of "
                    f"{self.limits.max_file_bytes / 2**20:.0f} MiB per file",
                )

    def listdir(self, folder: str) -> list[str] | None:
        return self.folders.get(folder.rstrip("/"))

    def read(self, rel: str) -> bytes:
        info = self.members.get(rel)
        if info is None:
            raise self.error(rel, "missing file")
        self.charge(rel, info.file_size)
        try:
            with self.archive.open(info) as member:
                # Never inflate past the declared size, whatever the compressed stream holds.
                data = member.read(info.file_size + 1)
            if len(data) != info.file_size:
                raise self.error(
                    rel, f"zip member inflates to another size than the {info.file_size} bytes it declares"
                )
            return data
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, RuntimeError, ValueError) as e:
            raise self.error(rel, f"cannot read zip member ({e})") from None

    def exists(self, rel: str) -> bool:
        return rel in self.members

    def close(self) -> None:
        self.archive.close()


def _open_tree(path: Path, limits: ImportLimits = DEFAULT_LIMITS) -> _Tree:
    """Find the dataset root in a folder or zip (the root itself or one level down)."""
    label = str(path)
    if not path.exists():
        raise SensoriumFormatError(path.name, "no such file or folder", label)
    if path.is_dir():
        for root in [path] + sorted(p for p in path.iterdir() if p.is_dir()):
            if (root / "data").is_dir() and (root / "meta").is_dir():
                tree = _FolderTree(root, label)
                tree.limits = limits
                return tree
        raise SensoriumFormatError(
            ".", "missing folder data/ or meta/ (looked in the folder and one level down)", label
        )
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise SensoriumFormatError(path.name, f"not a readable zip archive ({e})", label) from None
    names = archive.namelist()
    tops = {name.split("/", 1)[0] for name in names if "/" in name}
    for prefix in [""] + [top + "/" for top in sorted(tops) if not top.startswith("__MACOSX")]:
        if any(n.startswith(prefix + "data/") for n in names) and any(n.startswith(prefix + "meta/") for n in names):
            zipped = _ZipTree(archive, prefix, label, prefix.rstrip("/") or path.stem)
            zipped.limits = limits
            try:
                zipped.check_declared()
            except SensoriumFormatError:
                archive.close()
                raise
            return zipped
    archive.close()
    raise SensoriumFormatError(
        ".", "missing folder data/ or meta/ (looked at the top of the zip and one level down)", label
    )


# ---------------------------------------------------------------------------------------- .npy


class _NpyParser:
    """Parse .npy bytes without pickle; headers are cached because thousands of files share one.

    Not ``np.load(io.BytesIO(raw), allow_pickle=False)``: numpy parses the header (a Python literal)
    anew for every file and copies the data, which measured 100-124 us per file against 11-15 us here
    (trial files of 3 to 37k values, numpy 2, this machine's CPU): about 2.5 s more for a 6000-trial
    scan's 24000 files.  The header itself is still read by numpy's own
    ``np.lib.format.read_array_header_*``; only the split into header and data and the cache are ours.
    """

    def __init__(self, tree: _Tree):
        self.tree = tree
        self.headers: dict[bytes, tuple[np.dtype, tuple[int, ...], bool]] = {}

    def __call__(self, raw: bytes, rel: str) -> np.ndarray:
        """The array stored in ``raw`` (read-only view when possible); ``rel`` names it in errors."""
        if raw[:6] != _NPY_MAGIC or len(raw) < 10:
            raise self.tree.error(rel, "not a .npy file (bad magic string; corrupt or truncated)")
        major = raw[6]
        size_bytes = 2 if major == 1 else 4
        header_len = int.from_bytes(raw[8 : 8 + size_bytes], "little")
        offset = 8 + size_bytes + header_len
        header = raw[8 + size_bytes : offset]
        if len(header) != header_len:
            raise self.tree.error(rel, "truncated .npy header")
        parsed = self.headers.get(header)
        if parsed is None:
            parsed = self.parse_header(raw[:offset], rel)
            self.headers[header] = parsed
        dtype, shape, fortran = parsed
        count = int(np.prod(shape, dtype=np.int64))
        needed = count * dtype.itemsize
        if len(raw) - offset < needed:
            raise self.tree.error(
                rel, f"truncated .npy: {len(raw) - offset} data bytes, expected {needed} for shape {shape} {dtype}"
            )
        array = np.frombuffer(raw, dtype=dtype, count=count, offset=offset)
        return array.reshape(shape[::-1]).T if fortran else array.reshape(shape)

    def parse_header(self, prefix: bytes, rel: str) -> tuple[np.dtype, tuple[int, ...], bool]:
        stream = io.BytesIO(prefix)
        try:
            version = np.lib.format.read_magic(stream)
            read_header = (
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )
            shape, fortran, dtype = read_header(stream)
        except (ValueError, SyntaxError, UnicodeDecodeError, EOFError) as e:
            raise self.tree.error(rel, f"corrupt .npy header ({e})") from None
        if dtype.hasobject:
            raise self.tree.error(rel, f"array of dtype {dtype} holds pickled Python objects; refusing to unpickle")
        return dtype, tuple(int(n) for n in shape), bool(fortran)


# ------------------------------------------------------------------------------------- reading


class _Reader:
    """One pass over a dataset; every check raises :class:`SensoriumFormatError` naming the file."""

    def __init__(self, tree: _Tree, progress: bool):
        self.tree, self.progress = tree, progress
        self.parse = _NpyParser(tree)

    def error(self, rel: str, problem: str) -> SensoriumFormatError:
        return self.tree.error(rel, problem)

    # --- small arrays

    def load(self, rel: str) -> np.ndarray:
        return np.array(self.parse(self.tree.read(rel), rel))  # own, writable copy

    def folder(self, folder: str) -> list[str]:
        files = self.tree.listdir(folder)
        if files is None:
            raise self.error(folder, "missing folder")
        # hidden files (macOS "._0.npy" resource forks, ".DS_Store") are not part of the dataset
        return sorted(f for f in files if f.endswith(".npy") and not f.startswith("."))

    def numeric(self, rel: str, array: np.ndarray, kinds: str = "iuf") -> np.ndarray:
        if array.dtype.kind not in kinds:
            raise self.error(rel, f"non-numeric dtype {array.dtype}, expected numbers")
        return array

    def finite(self, rel: str, array: np.ndarray) -> np.ndarray:
        if array.dtype.kind in "fc" and not np.isfinite(array).all():
            raise self.error(rel, f"{int((~np.isfinite(array)).sum())} NaN or infinite value(s)")
        return array

    def integers(self, rel: str, array: np.ndarray) -> np.ndarray:
        """Integer ids; floats are accepted when every value is a whole number (then int64)."""
        self.numeric(rel, array)
        if array.dtype.kind == "f":
            self.finite(rel, array)
            if not np.array_equal(array, np.round(array)):
                raise self.error(rel, "non-integer values where integer ids are expected")
            return array.astype(np.int64)
        return array

    def strings(self, rel: str, array: np.ndarray) -> np.ndarray:
        if array.dtype.kind == "S":
            try:
                return np.char.decode(array, "utf-8")
            except UnicodeDecodeError:
                raise self.error(rel, "byte strings that are not UTF-8") from None
        if array.dtype.kind != "U":
            raise self.error(rel, f"dtype {array.dtype}, expected strings")
        return array

    def per(self, rel: str, array: np.ndarray, n: int, what: str, source: str) -> np.ndarray:
        if array.ndim == 0 or len(array) != n:
            got = "a scalar" if array.ndim == 0 else f"{len(array)} entries"
            raise self.error(rel, f"{got}, expected {n} (one per {what}, as in {source})")
        return array

    # --- meta

    def trials_meta(self) -> dict[str, np.ndarray]:
        """meta/trials arrays by name, each with one entry per trial."""
        files = self.folder("meta/trials")
        tiers_rel = "meta/trials/tiers.npy"
        if "tiers.npy" not in files:
            raise self.error(tiers_rel, "missing file")
        tiers = self.load(tiers_rel)
        if tiers.ndim != 1:
            raise self.error(tiers_rel, f"shape {tiers.shape}, expected (n_trials,)")
        tiers = self.strings(tiers_rel, tiers)
        unknown = sorted(set(tiers.tolist()) - set(TIERS))
        if unknown:
            raise self.error(tiers_rel, f"unknown tier value(s) {unknown}; expected one of {list(TIERS)}")
        arrays = {"tiers": tiers}
        for file in files:
            name = file[: -len(".npy")]
            if name == "tiers":
                continue
            rel = f"meta/trials/{file}"
            arrays[name] = self.per(rel, self.load(rel), len(tiers), "trial", tiers_rel)
        if "trial_idx" not in arrays:
            raise self.error("meta/trials/trial_idx.npy", "missing file")
        if BEHAVIOR_WITHHELD in arrays:
            raise self.error(
                f"meta/trials/{BEHAVIOR_WITHHELD}.npy", "name reserved for the derived withheld-behaviour flags"
            )
        return arrays

    def image_id_name(self, trials: dict[str, np.ndarray]) -> str:
        for name in IMAGE_ID_NAMES:
            if name in trials:
                return name
        expected = ", ".join(f"{n}.npy" for n in IMAGE_ID_NAMES)
        raise self.error("meta/trials", f"no image id array (expected one of {expected})")

    def units_meta(self) -> dict[str, np.ndarray]:
        self.folder("meta/neurons")
        ids_rel = "meta/neurons/unit_ids.npy"
        unit_ids = self.integers(ids_rel, self.load(ids_rel))
        if unit_ids.ndim != 1:
            raise self.error(ids_rel, f"shape {unit_ids.shape}, expected (n_units,)")
        values, counts = np.unique(unit_ids, return_counts=True)
        if (counts > 1).any():
            raise self.error(ids_rel, f"duplicate unit id(s) {values[counts > 1][:5].tolist()}")
        n = len(unit_ids)
        meta = {"unit_ids": unit_ids}
        for name in ("area", "layer"):
            rel = f"meta/neurons/{name}.npy"
            meta[name] = self.per(rel, self.strings(rel, self.load(rel)), n, "unit", ids_rel)
        rel = "meta/neurons/cell_motor_coordinates.npy"
        xyz = self.finite(rel, self.numeric(rel, self.per(rel, self.load(rel), n, "unit", ids_rel)))
        if xyz.shape != (n, 3):
            raise self.error(rel, f"shape {xyz.shape}, expected ({n}, 3)")
        meta["cell_motor_coordinates"] = xyz
        return meta

    def scan_identity(self, n_units: int) -> dict[str, int]:
        """animal_id, session, scan_idx from meta/neurons, else from the folder name."""
        match = _FOLDER_NAME.match(self.tree.name)
        identity = {}
        for k, (key, file) in enumerate(_SCAN_META.items()):
            rel = f"meta/neurons/{file}.npy"
            if self.tree.exists(rel):
                values = self.integers(rel, self.load(rel))
                self.per(rel, values, n_units, "unit", "meta/neurons/unit_ids.npy")
                distinct = np.unique(values)
                if len(distinct) != 1:
                    raise self.error(
                        rel, f"units disagree on the scan (values {distinct[:5].tolist()}); a dataset holds one scan"
                    )
                identity[key] = int(distinct[0])
            elif match:
                identity[key] = int(match.group(k + 1))
            else:
                raise self.error(
                    rel,
                    f"missing file, and the folder name {self.tree.name!r} is not static<animal>-<session>-<scan>-...",
                )
        return identity

    # --- per-trial data

    def trial_files(self, kind: str, n_trials: int) -> None:
        """Check that data/<kind> holds exactly the files 0.npy .. {n_trials-1}.npy."""
        folder = f"data/{kind}"
        indices = set()
        for file in self.folder(folder):
            stem = file[: -len(".npy")]
            if not stem.isdigit() or str(int(stem)) != stem:
                raise self.error(f"{folder}/{file}", "file name is not a trial index")
            indices.add(int(stem))
        source = "meta/trials/tiers.npy"
        missing = sorted(set(range(n_trials)) - indices)
        if missing:
            raise self.error(
                f"{folder}/{missing[0]}.npy",
                f"missing file ({len(indices)} trial files in {folder}, "
                f"{n_trials} trials in {source}; files 0..{n_trials - 1} expected)",
            )
        beyond = sorted(indices - set(range(n_trials)))
        if beyond:
            raise self.error(
                f"{folder}/{beyond[0]}.npy",
                f"trial index beyond the {n_trials} trials in {source} ({len(indices)} trial files in {folder})",
            )

    def arrays(self, kind: str, n_trials: int) -> Iterator[tuple[int, str, np.ndarray]]:
        """(i, relative path, array) of each trial file of ``data/<kind>`` (checked by :meth:`trial_files`)."""
        for i in progress_bar(range(n_trials), desc=f"reading {kind}", enabled=self.progress, leave=False):
            rel = f"data/{kind}/{i}.npy"
            yield i, rel, self.parse(self.tree.read(rel), rel)

    def stack(self, kind: str, n_trials: int, shape: tuple[int, ...], what: str) -> np.ndarray:
        """(n_trials, *shape) array of the per-trial files; shape and dtype must agree across trials."""
        out = None
        for i, rel, array in self.arrays(kind, n_trials):
            if out is None:
                self.numeric(rel, array)
                out = np.empty((n_trials, *shape), array.dtype)
            if array.shape != shape:
                raise self.error(rel, f"shape {array.shape}, expected {shape} ({what})")
            if array.dtype != out.dtype:
                raise self.error(rel, f"dtype {array.dtype}, but data/{kind}/0.npy has {out.dtype}")
            out[i] = array
        if out is None:
            return np.empty((0, *shape), np.float32)
        bad = ~np.isfinite(out).reshape(n_trials, -1).all(axis=1) if out.dtype.kind == "f" else np.zeros(n_trials, bool)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            self.finite(f"data/{kind}/{i}.npy", out[i])
        return out

    def images(self, trial_image_ids: np.ndarray, ids_rel: str) -> tuple[np.ndarray, np.ndarray]:
        """Unique images (n_images, H, W) sorted by id, and their ids; repeats must match bit for bit."""
        image_ids = np.unique(trial_image_ids)
        slot = {int(i): k for k, i in enumerate(image_ids)}
        first_trial = np.full(len(image_ids), -1)
        images = None
        for i, rel, array in self.arrays("images", len(trial_image_ids)):
            if images is None:
                self.numeric(rel, array)
                if array.ndim != 3 or array.shape[0] != 1:
                    raise self.error(rel, f"shape {array.shape}, expected (1, H, W)")
                images = np.empty((len(image_ids), *array.shape[1:]), array.dtype)
            if array.shape != (1, *images.shape[1:]):
                raise self.error(rel, f"shape {array.shape}, expected {(1, *images.shape[1:])} as in data/images/0.npy")
            if array.dtype != images.dtype:
                raise self.error(rel, f"dtype {array.dtype}, but data/images/0.npy has {images.dtype}")
            k = slot[int(trial_image_ids[i])]
            if first_trial[k] < 0:
                self.finite(rel, array)
                images[k] = array[0]
                first_trial[k] = i
            elif images[k].tobytes() != array.tobytes():  # bitwise: -0.0 vs 0.0 counts as different
                raise self.error(
                    rel,
                    f"image id {int(trial_image_ids[i])} (from {ids_rel}) is also shown in trial "
                    f"{first_trial[k]} (data/images/{first_trial[k]}.npy) with different pixels",
                )
        if images is None:
            images = np.empty((0, 1, 1), np.float32)
        return images, image_ids

    # --- whole dataset

    def read(self) -> Recording:
        trials = self.trials_meta()
        tiers = trials.pop("tiers")
        n_trials = len(tiers)
        trial_idx = self.integers("meta/trials/trial_idx.npy", trials.pop("trial_idx"))
        id_name = self.image_id_name(trials)
        ids_rel = f"meta/trials/{id_name}.npy"
        trial_image_ids = self.integers(ids_rel, trials[id_name]).astype(np.int64)

        units = self.units_meta()
        n_units = len(units["unit_ids"])
        identity = self.scan_identity(n_units)

        for kind in _TRIAL_DATA:  # fail on a missing or incomplete folder before reading gigabytes
            self.trial_files(kind, n_trials)
        images, image_ids = self.images(trial_image_ids, ids_rel)
        responses = self.stack("responses", n_trials, (n_units,), "one value per unit in meta/neurons/unit_ids.npy")
        behavior = self.stack("behavior", n_trials, (3,), "pupil size, its change, running speed")
        pupil_center = self.stack("pupil_center", n_trials, (2,), "horizontal, vertical eye position")

        withheld = _zeroed_tiers(tiers, responses, WITHHOLDABLE_TIERS)
        trials[BEHAVIOR_WITHHELD] = _zeroed_tiers(
            tiers, np.concatenate([behavior.reshape(n_trials, -1), pupil_center.reshape(n_trials, -1)], axis=1), TIERS
        )
        recording = Recording(
            animal_id=identity["animal_id"],
            session=identity["session"],
            scan_idx=identity["scan_idx"],
            images=images,
            image_ids=image_ids,
            trial_idx=trial_idx,
            trial_image_ids=trial_image_ids,
            tiers=tiers,
            responses=responses,
            withheld=withheld,
            behavior=behavior,
            pupil_center=pupil_center,
            unit_ids=units["unit_ids"],
            unit_area=units["area"],
            unit_layer=units["layer"],
            unit_xyz=units["cell_motor_coordinates"],
            extra_trial_arrays=trials,
            source=f"sensorium:{self.tree.label}",
        )
        try:
            return recording.validate()
        except RecordingError as e:  # every check above should have caught it first
            raise self.error(".", f"inconsistent recording ({e})") from e


def _zeroed_tiers(tiers: np.ndarray, values: np.ndarray, candidates: tuple[str, ...]) -> np.ndarray:
    """(n_trials,) bool: trials of a candidate tier in which every value of every trial is zero."""
    flat = values.reshape(len(tiers), -1)
    zeroed = np.zeros(len(tiers), bool)
    for tier in candidates:
        members = tiers == tier
        if members.any() and flat.shape[1] and not flat[members].any():
            zeroed |= members
    return zeroed


def read_sensorium(path: str | Path, progress: bool = False, limits: ImportLimits = DEFAULT_LIMITS) -> Recording:
    """Read one Sensorium static scan from its folder or .zip, validating everything first.

    Parameters
    ----------
    path : the dataset folder (holding ``data/`` and ``meta/``), a folder holding that folder, or a
        .zip holding it at its top level or one folder down.  Nothing is written anywhere; zips are
        read in memory.
    progress : show a progress bar per data folder.
    limits : bounds on the bytes read (see :class:`ImportLimits`).

    Returns
    -------
    A validated :class:`Recording` (see the module docstring for the conventions).

    Raises
    ------
    SensoriumFormatError : naming the offending file (relative to the dataset root) and the problem.
    """
    tree = _open_tree(Path(path), limits)
    try:
        return _Reader(tree, progress).read()
    finally:
        tree.close()


# ------------------------------------------------------------------------------------- writing


def image_statistics(images: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
    """Pixel statistics over all trials, without building the (n_trials, H, W) stack.

    Parameters
    ----------
    images : (n_images, H, W) unique images.
    counts : (n_images,) number of trials that showed each image.

    Returns
    -------
    ``{mean, std, min, max, median}`` as float64 scalars, equal to numpy's over the trial stack.
    """
    counts = np.asarray(counts, np.int64)
    shown = counts > 0
    images, counts = images[shown], counts[shown]
    if not len(images):
        return {name: np.array(np.nan) for name in STATISTICS}
    n = counts.sum() * images[0].size
    sums = np.array([image.sum(dtype=np.float64) for image in images])
    mean = float(counts @ sums) / n
    squares = np.array([np.square(image.astype(np.float64) - mean).sum() for image in images])
    return {
        "mean": np.array(mean),
        "std": np.array(np.sqrt(float(counts @ squares) / n)),
        "min": np.array(float(images.min())),
        "max": np.array(float(images.max())),
        "median": np.array(_weighted_median(images.reshape(len(images), -1), counts)),
    }


def _weighted_median(values: np.ndarray, counts: np.ndarray) -> float:
    """Median of the multiset in which row k of ``values`` (n_rows, P) appears ``counts[k]`` times.

    Same convention as :func:`numpy.median` (mean of the two middle values for an even count).
    Whole-number data with a modest range (8- or 16-bit grey levels, also stored as floats) goes
    through a weighted histogram; other data is sorted once.
    """
    total = int(counts.sum()) * values.shape[1]
    low, high = values.min(), values.max()
    whole = values.dtype.kind in "iu" or bool(np.all([np.array_equal(row, np.round(row)) for row in values]))
    if whole and float(high) - float(low) < 2**20:
        base = int(low)
        histogram = np.zeros(int(high) - base + 1, np.int64)
        for row, count in zip(values, counts):
            histogram += count * np.bincount((row - base).astype(np.int64), minlength=len(histogram))
        cumulative = np.cumsum(histogram)
        lower = np.searchsorted(cumulative, (total - 1) // 2, side="right") + base
        upper = np.searchsorted(cumulative, total // 2, side="right") + base
        return (float(lower) + float(upper)) / 2
    order = np.argsort(values, axis=None, kind="stable")
    sorted_values = values.reshape(-1)[order]
    cumulative = np.cumsum(counts[order // values.shape[1]])
    lower = sorted_values[np.searchsorted(cumulative, (total - 1) // 2, side="right")]
    upper = sorted_values[np.searchsorted(cumulative, total // 2, side="right")]
    return (float(lower) + float(upper)) / 2


def trial_statistics(values: np.ndarray) -> dict[str, np.ndarray]:
    """Per-column ``{mean, std, min, max, median}`` (float64) of (n_trials, k) ``values``."""
    values = np.asarray(values, np.float64)
    if not len(values):
        return {name: np.full(values.shape[1:], np.nan) for name in STATISTICS}
    return {
        "mean": values.mean(axis=0),
        "std": values.std(axis=0),
        "min": values.min(axis=0),
        "max": values.max(axis=0),
        "median": np.median(values, axis=0),
    }


def _strings(array: np.ndarray) -> np.ndarray:
    """A numpy unicode array (loadable without pickle), keeping an existing '<U' dtype as is."""
    array = np.asarray(array)
    return array if array.dtype.kind == "U" else array.astype(str)


def _save(root: Path, rel: str, array: np.ndarray) -> None:
    array = np.asarray(array)
    if array.dtype.hasobject:  # e.g. strings coming back from a database as Python objects
        if not all(isinstance(value, str) for value in array.flat):
            raise RecordingError(f"{rel}: object array that is not all strings cannot be written without pickle")
        array = array.astype(str)
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array, allow_pickle=False)


def write_sensorium(recording: Recording, out: str | Path, progress: bool = False) -> Path:
    """Write ``recording`` as a Sensorium static dataset folder.

    Parameters
    ----------
    recording : validated first; arrays are written in their own dtypes.
    out : the dataset folder to create; it must not exist or be empty.  The files are written to a
        hidden sibling folder first and moved into place at the end, so a failure leaves no
        half-written dataset behind.
    progress : show a progress bar while writing the trial files.

    Returns
    -------
    ``out`` as a Path.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out}: refusing to write a Sensorium dataset into an existing, non-empty path")
    recording.validate()
    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    try:
        _write(recording, staging, progress)
        if out.exists():
            out.rmdir()
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return out


def _write(recording: Recording, root: Path, progress: bool) -> None:
    n_trials, n_units = recording.n_trials, recording.n_units
    slot = {int(i): k for k, i in enumerate(recording.image_ids)}
    trial_slots = np.array([slot[int(i)] for i in recording.trial_image_ids], np.int64)

    for kind in _TRIAL_DATA:
        (root / "data" / kind).mkdir(parents=True)
    for i in progress_bar(range(n_trials), desc="writing trials", enabled=progress, leave=False):
        np.save(root / f"data/images/{i}.npy", recording.images[trial_slots[i]][None], allow_pickle=False)
        np.save(root / f"data/responses/{i}.npy", recording.responses[i], allow_pickle=False)
        np.save(root / f"data/behavior/{i}.npy", recording.behavior[i], allow_pickle=False)
        np.save(root / f"data/pupil_center/{i}.npy", recording.pupil_center[i], allow_pickle=False)

    neurons = {
        "unit_ids": recording.unit_ids,
        "area": _strings(recording.unit_area),
        "layer": _strings(recording.unit_layer),
        "cell_motor_coordinates": recording.unit_xyz,
        **{file: np.full(n_units, getattr(recording, key), np.int64) for key, file in _SCAN_META.items()},
    }
    for name, array in neurons.items():
        _save(root, f"meta/neurons/{name}.npy", array)

    extras = {k: v for k, v in recording.extra_trial_arrays.items() if k not in DERIVED_TRIAL_ARRAYS}
    trials = {"tiers": _strings(recording.tiers), "trial_idx": recording.trial_idx, **extras}
    present = [name for name in IMAGE_ID_NAMES if name in extras]
    if not present:
        trials[IMAGE_ID_NAMES[0]] = np.asarray(recording.trial_image_ids, np.int64)
    elif not np.array_equal(np.asarray(extras[present[0]]), recording.trial_image_ids):
        # the reader would take present[0] as the image ids: it must agree with trial_image_ids
        raise RecordingError(f"extra_trial_arrays[{present[0]!r}] differs from trial_image_ids")
    for name, array in trials.items():
        _save(root, f"meta/trials/{name}.npy", array)

    kept = ~np.asarray(recording.withheld, bool)
    behaving = ~np.asarray(recording.extra_trial_arrays.get(BEHAVIOR_WITHHELD, np.zeros(n_trials, bool)), bool)
    statistics = {
        "images": image_statistics(recording.images, np.bincount(trial_slots, minlength=len(recording.images))),
        "responses": trial_statistics(recording.responses[kept]),
        "behavior": trial_statistics(recording.behavior[behaving]),
        "pupil_center": trial_statistics(recording.pupil_center[behaving]),
    }
    # all trials of these datasets are stimulus frames, so both sources hold the same numbers
    for kind, values in statistics.items():
        for source in STATISTICS_SOURCES:
            for name, value in values.items():
                _save(root, f"meta/statistics/{kind}/{source}/{name}.npy", value)


__all__ = [
    "BEHAVIOR_WITHHELD",
    "DERIVED_TRIAL_ARRAYS",
    "IMAGE_ID_NAMES",
    "SensoriumFormatError",
    "image_statistics",
    "read_sensorium",
    "trial_statistics",
    "write_sensorium",
]
