"""Reading a Sensorium static scan into a validated :class:`~pipeline.data.recording.Recording`
(:func:`read_sensorium`), every check naming the offending file."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import numpy as np

from pipeline.data.limits import ImportLimits
from pipeline.data.recording import TIERS, Recording, RecordingError
from pipeline.data.sensorium.archive import DatasetTree, open_tree
from pipeline.data.sensorium.layout import (
    BEHAVIOR_WITHHELD,
    IMAGE_ID_NAMES,
    SCAN_META,
    TRIAL_DATA,
    WITHHOLDABLE_TIERS,
    SensoriumFormatError,
)
from pipeline.data.sensorium.npy import NpyParser
from pipeline.progress import progress_bar

_FOLDER_NAME = re.compile(r"static(\d+)-(\d+)-(\d+)(?:-|\Z)")
"""A dataset folder named ``static<animal>-<session>-<scan>-...`` carries the scan identity."""


class _Reader:
    """One pass over a dataset; every check raises :class:`SensoriumFormatError` naming the file."""

    def __init__(self, tree: DatasetTree, progress: bool):
        self.tree, self.progress = tree, progress
        self.parse = NpyParser(tree)

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
        for k, (key, file) in enumerate(SCAN_META.items()):
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

        for kind in TRIAL_DATA:  # fail on a missing or incomplete folder before reading gigabytes
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


def read_sensorium(path: str | Path, progress: bool = False, limits: ImportLimits | None = None) -> Recording:
    """Read one Sensorium static scan from its folder or .zip, validating everything first.

    Parameters
    ----------
    path : the dataset folder (holding ``data/`` and ``meta/``), a folder holding that folder, or a
        .zip holding it at its top level or one folder down.  Nothing is written anywhere; zips are
        read in memory.
    progress : show a progress bar per data folder.
    limits : bounds on the bytes read (:class:`~pipeline.data.limits.ImportLimits`; default: the
        machine's).

    Returns
    -------
    A validated :class:`Recording` (see the module docstring for the conventions).

    Raises
    ------
    SensoriumFormatError : naming the offending file (relative to the dataset root) and the problem.
    """
    tree = open_tree(Path(path), limits)
    try:
        return _Reader(tree, progress).read()
    finally:
        tree.close()
