"""Grayscale image-classification sets, and a safe reader of the CIFAR-10 python release.

A :class:`ClassificationSet` is the exchange format between importers (CIFAR-10, the embedded
photograph set) and the classifier training / robustness code: 32x32 grayscale uint8 images with
integer labels.

CIFAR-10 (``cifar-10-batches-py/``) ships as Python-2 pickles.  ``pickle.load`` runs whatever code a
pickle names, so :func:`read_cifar10` unpickles through
:class:`~pipeline.data.safe_load.ArrayOnlyUnpickler`, which resolves only the handful of numpy
globals needed to rebuild arrays and refuses every other global.

Colour is reduced to luma with the ITU-R BT.601 weights, computed exactly in integers and rounded half
up: ``Y = floor((299 R + 587 G + 114 B) / 1000 + 1/2)``, which always lies in 0..255.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.limits import Budget
from pipeline.data.safe_load import ArrayOnlyUnpickler, charge_pickle

IMAGE_SIDE = 32
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"
CIFAR10_META_FILE = "batches.meta"
CIFAR10_N_CLASSES = 10
_PIXELS = IMAGE_SIDE * IMAGE_SIDE


class CifarFormatError(ValueError):
    """A CIFAR folder or one of its files is missing, corrupt or has inconsistent contents."""


@dataclasses.dataclass
class ClassificationSet:
    """A grayscale 32x32 classification data set, validated on construction.

    Attributes
    ----------
    train_images : (N_train, 32, 32) uint8, grey levels 0-255.
    train_labels : (N_train,) int64, class indices into ``class_names``.
    test_images : (N_test, 32, 32) uint8.
    test_labels : (N_test,) int64.
    class_names : tuple of str, one per class.
    source : str, where the set came from (e.g. ``"cifar10:/data/cifar-10-batches-py"``).
    validation_images : (N_val, 32, 32) uint8, or None when the set has no validation split.
    validation_labels : (N_val,) int64, or None; given together with ``validation_images``.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: tuple[str, ...]
    source: str
    validation_images: np.ndarray | None = None
    validation_labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.class_names = tuple(self.class_names)
        if not self.class_names or not all(isinstance(n, str) and n for n in self.class_names):
            raise ValueError(f"class_names must be non-empty strings, got {self.class_names!r}")
        if len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"class_names must be unique, got {self.class_names!r}")
        if (self.validation_images is None) != (self.validation_labels is None):
            raise ValueError("validation_images and validation_labels must be given together or not at all")
        for split in self.splits:
            images = getattr(self, f"{split}_images")
            labels = getattr(self, f"{split}_labels")
            if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
                raise ValueError(f"{split}_images must be a uint8 array, got {getattr(images, 'dtype', type(images))}")
            if images.ndim != 3 or images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
                raise ValueError(f"{split}_images must have shape (N, 32, 32), got {images.shape}")
            if not isinstance(labels, np.ndarray) or labels.dtype != np.int64 or labels.ndim != 1:
                raise ValueError(f"{split}_labels must be a 1-D int64 array")
            if len(labels) != len(images):
                raise ValueError(f"{split}: {len(images)} images but {len(labels)} labels")
            if len(labels) and (labels.min() < 0 or labels.max() >= len(self.class_names)):
                raise ValueError(
                    f"{split}_labels must lie in 0..{len(self.class_names) - 1}, got {labels.min()}..{labels.max()}"
                )

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits the set holds: ``("train", "validation", "test")`` or ``("train", "test")``."""
        return ("train", "test") if self.validation_images is None else ("train", "validation", "test")


def rgb_to_luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of uint8 RGB, exactly rounded half up.

    rgb : (..., 3) uint8.  Returns (...) uint8.
    """
    rgb = rgb.astype(np.int32)
    weighted = 299 * rgb[..., 0] + 587 * rgb[..., 1] + 114 * rgb[..., 2]
    # integer arithmetic: no float representation error can move a value across a .5 boundary
    return ((weighted + 500) // 1000).astype(np.uint8)


def cifar_rows_to_gray(data: np.ndarray) -> np.ndarray:
    """CIFAR rows (N, 3072) uint8, channel-major RGB (1024 R, 1024 G, 1024 B, each row-major 32x32),
    to (N, 32, 32) uint8 luma."""
    planes = data.reshape(len(data), 3, IMAGE_SIDE, IMAGE_SIDE)
    return rgb_to_luma(np.moveaxis(planes, 1, -1))


def _load_pickle(path: Path, budget: Budget) -> dict[str, Any]:
    """Load one CIFAR pickle safely, charged to ``budget`` before it is read (see
    :func:`~pipeline.data.safe_load.charge_pickle`); keys are returned as str whether stored
    as bytes or str."""
    if not path.is_file():
        raise CifarFormatError(f"{path}: file is missing")
    charge_pickle(path, budget, lambda problem: CifarFormatError(f"{path}: {problem}"))
    try:
        with open(path, "rb") as f:
            # latin1 is numpy's documented way to read arrays pickled by Python 2
            obj = ArrayOnlyUnpickler(f, encoding="latin1").load()
    except CifarFormatError:
        raise
    except Exception as err:  # truncated, corrupt, or names a forbidden global
        raise CifarFormatError(f"{path}: not a readable CIFAR pickle ({type(err).__name__}: {err})") from None
    if not isinstance(obj, dict):
        raise CifarFormatError(f"{path}: expected a dict, got {type(obj).__name__}")
    out = {}
    for key, value in obj.items():
        if isinstance(key, bytes):
            key = key.decode("latin1")
        out[key] = value
    return out


def _require(batch: dict[str, Any], key: str, path: Path) -> Any:
    if key not in batch:
        raise CifarFormatError(f"{path}: key {key!r} is missing (found {sorted(batch)})")
    return batch[key]


def _read_label_names(path: Path, budget: Budget) -> tuple[str, ...]:
    names = _require(_load_pickle(path, budget), "label_names", path)
    if not isinstance(names, (list, tuple)):
        raise CifarFormatError(f"{path}: label_names must be a list, got {type(names).__name__}")
    names = tuple(n.decode("latin1") if isinstance(n, bytes) else n for n in names)
    if len(names) != CIFAR10_N_CLASSES or not all(isinstance(n, str) and n for n in names):
        raise CifarFormatError(f"{path}: expected {CIFAR10_N_CLASSES} label names, got {names!r}")
    if len(set(names)) != len(names):
        raise CifarFormatError(f"{path}: label names are not unique: {names!r}")
    return names


def _read_batch(path: Path, n_classes: int, budget: Budget) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> ((N, 32, 32) uint8 luma, (N,) int64 labels), fully validated."""
    batch = _load_pickle(path, budget)
    data = _require(batch, "data", path)
    labels = _require(batch, "labels", path)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        raise CifarFormatError(
            f"{path}: 'data' must be a uint8 array, got {getattr(data, 'dtype', type(data).__name__)}"
        )
    if data.ndim != 2 or data.shape[1] != 3 * _PIXELS or data.shape[0] == 0:
        raise CifarFormatError(f"{path}: 'data' must have shape (N, {3 * _PIXELS}), got {data.shape}")
    try:
        raw = np.asarray(labels)
    except Exception:  # ragged or otherwise unconvertible
        raw = None
    if raw is None or raw.ndim != 1 or not np.issubdtype(raw.dtype, np.integer):
        raise CifarFormatError(f"{path}: 'labels' must be a flat list of integers")
    if len(raw) != len(data):
        raise CifarFormatError(f"{path}: {len(data)} images but {len(raw)} labels")
    if raw.min() < 0 or raw.max() >= n_classes:
        raise CifarFormatError(f"{path}: labels must lie in 0..{n_classes - 1}, got {raw.min()}..{raw.max()}")
    return cifar_rows_to_gray(data), raw.astype(np.int64)


def read_cifar10(path: str | Path, budget: Budget | None = None) -> ClassificationSet:
    """Read a ``cifar-10-batches-py`` folder into a grayscale :class:`ClassificationSet`.

    Every file is loaded and validated before anything is returned, so a caller that inserts the
    result gets all of it or nothing.  Raises :class:`CifarFormatError` naming the offending file.
    Train images are the five ``data_batch_*`` files concatenated in order; test images are
    ``test_batch``.  Each file is charged to ``budget`` (default: the machine's import limits,
    :mod:`pipeline.data.limits`) before it is unpickled.
    """
    folder = Path(path)
    budget = budget or Budget()
    if not folder.is_dir():
        raise CifarFormatError(f"{folder}: CIFAR-10 folder is missing or not a directory")
    class_names = _read_label_names(folder / CIFAR10_META_FILE, budget)
    train = [_read_batch(folder / name, len(class_names), budget) for name in CIFAR10_TRAIN_FILES]
    test_images, test_labels = _read_batch(folder / CIFAR10_TEST_FILE, len(class_names), budget)
    return ClassificationSet(
        train_images=np.concatenate([images for images, _ in train]),
        train_labels=np.concatenate([labels for _, labels in train]),
        test_images=test_images,
        test_labels=test_labels,
        class_names=class_names,
        source=f"cifar10:{folder.resolve()}",
    )
