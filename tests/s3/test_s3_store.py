"""The pipeline on an S3 object store: moto's S3 server on a loopback port, the store configured as
docker-compose.yml configures MinIO (``DJ_STORES`` plus the keys in DataJoint's secrets).

Covers import (Sensorium, suite2p), ``TrainedModel`` populate and ``load_model`` (exact round trip),
``Scan.responses()``, ``export nwb``, the report, ``gc`` (dry run, ``--delete`` by object counts, the
open-import race of docs/integrity.md), and the one-line refusal of a wrong key or a missing bucket.
The tests of this module run in order and build on each other's rows.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import QUICK_TRAINER, tiny_model
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
    assert np.array_equal(predict(loaded, test), predict(reference, test)), "predictions differ from the trained model's"
    units = TrainedModel.Unit * Scan.Unit.proj("unit_index") & key
    stored_scores = units.to_arrays("test_correlation", order_by="unit_index").astype(float)
    assert np.array_equal(stored_scores, score(loaded, data).correlation.astype(float), equal_nan=True)
