"""Shallow baselines that show what a classification task can be solved with *without* spatial
structure: a grey-level histogram and a linear classifier on pixels.

A task worth training a ResNet on (and regularizing it) is one where these stay far below the
network.  Each baseline standardises its features (fitted on the training split), fits a
multinomial :class:`sklearn.linear_model.LogisticRegression` for every regularisation strength
``C`` of a small grid, picks the ``C`` of highest validation accuracy and reports that model's test
accuracy; the test split plays no part in the choice.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Callable

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from pipeline.data.cifar import ClassificationSet

HISTOGRAM_BINS = 32  # grey-level bins of 8 levels each
HISTOGRAM_C_GRID = (0.01, 0.1, 1.0, 10.0)
PIXEL_C_GRID = (1e-4, 1e-3, 1e-2, 1e-1)
MAX_ITER = 300  # lbfgs iterations per fit: bounds the runtime; a fit that stops early is still scored


@dataclasses.dataclass(frozen=True)
class BaselineScore:
    """A baseline's test accuracy with the regularisation strength ``C`` chosen on validation, and
    the validation accuracy of every ``C`` tried (dict C -> accuracy)."""

    test_accuracy: float
    C: float
    validation_accuracy: dict[float, float]


def grey_histograms(images: np.ndarray, bins: int = HISTOGRAM_BINS) -> np.ndarray:
    """Per-image grey-level histograms (N, bins), fractions of the image's pixels, from uint8 images
    (N, H, W); bin ``k`` holds levels ``k * 256 / bins`` up to the next bin."""
    flat = _check_images(images).reshape(len(images), -1)
    level_bin = flat.astype(np.int64) * bins // 256
    # one bincount over (image, bin) indices instead of a Python loop of np.histogram calls
    counts = np.bincount((np.arange(len(flat))[:, None] * bins + level_bin).ravel(), minlength=len(flat) * bins)
    return counts.reshape(len(flat), bins) / flat.shape[1]


def pixel_features(images: np.ndarray) -> np.ndarray:
    """Pixels as features (N, H * W) float64 from uint8 images (N, H, W)."""
    return _check_images(images).reshape(len(images), -1).astype(np.float64)


def _check_images(images: np.ndarray) -> np.ndarray:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(f"images must be a uint8 (N, H, W) array, got {getattr(images, 'dtype', type(images))}")
    return images


def fit_and_select(
    features: Callable[[np.ndarray], np.ndarray],
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    c_grid: tuple[float, ...],
) -> BaselineScore:
    """Standardised ``features`` -> logistic regression for each C of ``c_grid``; the C of highest
    validation accuracy (the smallest C on a tie) is scored on test.

    splits : "train", "validation", "test" -> (images (N, H, W) uint8, labels (N,) int64).
    """
    x = {name: features(images) for name, (images, _) in splits.items()}
    y = {name: np.asarray(labels) for name, (_, labels) in splits.items()}
    for name in ("train", "validation", "test"):
        if name not in x or len(x[name]) != len(y[name]) or not len(y[name]):
            raise ValueError(f"split {name!r} is missing, empty, or its images and labels differ in number")
    models, validation = {}, {}
    for c in sorted(c_grid):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=MAX_ITER))
        with warnings.catch_warnings():  # MAX_ITER is a deliberate runtime bound
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(x["train"], y["train"])
        models[c] = model
        validation[c] = float(model.score(x["validation"], y["validation"]))
    best = max(validation, key=lambda c: (validation[c], -c))
    return BaselineScore(float(models[best].score(x["test"], y["test"])), best, validation)


SPLITS = ("train", "validation", "test")


def _named(arrays: tuple[np.ndarray, ...]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{split: (images, labels)}`` of six arrays: train images, train labels, validation ..., test ..."""
    if len(arrays) != 2 * len(SPLITS):
        raise ValueError(f"expected images and labels of {', '.join(SPLITS)} (6 arrays), got {len(arrays)}")
    return {split: (arrays[2 * i], arrays[2 * i + 1]) for i, split in enumerate(SPLITS)}


def histogram_accuracy(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    validation_images: np.ndarray,
    validation_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    *,
    c_grid: tuple[float, ...] = HISTOGRAM_C_GRID,
) -> BaselineScore:
    """Test accuracy of logistic regression on each image's 32-bin grey-level histogram.

    Images are (N, 32, 32) uint8 (any (N, H, W) works), labels (N,) int64."""
    arrays = (train_images, train_labels, validation_images, validation_labels, test_images, test_labels)
    return fit_and_select(grey_histograms, _named(arrays), c_grid)


def linear_pixel_accuracy(*arrays: np.ndarray, c_grid: tuple[float, ...] = PIXEL_C_GRID) -> BaselineScore:
    """Test accuracy of logistic regression on standardised pixels (a linear classifier); the six arrays
    as :func:`histogram_accuracy` takes them."""
    return fit_and_select(pixel_features, _named(arrays), c_grid)


def set_arrays(data: ClassificationSet) -> tuple[np.ndarray, ...]:
    """The six arrays :func:`histogram_accuracy` takes, from a set with a validation split."""
    if data.validation_images is None or data.validation_labels is None:
        raise ValueError(f"{data.source}: the baselines choose C on a validation split, and this set has none")
    return tuple(getattr(data, f"{split}_{kind}") for split in SPLITS for kind in ("images", "labels"))


def task_baselines(data: ClassificationSet) -> dict[str, BaselineScore]:
    """Both baselines of a set with a validation split: ``{"histogram": ..., "linear_pixels": ...}``."""
    arrays = set_arrays(data)
    return {"histogram": histogram_accuracy(*arrays), "linear_pixels": linear_pixel_accuracy(*arrays)}
