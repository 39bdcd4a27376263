"""Writing a :class:`~pipeline.data.recording.Recording` as a Sensorium static dataset folder
(:func:`write_sensorium`), with the statistics under ``meta/statistics`` recomputed."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from pipeline.data.recording import Recording, RecordingError
from pipeline.data.sensorium.layout import (
    BEHAVIOR_WITHHELD,
    DERIVED_TRIAL_ARRAYS,
    IMAGE_ID_NAMES,
    SCAN_META,
    STATISTICS,
    STATISTICS_SOURCES,
    TRIAL_DATA,
)
from pipeline.progress import progress_bar


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

    for kind in TRIAL_DATA:
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
        **{file: np.full(n_units, getattr(recording, key), np.int64) for key, file in SCAN_META.items()},
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
