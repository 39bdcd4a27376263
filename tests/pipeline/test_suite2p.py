"""suite2p folders into scans: window extraction, hashed extraction configs, ROIs in the database,
refusal of bad input, the real suite2p on a simulated movie, and a model trained on the result."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

from pipeline.data.extraction import ExtractionConfig, InputError, extract, window_means
from pipeline.data.suite2p import read_schedule, read_suite2p
from tests.conftest import QUICK_TRAINER, tiny_model
from tests.imaging_fixtures import shared_imaging_folder


@pytest.fixture
def imaging():
    """(simulation, paths) of a simulated movie with a fake suite2p folder, shared by the test modules; read-only."""
    return shared_imaging_folder(3)


def _copy(imaging, tmp_path):
    """A private, writable copy of the imaging folder (for tests that damage it)."""
    sim, paths = imaging
    root = tmp_path / "copy"
    shutil.copytree(paths["movie"].parent, root)
    return sim, {name: root / path.relative_to(paths["movie"].parent) for name, path in paths.items()}


def _schedule(paths):
    return read_schedule(paths["stimuli"], paths["images"], paths["behavior"])


def test_window_means_average_the_frames_after_each_onset():
    trace = np.arange(20, dtype=np.float32)[None] * np.array([[1.0], [2.0]], np.float32)
    out = window_means(trace, np.array([0, 5, 10]), 1, 4)
    assert np.allclose(out, [[2, 4], [7, 14], [12, 24]])


def test_extraction_recovers_the_simulated_trial_responses(imaging):
    sim, paths = imaging
    traces = read_suite2p(paths["suite2p"])
    schedule = _schedule(paths)
    recording, footprints = extract(traces, schedule, ExtractionConfig(), dict(animal_id=1, session=1, scan_idx=1))
    assert recording.n_units == sim.recording.n_units  # the two low-probability ROIs are not units
    order = np.argsort(sim.onset_frames, kind="stable")
    truth = sim.recording.responses[order]
    # window (0, 0.5 s) at 8 Hz = 4 frames, the activity sits in one of them: spikes give activity / 4
    assert np.allclose(recording.responses, truth / 4, atol=1e-5)
    assert np.array_equal(recording.trial_image_ids, sim.recording.trial_image_ids[order])
    assert np.allclose(recording.behavior[:, 2], sim.recording.behavior[order, 2])
    assert np.allclose(footprints.centre, np.round(sim.centres), atol=1.0)

    dff, _ = extract(traces, schedule, ExtractionConfig(signal="dff"), dict(animal_id=1, session=1, scan_idx=1))
    r = [np.corrcoef(dff.responses[:, u], truth[:, u])[0, 1] for u in range(recording.n_units)]
    assert np.median(r) > 0.8, np.round(r, 2)  # median 0.90 (min 0.87) over seeds 0-5


def test_planes_are_stacked_with_distinct_unit_ids(imaging, tmp_path):
    _, paths = _copy(imaging, tmp_path)
    shutil.copytree(paths["suite2p"] / "plane0", paths["suite2p"] / "plane1")
    traces = read_suite2p(paths["suite2p"])
    recording, footprints = extract(
        traces, _schedule(paths), ExtractionConfig(), dict(animal_id=1, session=1, scan_idx=1)
    )
    n = recording.n_units // 2
    assert np.array_equal(recording.unit_ids[n:], recording.unit_ids[:n] + 100000)
    assert np.array_equal(footprints.plane, np.repeat([0, 1], n))
    assert np.array_equal(recording.responses[:, n:], recording.responses[:, :n])
    np.save(paths["suite2p"] / "plane1" / "F.npy", np.load(paths["suite2p"] / "plane1" / "F.npy")[:, :-1])
    with pytest.raises(InputError, match="plane1: n_frames: mismatched frame counts"):
        read_suite2p(paths["suite2p"])


def test_spikes_refuse_another_neuropil_coefficient(imaging):
    _, paths = imaging
    with pytest.raises(InputError, match="neucoeff.*0.7.*0.5"):
        extract(
            read_suite2p(paths["suite2p"]),
            _schedule(paths),
            ExtractionConfig(neuropil_coefficient=0.5),
            dict(animal_id=1, session=1, scan_idx=1),
        )


def test_two_extractions_coexist_with_rois_in_the_database(db, imaging):
    from populate import ingest
    from schemas import recordings

    sim, paths = imaging
    args = dict(stimuli=paths["stimuli"], images=paths["images"], behavior=paths["behavior"], um_per_pixel=2.0)
    spikes, inserted = ingest.import_suite2p(paths["suite2p"], scan="30-1-1", **args)
    assert inserted
    again, inserted = ingest.import_suite2p(paths["suite2p"], scan="30-1-9", **args)
    assert (again, inserted) == (spikes, False)  # same folder, same config: the scan that exists
    # a neuropil coefficient of its own: the shared folder's default ΔF/F extraction may exist already
    dff, inserted = ingest.import_suite2p(
        paths["suite2p"], scan="30-1-2", extraction=dict(signal="dff", neuropil_coefficient=0.75), **args
    )
    assert inserted
    rows = (recordings.Extraction * recordings.ExtractionConfig & [spikes, dff]).to_dicts(order_by="scan_idx")
    assert [r["signal"] for r in rows] == ["spikes", "dff"]
    assert rows[0]["source_hash"] == rows[1]["source_hash"] and rows[0]["extraction_hash"] != rows[1]["extraction_hash"]
    footprints = recordings.fetch_footprints(spikes)
    assert len(footprints) == sim.recording.n_units == len(recordings.Scan.Unit & spikes)
    assert np.allclose(footprints.centre, np.round(sim.centres), atol=1.0)
    units = (recordings.Scan.Unit & spikes).to_arrays(order_by="unit_index")
    assert np.allclose(units["cortical_x"], 2.0 * footprints.centre[:, 1])
    traces = read_suite2p(paths["suite2p"])
    assert all(np.array_equal(p, traces.footprints.pixels[r]) for p, r in zip(footprints.pixels, footprints.roi))
    with pytest.raises(recordings.DuplicateScanError, match="30-1-1"):
        ingest.import_suite2p(paths["suite2p"], scan="30-1-1", extraction=dict(window_s=(0.0, 0.25)), **args)


def _damage(kind: str, paths) -> str:
    """Damage a copy of the folder; returns a pattern the error message must match (file and field)."""
    plane = paths["suite2p"] / "plane0"
    if kind == "frame_count":
        data = dict(np.load(paths["behavior"]))
        data["running_speed"] = data["running_speed"][:-10]
        np.savez(paths["behavior"], **data)
        return r"behavior.npz: running_speed: .*frames.*mismatched frame counts"
    if kind == "onsets_beyond":
        text = paths["stimuli"].read_text().splitlines()
        last = text[-1].split(",")
        last[0] = "99999"
        paths["stimuli"].write_text("\n".join(text[:-1] + [",".join(last)]) + "\n")
        return r"stimuli.csv: onset_frame: .*beyond the movie"
    if kind == "missing_iscell":
        (plane / "iscell.npy").unlink()
        return r"iscell.npy: iscell: missing file"
    if kind == "wrong_dtype":
        np.save(plane / "F.npy", np.load(plane / "F.npy").astype(np.int16))
        return r"F.npy: F: dtype int16, expected floating point"
    if kind == "duplicated_roi":
        stat = np.load(plane / "stat.npy", allow_pickle=True)
        stat[3] = dict(stat[1])
        np.save(plane / "stat.npy", stat, allow_pickle=True)
        return r"stat.npy: stat\[3\]: duplicated ROI: same pixels as stat\[1\]"
    if kind == "trace_frames":
        np.save(plane / "Fneu.npy", np.load(plane / "Fneu.npy")[:, :-5])
        return r"plane0: n_frames: mismatched frame counts"
    if kind == "bad_tier":
        paths["stimuli"].write_text(paths["stimuli"].read_text().replace(",train,", ",training,", 1))
        return r"stimuli.csv: tier: unknown tier"
    raise AssertionError(kind)


BAD_INPUTS = (
    "frame_count",
    "onsets_beyond",
    "missing_iscell",
    "wrong_dtype",
    "duplicated_roi",
    "trace_frames",
    "bad_tier",
)


@pytest.mark.parametrize("kind", BAD_INPUTS)
def test_bad_suite2p_input_is_refused_with_no_rows(db, imaging, tmp_path, row_counts, capsys, kind):
    """Through the command line (in this process: ``python -m populate`` exits with what main returns)."""
    from populate.cli import main as cli

    _, paths = _copy(imaging, tmp_path)
    pattern = _damage(kind, paths)
    before = row_counts()
    capsys.readouterr()
    code = cli.main(
        [
            "import",
            "suite2p",
            str(paths["suite2p"]),
            "--stimuli",
            str(paths["stimuli"]),
            "--images",
            str(paths["images"]),
            "--behavior",
            str(paths["behavior"]),
            "--scan",
            "31-1-1",
        ]
    )
    assert code != 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert re.search(pattern, lines[0]), lines[0]
    assert row_counts() == before


def test_a_model_trains_on_a_suite2p_scan(db, imaging):
    """The usual TrainingTask and populate, nothing special for an imported scan."""
    from pipeline.stats import oracle_correlation
    from populate import ingest
    from populate.work import run
    from schemas import db as settings
    from schemas import recordings
    from schemas.models import TrainedModel, TrainingTask

    if settings.backend() != "postgresql":  # nothing here depends on the backend; spare the suite's time
        pytest.skip("trained once, on PostgreSQL")
    _, paths = imaging
    key, _ = ingest.import_suite2p(
        paths["suite2p"], paths["stimuli"], paths["images"], scan="32-1-1", behavior=paths["behavior"]
    )
    # the folder may already be in as another scan (same folder and config): train on whichever it is
    task = TrainingTask.add(
        model=tiny_model("cnn"),
        dataset=dict(scan=ingest.scan_name(key), image_shape=(18, 32)),
        trainer=QUICK_TRAINER,
        seeds=(0,),
        name="suite2p-scan",
    )[0]
    run.populate_all(tables=["Reliability", "Normalization", "TrainedModel"], progress=False)
    model = (TrainedModel & task).fetch1()
    n_units = len(recordings.Scan.Unit & key)
    assert model["n_units"] == n_units == len(TrainedModel.Unit & task) and np.isfinite(model["test_correlation"])
    # the scan's statistics are those of the simulated activity: the imported spikes are activity / 4
    sim = imaging[0]
    test = sim.recording.tiers == "test"
    truth = np.nanmean(oracle_correlation(sim.recording.responses[test], sim.recording.trial_image_ids[test]))
    assert abs(model["oracle_ceiling"] - truth) < 1e-4, (model["oracle_ceiling"], truth)


@pytest.mark.slow
def test_real_suite2p_on_a_simulated_movie(tmp_path):
    """Movie -> suite2p (registration, detection, extraction, deconvolution) -> scan, against ground
    truth; suite2p's pickles unpickle as with numpy's full unpickler.  Marked slow: not in CI."""
    pytest.importorskip("suite2p")
    from pipeline.data.movie import MovieConfig, match_rois, simulate_movie, write_movie_folder
    from pipeline.data.simulate import SimulationConfig
    from pipeline.data.suite2p import run_suite2p

    sim = simulate_movie(
        MovieConfig(field_of_view=(64, 64)),
        SimulationConfig(n_units=12, n_single_images=100, n_test_images=5, test_repeats=4, calibration_images=100),
        seed=0,
    )
    paths = write_movie_folder(sim, tmp_path)
    run_suite2p(paths["movie"], tmp_path, sim.frame_rate)
    traces = read_suite2p(tmp_path / "suite2p")
    recording, footprints = extract(
        traces, _schedule(paths), ExtractionConfig(iscell_threshold=0.0), dict(animal_id=1, session=1, scan_idx=1)
    )
    match, iou = match_rois(sim.footprints, [p[:, :2].astype(int) for p in footprints.pixels], (64, 64))
    assert (match >= 0).mean() >= 0.8, (match, iou)
    truth = sim.recording.responses[np.argsort(sim.onset_frames, kind="stable")]
    r = [np.corrcoef(recording.responses[:, match[u]], truth[:, u])[0, 1] for u in np.flatnonzero(match >= 0)]
    assert np.median(r) > 0.8, np.round(r, 2)
    assert_unpickled_as_numpy_does(tmp_path / "suite2p")


def assert_unpickled_as_numpy_does(folder) -> None:
    """Every ``ops.npy`` and ``stat.npy`` of a real suite2p output reads through the array-only
    unpickler to the objects numpy's full unpickler builds: equal types, and equal bytes when both are
    pickled again.  ``allow_pickle=True`` is safe here: the files were written by suite2p in this test."""
    import functools
    import pickle

    from pipeline.data.limits import Budget
    from pipeline.data.safe_load import read_pickled_npy
    from pipeline.data.suite2p import plane_folders

    for plane in plane_folders(folder):
        for name in ("ops.npy", "stat.npy"):
            path = plane / name
            ours = read_pickled_npy(path, Budget(), functools.partial(InputError, path, name))
            numpys = np.load(path, allow_pickle=True)
            assert type(ours) is type(numpys) and ours.dtype == numpys.dtype and ours.shape == numpys.shape
            assert pickle.dumps(ours, protocol=4) == pickle.dumps(numpys, protocol=4), path


def test_simulate_movie_command_writes_the_lab_files(tmp_path, capsys):
    pytest.importorskip("tifffile")
    import tifffile

    from populate.cli import main as cli

    out = tmp_path / "movie"
    assert cli.main(["simulate", "--movie", str(out), "--seed", "2"]) == 0
    movie = tifffile.imread(out / "movie.tif")
    schedule = read_schedule(out / "stimuli.csv", out / "images.npz", out / "behavior.npz")
    truth = np.load(out / "truth.npz")
    assert movie.dtype == np.uint16 and movie.shape == (len(schedule.behavior["pupil_size"]), 96, 96)
    assert truth["footprints"].shape[1:] == movie.shape[1:] and len(truth["responses"]) == schedule.n_trials
    assert np.array_equal(truth["onset_frames"], schedule.onset_frame)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_pickled_ops_file_runs_no_code(tmp_path):
    """A collaborator's ops.npy whose object names os.system is refused, naming the file and the class,
    and the command never runs."""
    marker = tmp_path / "ran"
    payload = np.empty(1, dtype=object)
    payload[0] = _Payload(marker)
    np.save(tmp_path / "F.npy", np.zeros((1, 10), np.float32))
    for name in ("ops.npy", "stat.npy"):
        np.save(tmp_path / name, payload, allow_pickle=True)
    with pytest.raises(InputError, match=r"(ops|stat)\.npy.*system"):
        read_suite2p(tmp_path)
    assert not marker.exists()


def test_ops_with_suite2p_014s_dates_are_read(imaging, tmp_path):
    """suite2p 0.14 pickles ``date_proc`` (a timezone-aware datetime) and durations into ops.npy; the
    array-only unpickler rebuilds them (they name datetime's value classes, which run no code)."""
    import datetime

    folder = _copy(imaging, tmp_path)[1]["suite2p"]
    plane = folder / "plane0"
    ops = np.load(plane / "ops.npy", allow_pickle=True).item()
    ops["date_proc"] = datetime.datetime(2024, 5, 1, 12, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))
    ops["timing"] = {"registration": datetime.timedelta(seconds=3.5), "day": datetime.date(2024, 5, 1)}
    np.save(plane / "ops.npy", np.array(ops, dtype=object), allow_pickle=True)
    assert read_suite2p(folder).frame_rate == float(ops["fs"])
