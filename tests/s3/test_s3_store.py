"""The pipeline on an S3 object store: moto's S3 server on a loopback port, the store configured as
docker-compose.yml configures MinIO (``DJ_STORES`` plus the keys in DataJoint's secrets).

Covers import (Sensorium, suite2p), ``TrainedModel`` populate and ``load_model`` (exact round trip),
``Scan.responses()``, ``export nwb``, the report, ``gc`` (dry run, ``--delete`` by object counts, the
open-import race of docs/integrity.md), the one-line refusal of a wrong key or a missing bucket, and a
training's checkpoints in the bucket (saved, resumed from by the next worker, then collected by ``gc``).
The tests of this module run in order and build on each other's rows.
"""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import QUICK_TRAINER, tiny_model
from tests.populate.test_workers import wait_for
from tests.s3.moto_store import BUCKET
from tests.sensorium_fixtures import write_fake_sensorium

pytestmark = [pytest.mark.s3, pytest.mark.db]

SENSORIUM_SCAN = (41, 1, 1)
SIMULATED_SCAN = "42-1-1"
SUITE2P_SCAN = "43-1-1"
RACE_SCAN = "46-6-6"


def _key(scan) -> dict:
    animal, session, index = (int(p) for p in (scan.split("-") if isinstance(scan, str) else scan))
    return dict(animal_id=animal, session=session, scan_idx=index)


def _ok(result) -> str:
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _scan_objects(s3, key: dict) -> set[str]:
    marker = f"animal_id={key['animal_id']}/"
    return {k for k in s3.objects() if marker in k}


def test_import_sensorium_writes_the_scan_to_the_bucket_and_responses_reads_it_back(s3, tmp_path):
    from schemas import db
    from schemas.recordings import Scan
    from tests.sensorium_fixtures import fake_sensorium_files

    name = "static41-1-1-GrayImageNet-s3"
    source = write_fake_sensorium(tmp_path, n_trials=40, n_units=7, seed=5, scan=SENSORIUM_SCAN, name=name)
    assert "imported scan 41-1-1" in _ok(s3.cli("import", "sensorium", source))
    key = _key(SENSORIUM_SCAN)
    assert _scan_objects(s3, key), "the scan's arrays are objects in the bucket"
    assert not db.is_local_store(db.STORE)

    files = fake_sensorium_files(n_trials=40, n_units=7, seed=5, scan=SENSORIUM_SCAN)
    trial_ids = sorted(int(p.split("/")[-1][:-4]) for p in files if p.startswith("data/responses/"))
    tiers = files["meta/trials/tiers.npy"]
    kept = [t for t in trial_ids if tiers[t] != "final_test"]
    expected = np.stack([files[f"data/responses/{t}.npy"] for t in kept])
    for mmap in (False, True):
        matrix = (Scan & key).responses(mmap=mmap)
        assert matrix.dtype == expected.dtype and matrix.shape == expected.shape
        assert np.array_equal(matrix, expected)


def test_import_suite2p_writes_the_extracted_scan_to_the_bucket(s3):
    from pipeline.data.extraction import ExtractionConfig, extract
    from pipeline.data.suite2p import read_schedule, read_suite2p
    from schemas.recordings import Scan
    from tests.imaging_fixtures import shared_imaging_folder

    _sim, paths = shared_imaging_folder(3)
    result = s3.cli(
        "import", "suite2p", paths["suite2p"], "--stimuli", paths["stimuli"], "--images", paths["images"],
        "--behavior", paths["behavior"], "--scan", SUITE2P_SCAN,
    )  # fmt: skip
    _ok(result)
    key = _key(SUITE2P_SCAN)
    assert _scan_objects(s3, key), "the extracted scan's arrays are objects in the bucket"
    schedule = read_schedule(paths["stimuli"], paths["images"], paths["behavior"])
    recording, _ = extract(read_suite2p(paths["suite2p"]), schedule, ExtractionConfig(), key)
    assert np.array_equal((Scan & key).responses(), recording.responses[~recording.withheld])


@pytest.fixture(scope="module")
def trained(s3):
    """A simulated scan imported and its statistics computed by child processes, then one tiny CNN trained
    in this process; returns (model key, the weights as trained, captured just before they were inserted)."""
    from populate.work import run
    from schemas.models import TrainedModel, TrainingTask

    _ok(s3.cli("simulate", "--preset", "tiny", "--seed", "1", "--scan", SIMULATED_SCAN))
    _ok(s3.cli("run", "--tables", "Reliability", "Normalization", "--quiet"))
    key = TrainingTask.add(
        model=tiny_model("cnn"),
        dataset=dict(scan=SIMULATED_SCAN, image_shape=(18, 32)),
        trainer=QUICK_TRAINER,
        seeds=(0,),
        name="s3-cnn",
    )[0]
    as_trained = {}
    original = TrainedModel.make_insert

    def make_insert(self, key, fitted, test):
        as_trained.update({name: np.array(value) for name, value in fitted["weights"].items()})
        return original(self, key, fitted, test)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TrainedModel, "make_insert", make_insert)
        assert run.populate_all(tables=["TrainedModel"], progress=False)["TrainedModel"] == 1
    return key, as_trained


def test_trained_weights_round_trip_exactly_through_the_bucket(s3, trained):
    from pipeline.models.experiment import load_encoder, predict, score, state_to_arrays
    from populate import api
    from schemas.models import ModelConfig, TrainedModel, load_scan_tensors
    from schemas.recordings import Scan

    key, as_trained = trained
    row = (TrainedModel & key).fetch1("n_units", "image_height", "image_width")
    models = f"{s3.location}/_hash/{s3.prefix}__models/"
    assert any(k.startswith(models) for k in s3.objects()), "the weights (<blob@pipeline>) are an object in the bucket"

    loaded = api.load_predictor(key, device="cpu")  # populate.api's load_model, from the bucket
    stored = state_to_arrays(loaded.state_dict())
    assert stored.keys() == as_trained.keys()
    for name, array in as_trained.items():
        assert stored[name].dtype == array.dtype and np.array_equal(stored[name], array), name

    data = load_scan_tensors(_key(SIMULATED_SCAN), (18, 32))
    reference = load_encoder(ModelConfig.load(key), row[0], (row[1], row[2]), as_trained, device="cpu")
    test = data.split("test")
    assert np.array_equal(predict(loaded, test), predict(reference, test)), "predictions differ from the trained ones"
    units = TrainedModel.Unit * Scan.Unit.proj("unit_index") & key
    stored_scores = units.to_arrays("test_correlation", order_by="unit_index").astype(float)
    assert np.array_equal(stored_scores, score(loaded, data).correlation.astype(float), equal_nan=True)


def test_export_nwb_reads_every_array_from_the_bucket(s3, trained, tmp_path):
    from pipeline.data.nwb import read_nwb
    from schemas.recordings import fetch_recording

    out = tmp_path / "scan.nwb"
    session = ("--session-start", "2024-03-01T09:30:00+01:00", "--experimenter", "Doe, Jane", "--age", "P90D")
    _ok(s3.cli("export", "nwb", SIMULATED_SCAN, out, *session, "--sex", "F"))
    exported, _footprints, info = read_nwb(out)
    stored = fetch_recording(_key(SIMULATED_SCAN))
    assert info["layout"] == "trials"
    assert np.array_equal(exported.responses, stored.responses)
    assert np.array_equal(exported.images, stored.images)


def test_report_reads_the_models_from_the_bucket(s3, trained, tmp_path):
    out = tmp_path / "report.html"
    _ok(s3.cli("report", "--out", out))
    page = out.read_text()
    assert "s3-cnn" in page and SIMULATED_SCAN in page


def _gc(s3, *args) -> str:
    return _ok(s3.cli("gc", "--limit", "0", *args))


def _listed(output: str) -> set[str]:
    return {line.strip() for line in output.splitlines() if line.startswith("  ")}


def test_gc_on_s3_deletes_exactly_the_unreferenced_objects(s3, trained):
    from schemas.models import TrainedModel
    from schemas.recordings import Scan

    key, _ = trained
    models = f"{s3.location}/_hash/{s3.prefix}__models/"
    # a write cut short leaves a temporary object, which DataJoint's own listing skips
    temporary = f"{models}ab/abcdefghijklmnopqrstuvwxyz.saving"
    s3.server.client().put_object(Bucket=BUCKET, Key=temporary, Body=b"partial write")
    before = s3.objects()
    unreferenced = {k for k in before if k.startswith(models)} | _scan_objects(s3, _key(SENSORIUM_SCAN))
    assert temporary in unreferenced
    assert unreferenced and len(unreferenced) < len(before)
    (TrainedModel & key).delete(prompt=False)
    (Scan & _key(SENSORIUM_SCAN)).delete(prompt=False)
    assert s3.objects() == before, "deleting rows leaves their objects to gc"

    dry = _gc(s3, "--grace", "0")
    assert "dry run" in dry
    assert {f"{s3.location}/{path}" for path in _listed(dry)} == unreferenced
    assert s3.objects() == before, "a dry run deletes nothing"

    deleted = _gc(s3, "--delete", "--grace", "0", "--wait", "60")
    after = s3.objects()
    removed = before - after
    assert after <= before and removed <= unreferenced, "gc deleted a referenced object"
    assert f"deleted {len(removed)} file(s)" in deleted, deleted
    # On a server shared with other clients, a transaction open elsewhere for the whole wait holds
    # hash-addressed orphans back (rule 4 of docs/integrity.md); gc says so, and nothing else stays.
    held = unreferenced - removed
    assert all(k.startswith(models) and not k.endswith(".saving") for k in held), held
    assert not held or f"{len(held)} orphan(s) kept: {len(held)} open transaction" in deleted, deleted
    print(f"objects: {len(before)} before, {len(after)} after gc --delete; {len(unreferenced)} unreferenced")
    for scan in Scan.proj().to_dicts():  # what is still referenced still reads
        assert (Scan & scan).responses().size


def test_gc_sees_objects_written_by_another_client_since_its_last_scan(s3):
    """s3fs keeps every listing it made; a second scan in one process must still see new objects."""
    from populate.admin import store_gc

    section = f"_schema/{s3.prefix}__recordings/scan__responses"
    first, second = (f"{section}/animal_id={a}/session=1/scan_idx=1/matrix_orphan.npy" for a in (98, 99))
    client = s3.server.client()
    client.put_object(Bucket=BUCKET, Key=f"{s3.location}/{first}", Body=b"orphan")
    try:
        assert first in store_gc.collect()["orphaned_schema_paths"]
        client.put_object(Bucket=BUCKET, Key=f"{s3.location}/{second}", Body=b"orphan")  # another client
        assert {first, second} <= set(store_gc.collect()["orphaned_schema_paths"])
    finally:
        for path in (first, second):
            client.delete_object(Bucket=BUCKET, Key=f"{s3.location}/{path}")


def test_gc_delete_on_s3_keeps_the_objects_of_an_import_held_open(s3, capsys):
    """docs/integrity.md's race on S3: ``gc --delete --grace 0`` while an import has written its objects but
    not committed its rows deletes none of them, and the import then commits a readable scan."""
    import datajoint as dj

    from populate.cli.main import main
    from schemas import db
    from schemas.recordings import Scan, fetch_recording

    key = _key(RACE_SCAN)
    leaf = f"{_q(db.schema_name('recordings'))}.{_q('ground_truth__unit')}"
    holder = dj.Connection(
        dj.config["database.host"],
        dj.config["database.user"],
        dj.config["database.password"],
        port=dj.config["database.port"],
        use_tls=dj.config["database.use_tls"],
    )
    # Hold the import at its last table: every earlier object is written, no row committed (as in
    # tests/populate/test_security.py; PostgreSQL: a table lock, InnoDB: a gap lock).
    assert main(["gc", "--limit", "0"]) == 0  # lists the store in this process before the import writes
    capsys.readouterr()
    holder.query("BEGIN")
    if holder.adapter.backend == "postgresql":
        holder.query(f"LOCK TABLE {leaf} IN SHARE MODE")
    else:
        holder.query(f"SELECT * FROM {leaf} WHERE animal_id = {key['animal_id']} FOR UPDATE")
    existing = s3.objects()
    importer = subprocess.Popen(
        [sys.executable, "-m", "populate", "simulate", "--preset", "tiny", "--seed", "6", "--scan", RACE_SCAN],
        cwd=s3.project,
        env=s3.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        last_insert = "the import to reach its last insert"
        wait_for(lambda: any("ground_truth/" in k for k in _scan_objects(s3, key)), 180, last_insert)
        time.sleep(0.5)
        written = s3.objects() - existing  # the scan's arrays and its new stimulus images
        code = main(["gc", "--delete", "--grace", "0", "--wait", "0", "--limit", "0"])  # sees the new objects
        out = capsys.readouterr().out
        assert code == 0
        assert "kept" in out and "open transaction" in out, out
    finally:
        holder.query("ROLLBACK")
        holder.close()
    output = importer.communicate(timeout=180)[0]
    assert importer.returncode == 0, output
    assert written <= s3.objects(), "gc deleted objects of the open import"
    print(f"open import: {len(written)} objects written before gc --delete, all kept")
    assert (Scan & key).responses().shape[0] > 0
    fetch_recording(key)  # reads every stored array of the scan back from the bucket


def _q(name: str) -> str:
    import datajoint as dj

    return dj.conn().adapter.quote_identifier(name)


def _one_line_error(result) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    return errors[0]


def test_a_wrong_key_or_a_missing_bucket_is_refused_in_one_line_and_writes_nothing(s3, tmp_path, row_counts):
    import datajoint as dj

    from populate import ingest
    from schemas import db

    rows, objects = row_counts(), s3.objects()
    wrong = s3.server.project(tmp_path / "wrong", secret_key="not-the-secret")
    message = _one_line_error(s3.cli("simulate", "--preset", "tiny", "--seed", "7", "--scan", "47-7-7", project=wrong))
    assert "access refused" in message and "stores.pipeline.secret_key" in message, message
    missing = s3.env(DJ_STORES=s3.server.stores_json(s3.location, bucket="no-such-bucket"))
    message = _one_line_error(s3.cli("simulate", "--preset", "tiny", "--seed", "7", "--scan", "47-7-7", env=missing))
    assert "'no-such-bucket'" in message and "does not exist" in message, message

    # Past the start-up check (a key revoked, a bucket removed while a process runs): the import's
    # transaction leaves no row behind.
    good = dict(dj.config.stores[db.STORE])
    for broken in (dict(good, secret_key="not-the-secret"), dict(good, bucket="no-such-bucket")):
        dj.config.stores[db.STORE] = broken
        try:
            with pytest.raises(OSError):
                ingest.simulate("tiny", seed=7, scan="47-7-7")
        finally:
            dj.config.stores[db.STORE] = good
    dj.config.stores[db.STORE] = dict(good, endpoint="127.0.0.1:1")  # nothing listens there
    try:
        with pytest.raises(
            db.SettingsError, match=r"^object store 'pipeline' \(bucket 'pipeline' at 127.0.0.1:1\): unre"
        ):
            db.check_store()
    finally:
        dj.config.stores[db.STORE] = good
    assert row_counts() == rows
    assert s3.objects() == objects


# ---------------------------------------------------------------------------------------------
# a training's checkpoints in the bucket: saved, resumed from, then collected by gc


def _start_worker(s3, log_path) -> subprocess.Popen:
    """A ``TrainedModel`` worker configured as compose runs one, on one thread, saving checkpoints every 20 steps."""
    from tests.populate.test_resume import SCHEDULE

    return subprocess.Popen(
        [sys.executable, "-m", "populate", "worker", "--tables", "TrainedModel", "--threads", "1", "--poll", "0.2"]
        + ["--heartbeat", "0.3", "--idle-exit", "1"],
        cwd=s3.project,
        env=s3.env(**SCHEDULE),
        stdout=open(log_path, "w"),
        stderr=subprocess.STDOUT,
    )


@pytest.mark.timeout(600)
def test_a_training_checkpoints_to_the_bucket_resumes_from_it_and_gc_deletes_the_spent_checkpoints(
    s3, trained, tmp_path
):
    """A worker saves a checkpoint of a 100-step training into the bucket; frozen there and stopped by
    SIGTERM, it hands the job back.  A second worker resumes from that step, and the result equals an
    uninterrupted run's.  Every checkpoint object is then unreferenced, and ``gc --delete`` removes them."""
    import signal

    from schemas.checkpoints import Checkpoint
    from schemas.models import TrainedModel, TrainingTask
    from tests.populate.test_resume import TINY, TRAINER, reference_fit

    # The gc test deleted the model of this task: a TrainedModel worker would train it again first.
    (TrainingTask & trained[0]).delete(prompt=False)
    dataset = dict(scan=SIMULATED_SCAN, image_shape=(18, 32))
    trainer = dict(TRAINER, max_iterations=100, patience=100)  # running_at_scale.md counts its checkpoints
    task = TrainingTask.add(model=TINY, dataset=dataset, trainer=trainer, seeds=(0,), name="s3-resume")[0]
    mine = dict(job_table=TrainedModel.full_table_name)
    checkpoints = f"{s3.location}/_hash/{s3.prefix}__checkpoints/"
    first = _start_worker(s3, tmp_path / "worker-0.log")
    try:
        wait_for(lambda: Checkpoint & mine, timeout=180, what="the first checkpoint")
        first.send_signal(signal.SIGSTOP)  # frozen mid-training: it cannot finish meanwhile
        saved = (Checkpoint & mine).fetch1("step")
        assert any(k.startswith(checkpoints) for k in s3.objects()), "the checkpoint is an object in the bucket"
        first.send_signal(signal.SIGTERM)
    finally:
        first.send_signal(signal.SIGCONT)
        first.wait(60)
    text = (tmp_path / "worker-0.log").read_text()
    assert first.returncode == 0 and "back to pending" in text, text
    assert 0 < saved < trainer["max_iterations"] and not TrainedModel & task

    second = _start_worker(s3, tmp_path / "worker-1.log")
    second.wait(240)
    text = (tmp_path / "worker-1.log").read_text()
    assert second.returncode == 0 and f"resuming from the checkpoint at step {saved}" in text, text
    assert not Checkpoint & mine, "the checkpoint row goes with the completed job"
    stored, whole = (TrainedModel & task).fetch1(), reference_fit(task)
    assert stored["iterations"] == whole.fit.iterations == trainer["max_iterations"]
    assert stored["history"] == whole.fit.history
    for name, value in whole.fit.state_dict.items():
        assert np.array_equal(stored["weights"][name], value.numpy()), name

    # Saved every 20 steps but the last: 4 states, each replaced by the next or deleted with the job.
    before = s3.objects()
    spent = {k for k in before if k.startswith(checkpoints)}
    assert len(spent) >= 4, spent
    listed = {f"{s3.location}/{path}" for path in _listed(_gc(s3, "--grace", "0"))}
    assert spent <= listed, spent - listed
    deleted = _gc(s3, "--delete", "--grace", "0", "--wait", "60")
    after = s3.objects()
    removed = before - after
    assert after <= before and removed <= listed, "gc deleted a referenced object"
    # As in the gc test above: a transaction held open elsewhere on a shared server keeps hash-addressed
    # orphans, and gc says so.
    held = spent - removed
    assert not held or f"{len(held)} orphan(s) kept: {len(held)} open transaction" in deleted, deleted
    print(f"checkpoint objects: {len(spent)} before gc --delete, {len(held)} after; all: {len(before)} -> {len(after)}")
    assert (TrainedModel & task).fetch1("weights").keys() == whole.fit.state_dict.keys(), "the result still reads"
