"""The embedded default classification set: 32x32 grayscale crops of photographs that ship inside
installed packages, labelled by the photograph they come from.

It lets the classifier side of the pipeline run end to end offline, where CIFAR-10 is not available.
Ten photographs (scikit-image, scikit-learn and matplotlib sample data) give ten classes.

No leakage between train and test: each photograph is cut horizontally.  Test crops lie entirely in
the bottom quarter of the photograph, train crops entirely above it, with a band of
:data:`MAX_CROP_SIDE` rows between the two regions that neither uses, so no test crop overlaps or even
touches a train crop.  Crops are squares of a random side in ``MIN_CROP_SIDE..MAX_CROP_SIDE`` pixels
(scale jitter up to 1.5x), resized to 32x32 by area interpolation.  Photographs and the cutting come
from :mod:`pipeline.data.images`.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np

from pipeline.data.cifar import IMAGE_SIDE, ClassificationSet
from pipeline.data.images import PatchSpec, Photograph, cut_patches, source_photographs
from pipeline.data.sources import PHOTO_SET_PREFIX

MIN_CROP_SIDE = 32
MAX_CROP_SIDE = 48
TEST_FRACTION = 0.25  # bottom share of each photograph's rows reserved for test crops
SPLITS = ("train", "test")


# class names, in label order: photographs of :func:`pipeline.data.images.source_photographs` at
# least 300 x 450 pixels, natural scenes and textures with detail over their whole area
CLASS_PHOTOGRAPHS = (
    "astronaut",
    "camera",
    "chelsea",
    "coffee",
    "rocket",
    "brick",
    "grass",
    "china",
    "flower",
    "grace_hopper",
)


def class_photographs() -> dict[str, np.ndarray]:
    """The ten source photographs, (H, W) float32 grey levels 0-255 (read-only), by class name."""
    photos = {photo.name: photo.pixels for photo in source_photographs()}
    missing = [name for name in CLASS_PHOTOGRAPHS if name not in photos]
    if missing:
        raise LookupError(f"bundled photographs {missing} are not available")
    return {name: photos[name] for name in CLASS_PHOTOGRAPHS}


@dataclasses.dataclass(frozen=True)
class PhotoCrop:
    """One square crop: rows ``top:top+side``, columns ``left:left+side`` of photograph ``photo``."""

    photo: str
    split: str
    top: int
    left: int
    side: int


def split_rows(height: int, split: str) -> tuple[int, int]:
    """Rows ``[start, stop)`` of a photograph of ``height`` rows that crops of ``split`` may cover."""
    test_start = height - int(round(TEST_FRACTION * height))
    if split == "test":
        return test_start, height
    if split == "train":
        return 0, test_start - MAX_CROP_SIDE
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def plan_photo_crops(
    shapes: Mapping[str, tuple[int, int]], n_train_per_class: int, n_test_per_class: int, seed: int
) -> list[PhotoCrop]:
    """Draw crop positions and sizes: for each photograph (in ``shapes`` order), its train crops then
    its test crops.  Deterministic given the arguments."""
    rng = np.random.default_rng(seed)
    crops = []
    for photo, (height, width) in shapes.items():
        for split, n in zip(SPLITS, (n_train_per_class, n_test_per_class)):
            start, stop = split_rows(height, split)
            if stop - start < MAX_CROP_SIDE or width < MAX_CROP_SIDE:
                raise ValueError(f"photograph {photo!r} ({height}x{width}) is too small for {split} crops")
            sides = rng.integers(MIN_CROP_SIDE, MAX_CROP_SIDE + 1, size=n)
            tops = start + np.floor(rng.random(n) * (stop - start - sides + 1)).astype(int)
            lefts = np.floor(rng.random(n) * (width - sides + 1)).astype(int)
            crops += [PhotoCrop(photo, split, int(t), int(left), int(s)) for t, left, s in zip(tops, lefts, sides)]
    return crops


def render_crops(photos: Mapping[str, np.ndarray], crops: list[PhotoCrop]) -> np.ndarray:
    """Cut crops and resize them to 32x32 by area interpolation (anti-aliased), rounded to
    (n_crops, 32, 32) uint8."""
    names = list(photos)
    photographs = [Photograph(name, photos[name]) for name in names]
    specs = [PatchSpec(names.index(c.photo), c.top, c.left, c.side, c.side) for c in crops]
    patches = cut_patches(specs, (IMAGE_SIDE, IMAGE_SIDE), photographs)
    return np.clip(np.rint(patches), 0, 255).astype(np.uint8)


def photo_crops(n_train_per_class: int, n_test_per_class: int, seed: int = 0) -> list[PhotoCrop]:
    """The crops :func:`photo_classification_set` uses for these arguments."""
    if n_train_per_class < 1 or n_test_per_class < 1:
        raise ValueError("n_train_per_class and n_test_per_class must be at least 1")
    shapes = {name: photo.shape for name, photo in class_photographs().items()}
    return plan_photo_crops(shapes, n_train_per_class, n_test_per_class, seed)


def photo_classification_set(
    n_train_per_class: int = 500, n_test_per_class: int = 100, seed: int = 0
) -> ClassificationSet:
    """The embedded 10-class set: crops labelled by source photograph, grouped by class (class 0
    first), train and test drawn from disjoint regions of each photograph.  Deterministic."""
    photos = class_photographs()
    crops = photo_crops(n_train_per_class, n_test_per_class, seed)
    images = render_crops(photos, crops)
    class_names = tuple(photos)
    labels = np.array([class_names.index(c.photo) for c in crops], dtype=np.int64)
    is_train = np.array([c.split == "train" for c in crops])
    return ClassificationSet(
        train_images=images[is_train],
        train_labels=labels[is_train],
        test_images=images[~is_train],
        test_labels=labels[~is_train],
        class_names=class_names,
        source=f"{PHOTO_SET_PREFIX}{','.join(class_names)}:seed={seed}",  # parsed by sources.classification_photographs
    )
