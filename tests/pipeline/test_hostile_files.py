"""Files from strangers (issue 35): the readers run no code from data, read nothing outside the file
they are given, and check every size from headers before reading.  The builders here make the
hostile files small (compressed or unallocated); tests/populate/test_import_limits.py feeds them to
``python -m populate import`` and measures its memory."""

from __future__ import annotations

import io
import os
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

from pipeline.data.extraction import InputError
from pipeline.data.limits import MIN_DEFAULT_BYTES, Budget, ImportLimits
from pipeline.data.suite2p import read_schedule, read_suite2p
from tests.imaging_fixtures import shared_imaging_folder

MiB = 2**20


@pytest.fixture
def imaging():
    """(simulation, paths) of the simulated movie with a fake suite2p folder shared by the test modules; read-only."""
    return shared_imaging_folder(3)


# --------------------------------------------------------------------------------------------------
# builders


def write_zero_member(archive: zipfile.ZipFile, name: str, shape: tuple[int, ...], dtype: str) -> None:
    """A .npy member of ``shape`` zeros, streamed into ``archive`` (deflated: 1000 to 1 for zeros)."""
    header = io.BytesIO()
    descr = np.lib.format.dtype_to_descr(np.dtype(dtype))
    np.lib.format.write_array_header_1_0(header, {"descr": descr, "fortran_order": False, "shape": shape})
    remaining = int(np.prod(shape)) * np.dtype(dtype).itemsize
    block = bytes(16 * MiB)
    with archive.open(name, "w", force_zip64=True) as member:
        member.write(header.getvalue())
        while remaining:
            member.write(block[: min(remaining, len(block))])
            remaining -= min(remaining, len(block))


def exported_nwb(path: Path, seed: int = 3) -> Path:
    """An NWB file as ``export nwb`` writes it: a simulated tiny scan (1-1-1), about 1.4 MB."""
    import datetime

    from pipeline.data.nwb.writer import SessionInfo, write_nwb
    from pipeline.data.simulate import simulate

    start = datetime.datetime(2024, 3, 1, 9, 30, tzinfo=datetime.timezone.utc)
    session = SessionInfo(start, ("Doe, Jane",), "P90D", "F", "Mus musculus")
    return write_nwb(simulate("tiny", seed=seed), path, session)


RESPONSES = "processing/ophys/Fluorescence/TrialResponses/data"
RUNNING = "processing/behavior/BehavioralTimeSeries/running_speed/data"
PUPIL = "processing/behavior/PupilTracking/pupil_size/data"


def replace_dataset(path: Path, name: str, make) -> None:
    """Replace dataset ``name`` of the HDF5 file by ``make(file, name, shape, dtype)``, keeping its attributes."""
    import h5py

    with h5py.File(path, "a") as f:
        old = f[name]
        attrs, shape, dtype = dict(old.attrs), old.shape, old.dtype
        del f[name]
        make(f, name, shape, dtype)
        f[name].attrs.update(attrs)


def external_storage_nwb(tmp_path: Path) -> tuple[Path, Path]:
    """An exported file whose responses' raw data lives in a file outside it; returns (file, outside)."""
    path = exported_nwb(tmp_path / "external.nwb")
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n" * 4096)

    def external(f, name, shape, dtype):
        nbytes = int(np.prod(shape)) * dtype.itemsize
        f.create_dataset(name, shape=shape, dtype=dtype, external=[(str(outside), 0, nbytes)])

    replace_dataset(path, RESPONSES, external)
    return path, outside


def unallocated_nwb(tmp_path: Path, side: int = 30000) -> Path:
    """An exported file (about 1.4 MB) whose first three stimulus images are chunked ``side`` x ``side``
    uint8 datasets never written (858 MiB each when read: HDF5 returns the fill value).  The reader
    reads every image before it compares their shapes."""
    import h5py

    path = exported_nwb(tmp_path / "unallocated.nwb")
    with h5py.File(path, "r") as f:
        names = [f"stimulus/templates/StimulusImages/{name}" for name in sorted(f["stimulus/templates/StimulusImages"])]
    for name in names[:3]:
        replace_dataset(
            path,
            name,
            lambda f, name, shape, dtype: f.create_dataset(
                name, shape=(side, side), dtype="uint8", chunks=(1000, 1000), compression="gzip"
            ),
        )
    return path


def bomb_images_npz(path: Path, n_images: int = 2048, side: int = 1024) -> Path:
    """An ``--images`` .npz whose ``images`` declare ``n_images`` x ``side`` x ``side`` uint8 zeros
    (2 GiB by default) in about 2 MB."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        write_zero_member(archive, "images.npy", (n_images, side, side), "uint8")
        with archive.open("image_ids.npy", "w") as member:
            np.save(member, np.arange(n_images, dtype=np.int64))
    return path


class Payload:
    """Pickles as a call of ``os.system``: unpickled by ``pickle.load``, it creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def plant_payload(plane: Path, name: str, marker: Path) -> None:
    """Replace ``plane/name`` (``ops.npy`` or ``stat.npy``) by an object array holding a :class:`Payload`."""
    payload = np.empty(1, dtype=object)
    payload[0] = Payload(marker)
    np.save(plane / name, payload, allow_pickle=True)


# --------------------------------------------------------------------------------------------------
# no code from data


@pytest.mark.parametrize("name", ["ops.npy", "stat.npy"])
def test_a_pickled_payload_in_a_suite2p_folder_runs_nothing(imaging, tmp_path, name):
    """The payload is refused naming the file and the class; ``ops.npy`` stays valid when the payload
    is in ``stat.npy``, so both unpicklings are reached.  With ``allow_pickle=True`` the marker appears."""
    import shutil

    _, paths = imaging
    folder = shutil.copytree(paths["suite2p"], tmp_path / "suite2p")
    marker = tmp_path / "ran"
    plant_payload(folder / "plane0", name, marker)
    with pytest.raises(InputError, match=rf"{name}: {name[:-4]}: refused: refusing to load global (posix|os)\.system"):
        read_suite2p(folder)
    assert not marker.exists()


# --------------------------------------------------------------------------------------------------
# NWB reads only what is inside the file


def test_external_storage_is_refused_naming_the_file_and_the_dataset(tmp_path):
    from pipeline.data.nwb import read_nwb

    path, outside = external_storage_nwb(tmp_path)
    with pytest.raises(InputError, match=rf"external\.nwb: {RESPONSES}: external storage in \['{outside}'\]") as e:
        read_nwb(path)
    assert "\n" not in str(e.value)


def test_external_links_virtual_datasets_and_other_drivers_are_refused(tmp_path):
    import h5py

    from pipeline.data.nwb import read_nwb

    outside = tmp_path / "outside.h5"
    with h5py.File(outside, "w") as f:
        f["secret"] = np.arange(500, dtype=np.float32)
    linked = exported_nwb(tmp_path / "linked.nwb")
    with h5py.File(linked, "a") as f:
        f["processing/ophys/leak"] = h5py.ExternalLink(str(outside), "/secret")
    with pytest.raises(InputError, match=r"linked\.nwb: processing/ophys/leak: external link to .*outside\.h5:/secret"):
        read_nwb(linked)

    virtual = exported_nwb(tmp_path / "virtual.nwb")

    def mapped(f, name, shape, dtype):
        layout = h5py.VirtualLayout(shape=shape, dtype=dtype)
        layout[:] = h5py.VirtualSource(str(outside), "secret", shape=shape)
        f.create_virtual_dataset(name, layout)

    replace_dataset(virtual, RUNNING, mapped)
    with pytest.raises(InputError, match=rf"virtual\.nwb: {RUNNING}: virtual dataset"):
        read_nwb(virtual)

    family = tmp_path / "family%d.nwb"
    with h5py.File(family, "w", driver="family", memb_size=64 * 1024) as f:
        f["data"] = np.zeros(100_000, np.float32)
    with pytest.raises(
        InputError, match=r"family0\.nwb: file: not a readable NWB file \(HDF5 file with the default driver"
    ):
        read_nwb(tmp_path / "family0.nwb")

    # the split driver is HDF5's multi driver with two member files (h5py can write no other multi layout)
    with h5py.File(tmp_path / "split.nwb", "w", driver="split") as f:
        f["data"] = np.zeros(1000, np.float32)
    for member, why in (("split.nwb-m.h5", "multi driver should be used"), ("split.nwb-r.h5", "signature not found")):
        with pytest.raises(InputError, match=rf"{re.escape(member)}: file: not a readable NWB file \(.*{why}"):
            read_nwb(tmp_path / member)


def test_an_nwb_dataset_over_the_memory_limits_is_refused_before_it_is_read(tmp_path):
    """An exported file whose first stimulus image is an unallocated 64 MiB dataset: under a 32 MiB
    per-array or total limit it is refused naming the file and the dataset, and Python's allocations
    stay far below its size; under a 64 MiB limit the same file is read (then refused for its shapes)."""
    import tracemalloc

    import h5py

    from pipeline.data.nwb import read_nwb

    path = exported_nwb(tmp_path / "large.nwb")
    with h5py.File(path, "r") as f:
        image = sorted(f["stimulus/templates/StimulusImages"])[0]
    replace_dataset(
        path,
        f"stimulus/templates/StimulusImages/{image}",
        lambda f, name, shape, dtype: f.create_dataset(
            name, shape=(8192, 8192), dtype="uint8", chunks=(1024, 1024), compression="gzip"
        ),
    )
    field = rf"large\.nwb: stimulus_template/StimulusImages/{image}: "

    def peak_of(limits: ImportLimits, match: str) -> int:
        tracemalloc.start()  # numpy reports its array buffers to tracemalloc
        try:
            with pytest.raises(InputError, match=match) as e:
                read_nwb(path, budget=Budget(limits))
            assert "\n" not in str(e.value)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    per_array = rf"{field}64 MiB decoded exceeds the import limit of 32 MiB per array \(PIPELINE_IMPORT_MAX_FILE_MB\)"
    assert peak_of(ImportLimits(32 * MiB, 2**40), per_array) < 16 * MiB
    total = rf"{field}the import's arrays exceed the import limit of 32 MiB decoded in all \(PIPELINE_IMPORT_MAX_GB\)"
    assert peak_of(ImportLimits(2**40, 32 * MiB), total) < 16 * MiB
    shapes = r"large\.nwb: stimulus_template/StimulusImages: images of different shapes"
    assert peak_of(ImportLimits(64 * MiB, 2**40), shapes) >= 64 * MiB


def test_unallocated_datasets_are_refused_before_anything_is_read(tmp_path):
    from pipeline.data.nwb import read_nwb

    path = unallocated_nwb(tmp_path)
    assert path.stat().st_size < 2 * MiB
    with pytest.raises(InputError, match=r"unallocated\.nwb: file: declares 2\.5 GiB decoded in a file of 1 MiB.*bomb"):
        read_nwb(path)


def test_a_session_id_with_a_trailing_newline_names_no_scan(tmp_path):
    import h5py

    from pipeline.data.nwb import read_nwb

    path = exported_nwb(tmp_path / "newline.nwb")
    with h5py.File(path, "a") as f:
        del f["general/session_id"]
        f["general/session_id"] = "1-1-1\n"
    with pytest.raises(InputError, match=r"newline\.nwb: session_id: '1-1-1\\n' is not written animal-session-scan"):
        read_nwb(path)


# --------------------------------------------------------------------------------------------------
# sizes from headers, one policy


def test_an_npz_declaring_gigabytes_is_refused_at_its_header(imaging, tmp_path):
    _, paths = imaging
    images = bomb_images_npz(tmp_path / "images.npz")
    assert images.stat().st_size < 3 * MiB
    with pytest.raises(InputError, match=r"images\.npz: images: declares 2\.0 GiB decoded in a file of 2 MiB.*bomb"):
        read_schedule(paths["stimuli"], images)


def test_ids_past_the_64_bit_range_are_refused_naming_the_file(imaging, tmp_path):
    """A stimulus-table id past int64 and a uint64 image id past int64 would overflow or turn negative
    when stored; each is refused naming the file, the field and the row or id."""
    _, paths = imaging
    table = paths["stimuli"].read_text().splitlines()
    header, first = table[0].split(","), table[1].split(",")
    first[header.index("image_id")] = "99999999999999999999"
    stimuli = tmp_path / "stimuli.csv"
    stimuli.write_text("\n".join([table[0], ",".join(first), *table[2:]]) + "\n")
    with pytest.raises(InputError, match=r"stimuli\.csv: image_id: row 1: '99999999999999999999' is outside"):
        read_schedule(stimuli, paths["images"])

    with np.load(paths["images"]) as data:
        pixels = data["images"]
    ids = np.arange(len(pixels), dtype=np.uint64)
    ids[-1] = np.iinfo(np.uint64).max
    images = tmp_path / "images.npz"
    np.savez(images, images=pixels, image_ids=ids)
    with pytest.raises(InputError, match=r"images\.npz: image_ids: id 18446744073709551615 is outside"):
        read_schedule(paths["stimuli"], images)


def test_a_npy_header_declaring_more_than_its_file_is_refused(imaging, tmp_path):
    import shutil

    _, paths = imaging
    folder = shutil.copytree(paths["suite2p"], tmp_path / "suite2p")
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**5, 10**5)})
    (folder / "plane0" / "F.npy").write_bytes(header.getvalue() + bytes(100))
    with pytest.raises(
        InputError, match=r"F\.npy: F: the header declares 40000000000 bytes of data but the file holds 100"
    ):
        read_suite2p(folder)


def test_the_memory_limits_refuse_an_array_or_an_import_too_large(imaging):
    _, paths = imaging
    with np.load(paths["images"]) as data:
        image_bytes = data["images"].nbytes
    small = Budget(ImportLimits(max_array_bytes=image_bytes - 1, max_total_bytes=2**40))
    with pytest.raises(
        InputError,
        match=r"images\.npz: images: images\.npy: .* exceeds the import limit of .* per array "
        r"\(PIPELINE_IMPORT_MAX_FILE_MB\)",
    ):
        read_schedule(paths["stimuli"], paths["images"], budget=small)
    assert (
        read_schedule(paths["stimuli"], paths["images"], budget=Budget(ImportLimits(image_bytes, 2**40))).images.nbytes
        == image_bytes
    )
    f_bytes = os.path.getsize(paths["suite2p"] / "plane0" / "F.npy")
    total = Budget(ImportLimits(max_array_bytes=2**40, max_total_bytes=2 * f_bytes))  # ops, stat, F: Fneu is over
    with pytest.raises(
        InputError,
        match=r"Fneu\.npy: Fneu: the import's arrays exceed the import limit of .* in all \(PIPELINE_IMPORT_MAX_GB\)",
    ):
        read_suite2p(paths["suite2p"], total)
    traces = read_suite2p(paths["suite2p"], Budget(ImportLimits(max_array_bytes=2**40, max_total_bytes=2**40)))
    assert traces.fluorescence.nbytes == f_bytes - 128  # the header of a small .npy is 128 bytes


def test_the_defaults_follow_the_machine_and_the_environment_overrides_them():
    assert ImportLimits.for_machine(memory=8 * 2**30) == ImportLimits(2 * 2**30, 2 * 2**30)
    assert ImportLimits.for_machine(memory=10 * MiB).max_total_bytes == MIN_DEFAULT_BYTES
    limits = ImportLimits.from_environment(
        {"PIPELINE_IMPORT_MAX_FILE_MB": "8", "PIPELINE_IMPORT_MAX_GB": "0.5", "PIPELINE_IMPORT_MAX_EXPANSION": "20"}
    )
    assert limits == ImportLimits(8 * MiB, 2**29, 20.0)
    for var, value in (
        ("PIPELINE_IMPORT_MAX_FILE_MB", "-1"),
        ("PIPELINE_IMPORT_MAX_GB", "lots"),
        ("PIPELINE_IMPORT_MAX_EXPANSION", "0.5"),
        ("PIPELINE_IMPORT_MAX_GB", "nan"),
    ):
        with pytest.raises(ValueError, match=rf"^{var}='{value}': expected a positive number"):
            ImportLimits.from_environment({var: value})


def test_a_sensorium_folder_file_over_the_limit_is_refused_by_its_size(tmp_path):
    """A folder's file is charged its size before it is read: a (sparse) 256 MiB image under a 64 MiB
    per-array limit is refused naming it before any of its bytes are read."""
    from pipeline.data.sensorium import SensoriumFormatError, read_sensorium
    from tests.sensorium_fixtures import write_fake_sensorium

    folder = write_fake_sensorium(tmp_path, n_trials=14)
    image = folder / "data" / "images" / "0.npy"
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (1, 8192, 8192)})
    with open(image, "wb") as f:
        f.write(header.getvalue())
        f.truncate(len(header.getvalue()) + 256 * MiB)  # sparse: no data written
    limits = ImportLimits(max_array_bytes=64 * MiB, max_total_bytes=2**40)
    with pytest.raises(
        SensoriumFormatError, match=r"^data/images/0\.npy: 256 MiB decoded exceeds the import limit of 64 MiB"
    ):
        read_sensorium(folder, limits=limits)


def test_a_dataset_config_naming_a_scan_with_a_trailing_newline_is_refused():
    from pipeline.config import ConfigError
    from pipeline.data.dataset_config import DatasetConfig

    with pytest.raises(ConfigError, match="is not written animal-session-scan"):
        DatasetConfig.from_dict(dict(scan="1-1-1\n"))
    assert DatasetConfig.from_dict(dict(scan="1-1-1")).scan == "1-1-1"
