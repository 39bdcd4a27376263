"""Reading and writing the Sensorium 2022 static format (pipeline.data.sensorium)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest

from pipeline.data.recording import Recording
from pipeline.data.sensorium import (
    BEHAVIOR_WITHHELD,
    SensoriumFormatError,
    image_statistics,
    read_sensorium,
    write_sensorium,
)
from tests.sensorium_fixtures import (
    DEFAULT_NAME,
    fake_sensorium_files,
    npy_bytes,
    read_npy_tree,
    write_fake_sensorium,
)

N_TRIALS, N_UNITS = 40, 7


def assert_files_equal(original: dict[str, np.ndarray], written: dict[str, np.ndarray]) -> None:
    """Same files; data and meta arrays bit-exact with equal dtype; statistics to float precision."""
    assert sorted(written) == sorted(original)
    for rel, expected in original.items():
        got = written[rel]
        assert got.dtype == expected.dtype, rel
        if rel.startswith("meta/statistics/"):
            np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9, err_msg=rel)
        else:
            assert got.shape == expected.shape, rel
            assert got.tobytes() == expected.tobytes(), rel


def assert_recordings_equal(a: Recording, b: Recording) -> None:
    for field in dataclasses.fields(Recording):
        x, y = getattr(a, field.name), getattr(b, field.name)
        if field.name == "source":
            continue
        if field.name == "extra_trial_arrays":
            assert sorted(x) == sorted(y)
            for key in x:
                assert x[key].dtype == y[key].dtype and np.array_equal(x[key], y[key]), key
        elif isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes(), field.name
        else:
            assert x == y, field.name


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.relative_to(folder).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


# ---------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"image_dtype": "uint8", "image_id_name": "colorframeprojector_image_id"},
        {
            "image_id_name": "image_id",
            "withhold_responses": ("test", "final_test"),
            "withhold_behavior": ("final_test",),
        },
    ],
)
def test_round_trip_reproduces_every_file(tmp_path, options):
    original = fake_sensorium_files(N_TRIALS, N_UNITS, seed=1, **options)
    folder = write_fake_sensorium(tmp_path / "in", N_TRIALS, N_UNITS, seed=1, **options)
    before = snapshot(folder)
    recording = read_sensorium(folder)
    assert snapshot(folder) == before  # the source is only read

    out = write_sensorium(recording, tmp_path / "out" / DEFAULT_NAME)
    assert_files_equal(original, read_npy_tree(out))
    assert_recordings_equal(read_sensorium(out), recording)


def test_recording_matches_the_files(tmp_path):
    files = fake_sensorium_files(N_TRIALS, N_UNITS, seed=2)
    rec = read_sensorium(write_fake_sensorium(tmp_path, N_TRIALS, N_UNITS, seed=2))
    stack = lambda kind: np.stack([files[f"data/{kind}/{i}.npy"] for i in range(N_TRIALS)])  # noqa: E731

    assert rec.scan_key == dict(animal_id=12345, session=6, scan_idx=7)
    assert rec.n_trials == N_TRIALS and rec.n_units == N_UNITS
    np.testing.assert_array_equal(rec.trial_images(), stack("images")[:, 0])
    np.testing.assert_array_equal(rec.responses, stack("responses"))
    np.testing.assert_array_equal(rec.behavior, stack("behavior"))
    np.testing.assert_array_equal(rec.pupil_center, stack("pupil_center"))
    np.testing.assert_array_equal(rec.trial_image_ids, files["meta/trials/frame_image_id.npy"])
    np.testing.assert_array_equal(rec.tiers, files["meta/trials/tiers.npy"])
    np.testing.assert_array_equal(rec.unit_xyz, files["meta/neurons/cell_motor_coordinates.npy"])
    # 4 repeated test images shown 3 times each: 12 repeat trials collapse onto 4 images
    assert len(rec.images) == N_TRIALS - 12 + 4 == len(np.unique(rec.trial_image_ids))
    assert np.all(np.diff(rec.image_ids) > 0)
    assert rec.responses.dtype == np.float32 and rec.trial_image_ids.dtype == np.int64
    # the fixture zeroes final_test responses only
    np.testing.assert_array_equal(rec.withheld, rec.tiers == "final_test")
    assert not rec.extra_trial_arrays[BEHAVIOR_WITHHELD].any()


def test_withheld_flags_follow_zeroed_tiers(tmp_path):
    rec = read_sensorium(write_fake_sensorium(tmp_path / "a", withhold_responses=(), withhold_behavior=("test",)))
    assert not rec.withheld.any()
    np.testing.assert_array_equal(rec.extra_trial_arrays[BEHAVIOR_WITHHELD], rec.tiers == "test")
    rec = read_sensorium(write_fake_sensorium(tmp_path / "b", withhold_responses=("test", "final_test")))
    np.testing.assert_array_equal(rec.withheld, np.isin(rec.tiers, ["test", "final_test"]))


@pytest.mark.parametrize("nested", [True, False])
def test_zip_reads_like_the_folder(tmp_path, nested):
    folder = read_sensorium(write_fake_sensorium(tmp_path / "dir", seed=3))
    archive = write_fake_sensorium(tmp_path / "zip", seed=3, zip=True, nested=nested)
    before = snapshot(archive.parent)
    assert_recordings_equal(read_sensorium(archive), folder)
    assert snapshot(archive.parent) == before  # nothing extracted next to the zip


def test_scan_identity_from_folder_name(tmp_path):
    gone = {f"meta/neurons/{name}.npy": None for name in ("animal_ids", "sessions", "scan_idx")}
    rec = read_sensorium(write_fake_sensorium(tmp_path / "a", name="static26872-17-20-GrayImageNet-ab", edits=gone))
    assert rec.scan_key == dict(animal_id=26872, session=17, scan_idx=20)
    with pytest.raises(SensoriumFormatError, match="meta/neurons/animal_ids.npy: missing file, and the folder name"):
        read_sensorium(write_fake_sensorium(tmp_path / "b", name="my-scan", edits=gone))


def test_writer_without_source_extras_writes_frame_image_id(tmp_path):
    rec = read_sensorium(write_fake_sensorium(tmp_path, image_id_name="image_id"))
    bare = dataclasses.replace(rec, extra_trial_arrays={})
    out = write_sensorium(bare, tmp_path / "out")
    files = read_npy_tree(out)
    assert "meta/trials/frame_image_id.npy" in files and "meta/trials/image_id.npy" not in files
    again = read_sensorium(out)
    np.testing.assert_array_equal(again.trial_image_ids, rec.trial_image_ids)
    assert again.images.tobytes() == rec.images.tobytes()


def test_writer_refuses_non_empty_output(tmp_path):
    rec = read_sensorium(write_fake_sensorium(tmp_path / "in"))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="busy"):
        write_sensorium(rec, tmp_path / "busy")
    assert os.listdir(tmp_path / "busy") == ["keep.txt"]
    (tmp_path / "empty").mkdir()
    assert write_sensorium(rec, tmp_path / "empty") == tmp_path / "empty"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_writer_rejects_image_ids_disagreeing_with_extras(tmp_path):
    rec = read_sensorium(write_fake_sensorium(tmp_path / "in"))
    rec.extra_trial_arrays["frame_image_id"] = rec.extra_trial_arrays["frame_image_id"][::-1].copy()
    with pytest.raises(ValueError, match="frame_image_id"):
        write_sensorium(rec, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
@pytest.mark.parametrize("whole", [True, False])
def test_image_statistics_equal_numpy_over_trials(dtype, whole):
    rng = np.random.default_rng(4)
    images = rng.uniform(0, 255, size=(5, 6, 7))
    images = (np.round(images) if whole or dtype == "uint8" else images).astype(dtype)
    counts = np.array([1, 3, 0, 2, 4])  # image 2 shown on no trial
    trials = np.repeat(images, counts, axis=0).astype(np.float64)
    stats = image_statistics(images, counts)
    for name in ("mean", "std", "min", "max", "median"):
        np.testing.assert_allclose(stats[name], getattr(np, name)(trials), rtol=1e-12, err_msg=name)
    odd = image_statistics(images, np.array([1, 0, 0, 0, 0]))  # odd pixel count: a true middle value
    assert odd["median"] == np.median(images[0].astype(np.float64))


# ------------------------------------------------------------------------------------ bad input


def _files(**options) -> dict[str, np.ndarray]:
    return fake_sensorium_files(N_TRIALS, N_UNITS, seed=0, **options)


def _repeat_pair() -> tuple[int, int]:
    """Two trial files showing the same image (first, later)."""
    ids = _files()["meta/trials/frame_image_id.npy"]
    values, counts = np.unique(ids, return_counts=True)
    first, later = np.flatnonzero(ids == values[counts > 1][0])[:2]
    return int(first), int(later)


def _unique_trial() -> int:
    ids = _files()["meta/trials/frame_image_id.npy"]
    values, counts = np.unique(ids, return_counts=True)
    return int(np.flatnonzero(ids == values[counts == 1][0])[0])


def _with(rel: str, change) -> dict[str, np.ndarray]:
    array = _files()[rel].copy()
    return {rel: change(array)}


def _nan(array):
    array = array.astype(array.dtype)
    array.flat[0] = np.nan
    return array


FIRST, LATER = _repeat_pair()
UNIQUE = _unique_trial()
RESPONSE = np.zeros(N_UNITS, np.float32)

BAD_INPUTS = {
    # missing files and folders
    "missing data file": ({"data/responses/5.npy": None}, "data/responses/5.npy", "missing file"),
    "file index gap": (
        {"data/images/7.npy": None, "data/images/40.npy": np.zeros((1, 18, 32), np.float32)},
        "data/images/7.npy",
        "files 0..39 expected",
    ),
    "missing folder": (
        {f"data/pupil_center/{i}.npy": None for i in range(N_TRIALS)},
        "data/pupil_center",
        "missing folder",
    ),
    "missing unit metadata": ({"meta/neurons/area.npy": None}, "meta/neurons/area.npy", "missing file"),
    "missing tiers": ({"meta/trials/tiers.npy": None}, "meta/trials/tiers.npy", "missing file"),
    "missing trial_idx": ({"meta/trials/trial_idx.npy": None}, "meta/trials/trial_idx.npy", "missing file"),
    "no image ids": ({"meta/trials/frame_image_id.npy": None}, "meta/trials", "no image id array"),
    "bad file name": ({"data/behavior/x1.npy": np.zeros(3, np.float32)}, "data/behavior/x1.npy", "not a trial index"),
    # trial counts
    "extra data file": (
        {"data/behavior/40.npy": np.zeros(3, np.float32)},
        "data/behavior/40.npy",
        "beyond the 40 trials",
    ),
    "short trial array": (
        _with("meta/trials/frame_image_id.npy", lambda a: a[:-1]),
        "meta/trials/frame_image_id.npy",
        "39 entries, expected 40",
    ),
    "long extra trial array": (
        _with("meta/trials/frame_trial_ts.npy", lambda a: np.append(a, 0.0)),
        "meta/trials/frame_trial_ts.npy",
        "41 entries, expected 40",
    ),
    # shapes and dtypes across trials
    "response of another length": (
        {"data/responses/3.npy": np.zeros(N_UNITS + 1, np.float32)},
        "data/responses/3.npy",
        "shape (8,), expected (7,)",
    ),
    "response of another dtype": (
        {"data/responses/2.npy": np.zeros(N_UNITS, np.float64)},
        "data/responses/2.npy",
        "dtype float64",
    ),
    "behavior of another length": (
        {"data/behavior/9.npy": np.zeros(2, np.float32)},
        "data/behavior/9.npy",
        "shape (2,)",
    ),
    "image of another shape": (
        {"data/images/4.npy": np.zeros((1, 18, 30), np.float32)},
        "data/images/4.npy",
        "expected (1, 18, 32)",
    ),
    "image without channel axis": (
        {"data/images/0.npy": np.zeros((18, 32), np.float32)},
        "data/images/0.npy",
        "expected (1, H, W)",
    ),
    "repeat with other pixels": (
        _with(f"data/images/{LATER}.npy", lambda a: a + 1),
        f"data/images/{LATER}.npy",
        f"also shown in trial {FIRST}",
    ),
    # non-finite values
    "NaN response": (_with("data/responses/6.npy", _nan), "data/responses/6.npy", "1 NaN or infinite"),
    "inf behavior": (_with("data/behavior/8.npy", lambda a: a * np.inf), "data/behavior/8.npy", "NaN or infinite"),
    "NaN pupil center": (_with("data/pupil_center/11.npy", _nan), "data/pupil_center/11.npy", "NaN or infinite"),
    "NaN image": (_with(f"data/images/{UNIQUE}.npy", _nan), f"data/images/{UNIQUE}.npy", "NaN or infinite"),
    "NaN coordinates": (
        _with("meta/neurons/cell_motor_coordinates.npy", _nan),
        "meta/neurons/cell_motor_coordinates.npy",
        "NaN or infinite",
    ),
    # values and dtypes
    "unknown tier": (
        _with("meta/trials/tiers.npy", lambda a: np.where(a == "train", "training", a)),
        "meta/trials/tiers.npy",
        "unknown tier value(s) ['training']",
    ),
    "numeric tiers": (
        _with("meta/trials/tiers.npy", lambda a: np.zeros(len(a))),
        "meta/trials/tiers.npy",
        "expected strings",
    ),
    "string response": (
        {"data/responses/0.npy": np.array(["a"] * N_UNITS)},
        "data/responses/0.npy",
        "non-numeric dtype",
    ),
    "string trial_idx": (
        _with("meta/trials/trial_idx.npy", lambda a: a.astype(str)),
        "meta/trials/trial_idx.npy",
        "non-numeric dtype",
    ),
    "fractional image ids": (
        _with("meta/trials/frame_image_id.npy", lambda a: a + 0.5),
        "meta/trials/frame_image_id.npy",
        "non-integer values",
    ),
    "object trial array": (
        _with("meta/trials/frame_image_class.npy", lambda a: a.astype(object)),
        "meta/trials/frame_image_class.npy",
        "refusing to unpickle",
    ),
    "object response": (
        {"data/responses/1.npy": np.array([{}] * N_UNITS, dtype=object)},
        "data/responses/1.npy",
        "refusing to unpickle",
    ),
    # broken files
    "truncated data": ({"data/responses/12.npy": npy_bytes(RESPONSE)[:-5]}, "data/responses/12.npy", "truncated .npy"),
    "truncated header": (
        {"data/images/13.npy": npy_bytes(np.zeros((1, 18, 32), np.float32))[:30]},
        "data/images/13.npy",
        "truncated .npy header",
    ),
    "not npy": ({"meta/neurons/layer.npy": b"layer,L2/3\n"}, "meta/neurons/layer.npy", "not a .npy file"),
    "garbled header": (
        {"data/behavior/0.npy": npy_bytes(np.zeros(3, np.float32)).replace(b"descr", b"dxscr")},
        "data/behavior/0.npy",
        "corrupt .npy header",
    ),
    # units
    "duplicate unit ids": (
        _with("meta/neurons/unit_ids.npy", lambda a: np.r_[a[:-1], a[0]]),
        "meta/neurons/unit_ids.npy",
        "duplicate unit id(s)",
    ),
    "short area": (_with("meta/neurons/area.npy", lambda a: a[:-1]), "meta/neurons/area.npy", "6 entries, expected 7"),
    "coordinates not xyz": (
        _with("meta/neurons/cell_motor_coordinates.npy", lambda a: a[:, :2]),
        "meta/neurons/cell_motor_coordinates.npy",
        "expected (7, 3)",
    ),
    "two sessions": (
        _with("meta/neurons/sessions.npy", lambda a: np.r_[a[:-1], a[0] + 1]),
        "meta/neurons/sessions.npy",
        "units disagree on the scan",
    ),
    "short scan_idx": (_with("meta/neurons/scan_idx.npy", lambda a: a[:-2]), "meta/neurons/scan_idx.npy", "5 entries"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_names_the_file(tmp_path, case):
    edits, rel, problem = BAD_INPUTS[case]
    folder = write_fake_sensorium(tmp_path, N_TRIALS, N_UNITS, seed=0, edits=edits)
    with pytest.raises(SensoriumFormatError) as info:
        read_sensorium(folder)
    assert info.value.file == rel
    assert str(info.value).startswith(f"{rel}: ")
    assert problem in str(info.value)


@pytest.mark.parametrize("case", ["repeat with other pixels", "truncated data", "missing folder"])
def test_bad_input_in_zip_names_the_file_inside(tmp_path, case):
    edits, rel, problem = BAD_INPUTS[case]
    archive = write_fake_sensorium(tmp_path, N_TRIALS, N_UNITS, seed=0, zip=True, edits=edits)
    with pytest.raises(SensoriumFormatError) as info:
        read_sensorium(archive)
    assert info.value.file == rel and problem in str(info.value) and str(archive) in str(info.value)


def test_unreadable_paths(tmp_path):
    with pytest.raises(SensoriumFormatError, match="no such file or folder"):
        read_sensorium(tmp_path / "absent.zip")
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(SensoriumFormatError, match="not a readable zip archive"):
        read_sensorium(tmp_path / "broken.zip")
    (tmp_path / "empty" / "data").mkdir(parents=True)
    with pytest.raises(SensoriumFormatError, match="missing folder data/ or meta/"):
        read_sensorium(tmp_path / "empty")


def test_corrupt_zip_member_names_the_file(tmp_path):
    import zipfile

    archive = write_fake_sensorium(tmp_path, N_TRIALS, N_UNITS, seed=0, zip=True)
    with zipfile.ZipFile(archive) as z:
        info = z.getinfo(f"{DEFAULT_NAME}/data/responses/3.npy")
    raw = bytearray(archive.read_bytes())
    name_len, extra_len = (
        int.from_bytes(raw[info.header_offset + k : info.header_offset + k + 2], "little") for k in (26, 28)
    )
    start = info.header_offset + 30 + name_len + extra_len
    raw[start : start + info.compress_size] = bytes(b ^ 0x5A for b in raw[start : start + info.compress_size])
    archive.write_bytes(bytes(raw))
    with pytest.raises(SensoriumFormatError) as info_:
        read_sensorium(archive)
    assert info_.value.file == "data/responses/3.npy" and "cannot read zip member" in str(info_.value)


def test_hidden_files_are_ignored_and_progress_runs(tmp_path):
    folder = write_fake_sensorium(
        tmp_path, edits={"data/images/._0.npy": b"\x00\x05\x16\x07", "meta/trials/.DS_Store.npy": b""}
    )
    assert read_sensorium(folder, progress=True).n_trials == N_TRIALS


def test_a_header_shape_that_overflows_int64_is_refused_naming_the_file(tmp_path):
    """(2**32, 2**32, 4) elements overflow int64 to 0; sizes are computed exactly, so the file is
    named as truncated instead of numpy's reshape error surfacing without it."""
    import io

    folder = write_fake_sensorium(tmp_path, n_trials=14)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (2**32, 2**32, 4)})
    (folder / "data" / "responses" / "0.npy").write_bytes(header.getvalue() + bytes(64))
    with pytest.raises(SensoriumFormatError, match=r"^data/responses/0\.npy: truncated \.npy: 64 data bytes, expected"):
        read_sensorium(folder)
