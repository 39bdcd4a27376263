"""NWB in and out: exact round trip through the database (every backend of `make test`), files that
pass nwbinspector, public two-photon layouts through the window extraction, bad files refused."""

from __future__ import annotations

import datetime
import re

import numpy as np
import pytest

pytest.importorskip("pynwb")

from pipeline.data.extraction import ExtractionConfig, InputError, extract  # noqa: E402
from pipeline.data.nwb import read_nwb  # noqa: E402
from pipeline.data.suite2p import read_schedule, read_suite2p  # noqa: E402
from tests.imaging_fixtures import shared_imaging_folder  # noqa: E402
from tests.pipeline.test_nwb_archive import SESSION, SESSION_OPTIONS, archive_findings  # noqa: E402

ARRAYS = (
    "images",
    "image_ids",
    "trial_idx",
    "trial_image_ids",
    "tiers",
    "responses",
    "withheld",
    "behavior",
    "pupil_center",
    "unit_ids",
    "unit_area",
    "unit_layer",
    "unit_xyz",
)


@pytest.fixture
def imaging():
    """(simulation, paths) of a simulated movie with a fake suite2p folder, shared by the test modules; read-only."""
    return shared_imaging_folder(3)


def assert_same_scan(a, b):
    for name in ARRAYS:
        x, y = np.asarray(getattr(a, name)), np.asarray(getattr(b, name))
        assert x.shape == y.shape and np.array_equal(x, y), name
        if x.dtype.kind not in "UO":
            assert x.dtype == y.dtype, (name, x.dtype, y.dtype)
    assert a.frame_rate == b.frame_rate
    assert a.extra_trial_arrays.keys() == b.extra_trial_arrays.keys()
    for name, values in a.extra_trial_arrays.items():
        assert np.array_equal(values, b.extra_trial_arrays[name]), name


def test_round_trip_of_a_suite2p_scan_is_exact(db, imaging, tmp_path):
    from populate import ingest
    from schemas import recordings

    _, paths = imaging
    key, _ = ingest.import_suite2p(
        paths["suite2p"],
        paths["stimuli"],
        paths["images"],
        scan="40-1-1",
        behavior=paths["behavior"],
        extraction=dict(signal="dff"),
        um_per_pixel=1.5,
    )
    out = ingest.export_nwb(ingest.scan_name(key), tmp_path / "scan.nwb", **SESSION)
    assert archive_findings(out, tmp_path) == []
    back, inserted = ingest.import_nwb(out, scan="40-1-2")
    assert inserted
    assert_same_scan(recordings.fetch_recording(key), recordings.fetch_recording(back))
    a, b = recordings.fetch_footprints(key), recordings.fetch_footprints(back)
    for name in ("plane", "roi", "centre", "iscell"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert all(np.array_equal(p, q) for p, q in zip(a.pixels, b.pixels))
    rows = (recordings.Extraction & [key, back]).to_dicts(order_by="scan_idx")
    for name in ("extraction_hash", "n_frames", "n_rois", "um_per_pixel"):
        assert rows[0][name] == rows[1][name], name
    assert ingest.import_nwb(out, scan="40-1-2") == (back, False)


def test_round_trip_of_a_simulated_scan_is_exact(db, tmp_path):
    """A scan without footprints or timing (the simulator's, like a Sensorium scan)."""
    from populate import ingest
    from populate.cli import main as cli
    from schemas import recordings

    key, _ = ingest.simulate("tiny", seed=5, scan="41-1-1")
    out = tmp_path / "sim.nwb"
    assert cli.main(["export", "nwb", "41-1-1", str(out), *SESSION_OPTIONS]) == 0
    assert archive_findings(out, tmp_path) == []
    assert cli.main(["import", "nwb", str(out), "--scan", "41-1-2"]) == 0
    back = dict(animal_id=41, session=1, scan_idx=2)
    assert not (recordings.Extraction & back)
    original, copy = recordings.fetch_recording(key), recordings.fetch_recording(back)
    assert_same_scan(original, copy)
    assert copy.ground_truth is None  # the simulator's truth is not part of the recording


def write_public_nwb(
    path,
    traces,
    schedule,
    series=("Fluorescence", "Neuropil", "Deconvolved"),
    dff=False,
    duplicate_roi=False,
    trials=True,
):
    """An NWB file laid out like public two-photon data: frame-sampled traces, a trials table with
    image ids (no tiers), running speed and pupil area sampled per frame."""
    from pynwb import NWBHDF5IO, NWBFile, TimeSeries
    from pynwb.base import Images
    from pynwb.behavior import BehavioralTimeSeries, PupilTracking
    from pynwb.file import Subject
    from pynwb.image import GrayscaleImage
    from pynwb.ophys import DfOverF, Fluorescence, ImageSegmentation, OpticalChannel, RoiResponseSeries

    rate = traces.frame_rate
    nwb = NWBFile(
        session_description="public-style",
        identifier="x",
        session_id="50-1-1",
        session_start_time=datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc),
        subject=Subject(subject_id="50", species="Mus musculus", sex="F", age="P90D"),
    )
    nwb.add_stimulus_template(
        Images(
            name="natural_scenes",
            description="stimuli",
            images=[
                GrayscaleImage(name=f"scene_{int(i)}", data=img) for i, img in zip(schedule.image_ids, schedule.images)
            ],
        )
    )
    if trials == "presentations":  # an Allen-style stimulus table in intervals, image ids under 'frame'
        from pynwb.epoch import TimeIntervals

        table = TimeIntervals(name="natural_scenes_presentations", description="stimulus presentations")
        table.add_column("frame", "image shown")
        for onset, image in zip(schedule.onset_frame, schedule.image_id):
            table.add_interval(start_time=onset / rate, stop_time=(onset + 4) / rate, frame=int(image))
        nwb.add_time_intervals(table)
    elif trials:
        nwb.add_trial_column("image_id", "image shown")
        for onset, image in zip(schedule.onset_frame, schedule.image_id):
            nwb.add_trial(start_time=onset / rate, stop_time=(onset + 4) / rate, image_id=int(image))
    plane = nwb.create_imaging_plane(
        name="plane",
        optical_channel=OpticalChannel(name="ch", description="green", emission_lambda=510.0),
        device=nwb.create_device(name="scope"),
        excitation_lambda=920.0,
        indicator="GCaMP6f",
        location="VISp",
        imaging_rate=rate,
        description="plane",
    )
    ophys = nwb.create_processing_module("ophys", "ophys")
    segmentation = ImageSegmentation()
    ophys.add(segmentation)
    rois = segmentation.create_plane_segmentation(name="PlaneSegmentation", description="rois", imaging_plane=plane)
    for r, pixels in enumerate(traces.footprints.pixels):
        if duplicate_roi and r == 2:
            pixels = traces.footprints.pixels[0]
        rois.add_roi(pixel_mask=[(int(x), int(y), float(w)) for y, x, w in pixels])
    rois.add_column("iscell", "cell probability", data=traces.footprints.iscell)
    region = rois.create_roi_table_region(region=list(range(len(rois))), description="all")
    data = {"Fluorescence": traces.fluorescence, "Neuropil": traces.neuropil, "Deconvolved": traces.spikes}
    container = DfOverF(name="DfOverF") if dff else Fluorescence(name="Fluorescence")
    ophys.add(container)
    for name in series:
        container.add_roi_response_series(
            RoiResponseSeries(name=name, data=data[name].T, rois=region, unit="a.u.", starting_time=0.0, rate=rate)
        )
    behavior = nwb.create_processing_module("behavior", "behaviour")
    behavior.add(
        BehavioralTimeSeries(
            time_series=[
                TimeSeries(
                    name="running_speed",
                    data=schedule.behavior["running_speed"],
                    unit="cm/s",
                    starting_time=0.0,
                    rate=rate,
                )
            ]
        )
    )
    behavior.add(
        PupilTracking(
            time_series=[
                TimeSeries(
                    name="pupil_area", data=schedule.behavior["pupil_size"], unit="px", starting_time=0.0, rate=rate
                )
            ]
        )
    )
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return path


def _public_schedule(paths):
    schedule = read_schedule(paths["stimuli"], paths["images"])
    schedule.behavior = {k: v for k, v in np.load(paths["behavior"]).items() if k in ("running_speed", "pupil_size")}
    return schedule


def test_public_layout_goes_through_the_same_window_extraction(imaging, tmp_path):
    _, paths = imaging
    traces = read_suite2p(paths["suite2p"])
    schedule = _public_schedule(paths)
    path = write_public_nwb(tmp_path / "public.nwb", traces, schedule)
    key = dict(animal_id=50, session=1, scan_idx=1)
    for config in (ExtractionConfig(), ExtractionConfig(signal="dff", neuropil_coefficient=0.8)):
        expected, kept = extract(traces, schedule, config, key)
        recording, footprints, info = read_nwb(path, config)
        assert info["layout"] == "frames" and recording.scan_key == key
        assert np.array_equal(recording.responses, expected.responses)
        assert np.array_equal(recording.trial_image_ids, expected.trial_image_ids)
        assert np.allclose(recording.behavior[:, [0, 2]], expected.behavior[:, [0, 2]], rtol=1e-6)
        assert np.array_equal(footprints.roi, kept.roi)
    presentations = write_public_nwb(tmp_path / "presentations.nwb", traces, schedule, trials="presentations")
    assert np.array_equal(read_nwb(presentations, config)[0].responses, recording.responses)
    counts = dict(zip(*np.unique(recording.trial_image_ids, return_counts=True)))
    repeated = np.array([counts[i] > 1 for i in recording.trial_image_ids])
    assert set(recording.tiers[repeated]) == {"test"} and "test" not in set(recording.tiers[~repeated])

    only_dff = write_public_nwb(tmp_path / "dff.nwb", traces, schedule, series=("Fluorescence",), dff=True)
    with pytest.raises(InputError, match="no deconvolved activity"):
        read_nwb(only_dff, ExtractionConfig())
    recording, _, _ = read_nwb(only_dff, ExtractionConfig(signal="dff"))
    from pipeline.data.extraction import check_schedule, window_means

    # a DfOverF series is taken as ΔF/F as it is, not recomputed
    first, stop = check_schedule(schedule, traces.n_frames, traces.frame_rate, ExtractionConfig())
    kept = traces.footprints.iscell >= 0.5
    assert np.array_equal(
        recording.responses, window_means(traces.fluorescence[kept], schedule.onset_frame, first, stop)
    )


def _bad_nwb(kind: str, imaging, tmp_path) -> tuple[object, str]:
    _, paths = imaging
    traces = read_suite2p(paths["suite2p"])
    schedule = _public_schedule(paths)
    path = tmp_path / f"{kind}.nwb"
    if kind == "no_ophys":
        from pynwb import NWBHDF5IO, NWBFile

        nwb = NWBFile(
            session_description="empty",
            identifier="y",
            session_id="51-1-1",
            session_start_time=datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc),
        )
        with NWBHDF5IO(str(path), "w") as io:
            io.write(nwb)
        return path, r"no_ophys.nwb: processing/ophys: missing"
    if kind == "duplicated_roi":
        return write_public_nwb(
            path, traces, schedule, duplicate_roi=True
        ), r"duplicated_roi.nwb: PlaneSegmentation\[2\]: duplicated ROI: same pixels as row 0"
    if kind == "no_trials":
        return write_public_nwb(
            path, traces, schedule, trials=False
        ), r"no_trials.nwb: intervals/trials: no trials table"
    if kind == "not_nwb":
        path.write_bytes(b"not an HDF5 file at all")
        return path, r"not_nwb.nwb: file: not a readable NWB file"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ("no_ophys", "duplicated_roi", "no_trials", "not_nwb"))
def test_bad_nwb_is_refused_with_no_rows(db, imaging, tmp_path, row_counts, capsys, kind):
    from populate.cli import main as cli

    path, pattern = _bad_nwb(kind, imaging, tmp_path)
    before = row_counts()
    capsys.readouterr()
    assert cli.main(["import", "nwb", str(path)]) != 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert re.search(pattern, lines[0]), lines[0]
    assert row_counts() == before
