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
