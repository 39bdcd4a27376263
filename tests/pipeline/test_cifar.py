"""CIFAR-10 reader (fake folders in every key spelling, every corruption) and the embedded
photograph classification set."""

from __future__ import annotations

import math
import pickle
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from pipeline.data.cifar import (
    CIFAR10_TEST_FILE,
    CIFAR10_TRAIN_FILES,
    CifarFormatError,
    ClassificationSet,
    read_cifar10,
    rgb_to_luma,
)
from pipeline.data.photo_classes import (
    MAX_CROP_SIDE,
    MIN_CROP_SIDE,
    class_photographs,
    photo_classification_set,
    photo_crops,
)
from tests.cifar_fixtures import KEY_SPELLINGS, LABEL_NAMES, dump, fake_batch, write_fake_cifar10

N_PER_BATCH = 6


def exact_luma(r: int, g: int, b: int) -> int:
    """BT.601 luma rounded half up, in exact rational arithmetic."""
    y = Fraction(299, 1000) * r + Fraction(587, 1000) * g + Fraction(114, 1000) * b
    return math.floor(y + Fraction(1, 2))


def reference_gray(data: np.ndarray) -> np.ndarray:
    """Independent reading of CIFAR rows: 1024 R, then 1024 G, then 1024 B values per row."""
    out = np.empty((len(data), 32, 32), dtype=np.int64)
    for n, row in enumerate(data.tolist()):
        for p in range(1024):
            out[n, p // 32, p % 32] = exact_luma(row[p], row[1024 + p], row[2048 + p])
    return out


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    return {spelling: write_fake_cifar10(root / spelling, N_PER_BATCH, spelling, seed=0) for spelling in KEY_SPELLINGS}


def test_every_key_spelling_reads_identically_and_matches_an_independent_reading(folders):
    sets = {spelling: read_cifar10(folder) for spelling, folder in folders.items()}

    # trusted reading of our own fixture with the plain pickle module
    def plain(name: str) -> dict:
        with open(folders["py2"] / name, "rb") as f:
            return pickle.load(f, encoding="bytes")

    train = [plain(name) for name in CIFAR10_TRAIN_FILES]
    test = plain(CIFAR10_TEST_FILE)
    expected_train = reference_gray(np.concatenate([b[b"data"] for b in train]))
    expected_test = reference_gray(test[b"data"])
    for spelling, data in sets.items():
        assert data.class_names == LABEL_NAMES, spelling
        assert data.train_images.dtype == np.uint8 and data.train_images.shape == (5 * N_PER_BATCH, 32, 32)
        np.testing.assert_array_equal(data.train_images, expected_train)
        np.testing.assert_array_equal(data.test_images, expected_test)
        np.testing.assert_array_equal(data.train_labels, np.concatenate([b[b"labels"] for b in train]))
        np.testing.assert_array_equal(data.test_labels, test[b"labels"])
        assert data.train_labels.dtype == np.int64
        assert data.source.startswith("cifar10:")


def test_luma_rounds_half_up_exactly():
    # every colour whose exact luma lies on a .5 boundary, plus random colours
    rgb = np.array(
        [
            (r, g, b)
            for r in range(0, 256, 3)
            for g in range(0, 256, 5)
            for b in range(256)
            if (299 * r + 587 * g + 114 * b) % 1000 == 500
        ][:500],
        dtype=np.uint8,
    )
    assert len(rgb) > 100
    rgb = np.concatenate([rgb, np.random.default_rng(0).integers(0, 256, (500, 3), dtype=np.uint8)])
    expected = [exact_luma(*map(int, c)) for c in rgb]
    np.testing.assert_array_equal(rgb_to_luma(rgb), expected)
    np.testing.assert_array_equal(rgb_to_luma(np.array([[255, 255, 255], [0, 0, 0]], np.uint8)), [255, 0])


class Exploit:
    """Unpickling this would run os.system; the reader must refuse before anything runs."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def _rewrite(name: str, drop: str | None = None, wrap_in_list: bool = False, **changes):
    """A corruption: rewrite batch ``name`` without key ``drop`` / with ``changes`` applied."""

    def corrupt(folder: Path) -> str:
        batch = fake_batch(N_PER_BATCH, np.random.default_rng(1), name)
        batch.pop(drop, None)
        batch.update({key: change(batch[key]) for key, change in changes.items()})
        dump([batch] if wrap_in_list else batch, folder / name, "str")
        return name

    return corrupt


def _truncate(folder: Path) -> str:
    path = folder / "data_batch_2"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    return "data_batch_2"


def _garbage(folder: Path) -> str:
    (folder / "data_batch_4").write_bytes(b"this is not a pickle at all")
    return "data_batch_4"


def _delete(folder: Path) -> str:
    (folder / "data_batch_3").unlink()
    return "data_batch_3"


def _exploit(folder: Path) -> str:
    (folder / "data_batch_1").write_bytes(pickle.dumps({"data": Exploit(folder / "PWNED")}, protocol=2))
    return "data_batch_1"


CORRUPTIONS = {
    "missing file": _delete,
    "truncated pickle": _truncate,
    "garbage bytes": _garbage,
    "forbidden global": _exploit,
    "not a dict": _rewrite("data_batch_5", wrap_in_list=True),
    "data missing": _rewrite("data_batch_1", drop="data"),
    "labels missing": _rewrite("test_batch", drop="labels"),
    "data wrong width": _rewrite("data_batch_2", data=lambda d: d[:, :3071]),
    "data 1-D": _rewrite("data_batch_2", data=lambda d: d.ravel()),
    "data float": _rewrite("data_batch_3", data=lambda d: d.astype(np.float32)),
    "data a list": _rewrite("data_batch_3", data=lambda d: d.tolist()),
    "labels too short": _rewrite("data_batch_4", labels=lambda v: v[:-1]),
    "label too large": _rewrite("test_batch", labels=lambda v: [10] + v[1:]),
    "label negative": _rewrite("test_batch", labels=lambda v: [-1] + v[1:]),
    "labels not integers": _rewrite("data_batch_5", labels=lambda v: [0.5] * len(v)),
    "label_names missing": lambda folder: dump({"num_vis": 3072}, folder / "batches.meta", "bytes") or "batches.meta",
    "label_names short": lambda folder: (
        dump({"label_names": ["a", "b"]}, folder / "batches.meta", "str") or "batches.meta"
    ),
}


@pytest.mark.parametrize("case", CORRUPTIONS)
def test_corrupt_folders_raise_naming_the_file(tmp_path, case):
    folder = write_fake_cifar10(tmp_path, N_PER_BATCH, "py2", seed=0)
    name = CORRUPTIONS[case](folder)
    with pytest.raises(CifarFormatError, match=name.replace(".", r"\.")):
        read_cifar10(folder)
    assert not (folder / "PWNED").exists()


def test_missing_folder_raises(tmp_path):
    with pytest.raises(CifarFormatError, match="nowhere"):
        read_cifar10(tmp_path / "nowhere")
    assert issubclass(CifarFormatError, ValueError)


def test_classification_set_validates_its_arrays():
    images = np.zeros((3, 32, 32), np.uint8)
    labels = np.array([0, 1, 1])
    ok = dict(
        train_images=images,
        train_labels=labels,
        test_images=images,
        test_labels=labels,
        class_names=("a", "b"),
        source="test",
    )
    ClassificationSet(**ok)
    for bad in (
        dict(train_images=images.astype(np.float32)),
        dict(test_images=images[:, :16]),
        dict(train_labels=labels[:2]),
        dict(test_labels=np.array([0, 1, 2])),
        dict(class_names=("a", "a")),
    ):
        with pytest.raises(ValueError):
            ClassificationSet(**{**ok, **bad})


# --- embedded photograph set ----------------------------------------------------------------------


def test_photographs_are_large_grayscale_and_distinct():
    photos = class_photographs()
    assert len(photos) == 10
    for name, photo in photos.items():
        assert photo.ndim == 2 and min(photo.shape) >= 300 and photo.max() <= 255, name
        assert photo.std() > 10, name
    assert len({float(photo.mean()) for photo in photos.values()}) == 10


def test_train_and_test_crops_never_overlap():
    photos = class_photographs()
    crops = photo_crops(200, 50, seed=3)
    assert len(crops) == 10 * 250
    for name, photo in photos.items():
        height, width = photo.shape
        train = [c for c in crops if c.photo == name and c.split == "train"]
        test = [c for c in crops if c.photo == name and c.split == "test"]
        assert len(train) == 200 and len(test) == 50
        for c in train + test:
            assert MIN_CROP_SIDE <= c.side <= MAX_CROP_SIDE
            assert 0 <= c.top and c.top + c.side <= height and 0 <= c.left and c.left + c.side <= width
        # test rows start at least one maximal crop side below the last train row
        assert min(c.top for c in test) - max(c.top + c.side for c in train) >= MAX_CROP_SIDE
        assert min(c.top for c in test) >= 0.75 * height - 1  # bottom quarter only


def test_photo_set_is_built_from_its_crops_deterministically():
    a = photo_classification_set(20, 5, seed=1)
    b = photo_classification_set(20, 5, seed=1)
    c = photo_classification_set(20, 5, seed=2)
    for field in ("train_images", "train_labels", "test_images", "test_labels"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.train_images, c.train_images)
    assert a.class_names == tuple(class_photographs())
    np.testing.assert_array_equal(np.bincount(a.train_labels), [20] * 10)
    np.testing.assert_array_equal(np.bincount(a.test_labels), [5] * 10)
    # crops of side 32 need no resizing: their images are the photograph's pixels at the recorded place
    photos = class_photographs()
    crops = photo_crops(20, 5, seed=1)
    images = {"train": list(a.train_images), "test": list(a.test_images)}
    checked = 0
    for split in ("train", "test"):
        for crop, image in zip([c for c in crops if c.split == split], images[split]):
            if crop.side == 32:
                pixels = photos[crop.photo][crop.top : crop.top + 32, crop.left : crop.left + 32]
                np.testing.assert_array_equal(image, np.rint(pixels))
                checked += 1
    assert checked > 0


def test_a_batch_over_the_import_limits_is_refused_before_it_is_unpickled(tmp_path):
    """CIFAR batches are charged to the import's budget (their size to the total, 40 times it against the
    per-array limit) before they are unpickled; the refusal names the file."""
    from pipeline.data.limits import Budget, ImportLimits
    from pipeline.data.safe_load import PICKLE_AMPLIFICATION

    folder = write_fake_cifar10(tmp_path / "cifar")
    largest = max((folder / name).stat().st_size for name in (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE))
    tight = Budget(ImportLimits(max_array_bytes=PICKLE_AMPLIFICATION * largest - 1, max_total_bytes=2**40))
    with pytest.raises(
        CifarFormatError, match=r"(data_batch_\d|test_batch): .* exceeds the import limit of .* per array"
    ):
        read_cifar10(folder, budget=tight)
    roomy = ImportLimits(max_array_bytes=PICKLE_AMPLIFICATION * largest, max_total_bytes=2**40)
    assert read_cifar10(folder, budget=Budget(roomy)).train_images.shape[1:] == (32, 32)
