"""Shallow baselines: they see first-order and linear cues where a task has them, choose C on
validation only, and stay near chance on the shapes task."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.classifier.baselines import (
    grey_histograms,
    histogram_accuracy,
    linear_pixel_accuracy,
    set_arrays,
    task_baselines,
)
from pipeline.data.shapes import shapes_classification_set


def test_grey_histograms_agree_with_numpy_histogram_per_image():
    images = np.random.default_rng(0).integers(0, 256, (7, 32, 32), dtype=np.uint8)
    images[0] = 255  # the top level falls in the last bin
    expected = np.stack([np.histogram(im, bins=32, range=(0, 256))[0] for im in images]) / 1024
    np.testing.assert_array_equal(grey_histograms(images), expected)
    with pytest.raises(ValueError, match="uint8"):
        grey_histograms(images.astype(np.float32))


def synthetic(rng: np.random.Generator, n_per_class: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Ten classes told apart by mean brightness ("brightness") or by where a bright square sits ("place"),
    on uniform noise."""
    labels = np.repeat(np.arange(10), n_per_class)
    images = rng.uniform(0, 60, (len(labels), 32, 32))
    if kind == "brightness":
        images += 18 * labels[:, None, None]
    else:
        for i, c in enumerate(labels):
            top, left = 8 * (c // 4) + 2, 8 * (c % 4) + 2
            images[i, top : top + 6, left : left + 6] += 120
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int64)


@pytest.mark.parametrize(("baseline", "kind"), [(histogram_accuracy, "brightness"), (linear_pixel_accuracy, "place")])
def test_each_baseline_solves_the_cue_it_can_see(baseline, kind):
    rng = np.random.default_rng(1)
    splits = [synthetic(rng, n, kind) for n in (40, 20, 20)]
    score = baseline(*(a for split in splits for a in split))
    assert score.test_accuracy > 0.95


def test_c_is_chosen_on_validation_and_test_labels_do_not_change_the_choice():
    data = shapes_classification_set(20, 10, 10, seed=0)
    args = list(set_arrays(data))
    score = histogram_accuracy(*args)
    assert score.C == max(score.validation_accuracy, key=lambda c: (score.validation_accuracy[c], -c))
    args[5] = np.random.default_rng(0).permutation(args[5])
    shuffled = histogram_accuracy(*args)
    assert shuffled.C == score.C and shuffled.validation_accuracy == score.validation_accuracy


def test_the_baselines_need_a_validation_split():
    data = shapes_classification_set(3, 2, 2, seed=0)
    data.validation_images = data.validation_labels = None
    with pytest.raises(ValueError, match="validation"):
        task_baselines(data)


@pytest.mark.parametrize("seed", [0, 1])
def test_both_baselines_stay_near_chance_on_the_shapes_task(seed):
    """Measured at these sizes over seeds 0-4: histogram 0.08-0.13, linear pixels 0.10-0.11 (chance 0.1;
    one standard error of 500 test images is 0.013)."""
    scores = task_baselines(shapes_classification_set(100, 50, 50, seed=seed))
    assert scores["histogram"].test_accuracy < 0.2
    assert scores["linear_pixels"].test_accuracy < 0.2
