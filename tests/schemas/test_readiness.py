"""A key enters a job queue only once every input its make reads is in place.

The fast tests follow one training task of a scan of their own through its inputs, and a task
list declared ahead of every model; the slow one starts four workers at once on a freshly set-up
pipeline holding the whole ``demo --quick`` task list, three times.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import QUICK_TRAINER, REPO, tiny_model
from tests.populate.commands import assert_quick_demo_complete

SCAN = "3-1-1"
SCAN_KEY = dict(animal_id=3, session=1, scan_idx=1)


@pytest.fixture(scope="module")
def task(db):
    """One CNN training task on a scan whose statistics are not computed yet; removed afterwards."""
    from populate import ingest
    from schemas.models import TrainedModel, TrainingTask

    ingest.simulate("tiny", seed=3, scan=SCAN)
    key = TrainingTask.add(
        model=tiny_model("cnn"),
        dataset=dict(scan=SCAN, image_shape=(18, 32)),
        trainer=QUICK_TRAINER,
        seeds=(0,),
        name="readiness-cnn",
    )[0]
    yield key
    TrainedModel.jobs.restrict(key, semantic_check=False).delete_quick()
    (TrainingTask & key).delete()


def _waiting_for(table, key) -> list[str] | None:
    """The inputs ``key`` of ``table`` waits for (None: not waiting)."""
    from schemas import readiness

    _, listed = readiness.waiting(table)
    found = [inputs for k, inputs in listed if all(k[name] == key[name] for name in k if name in key)]
    return found[0] if found else None


def test_key_source_excludes_a_task_until_its_inputs_land(task):
    from populate.work import jobs as queues
    from schemas.models import TrainedModel
    from schemas.stats import Normalization, Reliability

    jobs = queues.queue(TrainedModel)
    assert TrainedModel().candidates & task
    assert not TrainedModel().key_source & task
    assert _waiting_for(TrainedModel, task) == ["Normalization", "Reliability"]
    queues.refresh(jobs)
    assert not jobs.restrict(task, semantic_check=False), "a task whose inputs are missing is never queued"

    from populate.work import status

    report = status.status([TrainedModel])
    [row] = report["tables"]
    assert row["waiting"] >= 1 and row["keys"] >= row["done"] + row["waiting"]
    assert "waits for Normalization, Reliability" in status.format_status(report)

    Normalization.populate(SCAN_KEY)
    assert not TrainedModel().key_source & task
    assert _waiting_for(TrainedModel, task) == ["Reliability"]

    Reliability.populate(SCAN_KEY)
    assert TrainedModel().key_source & task
    assert _waiting_for(TrainedModel, task) is None
    queues.refresh(jobs)
    assert jobs.restrict(task, semantic_check=False).fetch1("status") == "pending"


def test_a_missing_input_sends_the_job_back_to_pending_not_to_error(task):
    from populate.work import jobs as queues
    from populate.work.worker import Worker
    from schemas.models import TrainedModel
    from schemas.stats import Normalization, Reliability

    Normalization.populate(SCAN_KEY)
    Reliability.populate(SCAN_KEY)
    jobs = queues.queue(TrainedModel)
    queues.refresh(jobs)
    assert jobs.restrict(task, semantic_check=False).fetch1("status") == "pending"

    # The input goes away while the job is queued: the next refresh drops the job.
    (Normalization & SCAN_KEY).delete_quick()
    queues.refresh(jobs)
    assert not jobs.restrict(task, semantic_check=False)

    # Should such a job slip through anyway, its make finds the input missing and hands it back.
    jobs.insert1(dict(task, status="pending", priority=5))
    summary = Worker([TrainedModel], refresh=False, idle_exit=0, poll=60).run()
    assert (summary.done, summary.failed, summary.not_ready) == (0, 0, 1), summary
    row = jobs.restrict(task, semantic_check=False).fetch1()
    assert row["status"] == "pending" and row["host"] == "" and row["pid"] == 0
    assert row["error_message"] == 'input not ready: Normalization {"animal_id": 3, "scan_idx": 1, "session": 1}'
    assert row["scheduled_time"] > queues.server_now(jobs.connection), "due again only after a pause"
    assert not len(jobs.errors.restrict(task, semantic_check=False))
    assert not TrainedModel & task


def test_a_task_list_declared_ahead_waits_stage_by_stage(task):
    """Ensembles, similarities and classifiers may name what is not computed yet; each waits for it."""
    import schemas
    from populate import ingest
    from schemas import readiness
    from schemas.classifiers import ClassifierTask, EvaluationConfig, NoiseEvaluation, TrainedClassifier
    from schemas.models import Ensemble
    from schemas.similarity import ImageSet, PredictedResponses, Similarity, SimilarityTask

    Ensemble.create("readiness", [task])
    ImageSet.from_scans("readiness", [SCAN_KEY])
    SimilarityTask.add("readiness-neural", dict(method="model"), image_set="readiness", ensembles=["readiness"])
    SimilarityTask.add("readiness-pixel", dict(method="pixel"), image_set="readiness")
    ingest.shapes_classes(4, 2, 2, name="shapes-readiness")
    [neural] = ClassifierTask.add(
        dict(width=4, epochs=1, control="neural", alpha=1.0), "shapes-readiness", neural="readiness-neural"
    )
    [pixel] = ClassifierTask.add(
        dict(width=4, epochs=1, control="pixel", alpha=1.0),
        "shapes-readiness",
        neural="readiness-neural",
        target="readiness-pixel",
    )
    try:
        pair = dict(ensemble_name="readiness", image_set="readiness")
        assert "TrainedModel of every member" in _waiting_for(PredictedResponses, pair)
        neural_similarity = dict(similarity_name="readiness-neural")
        assert "PredictedResponses of every ensemble" in _waiting_for(Similarity, neural_similarity)
        assert Similarity().key_source & dict(similarity_name="readiness-pixel"), "a pixel similarity needs no model"
        assert _waiting_for(TrainedClassifier, neural) == ["Similarity (reference)", "Similarity (target)"]
        assert _waiting_for(TrainedClassifier, pixel) == ["Similarity (reference)", "Similarity (target)"]
        # an evaluation waits for its classifier (under each evaluation config earlier tests added)
        assert _waiting_for(NoiseEvaluation, neural) == (["TrainedClassifier"] if EvaluationConfig() else None)
        # Every table's readiness query runs on this server.
        for table in schemas.computed_tables():
            count, _ = readiness.waiting(table, limit=3)
            assert count >= 0 and len(table().key_source) >= 0
    finally:
        (ClassifierTask & [neural, pixel]).delete()
        (SimilarityTask & [dict(similarity_name=f"readiness-{m}") for m in ("neural", "pixel")]).delete()
        (ImageSet & dict(image_set="readiness")).delete()
        (Ensemble & dict(ensemble_name="readiness")).delete()


def test_an_idle_worker_looks_once_more_before_leaving(task):
    """Its last job made a downstream key ready: the worker queues and computes it before leaving idle,
    however long its poll interval."""
    from populate.work import jobs as queues
    from populate.work.worker import Worker
    from schemas.models import TrainedModel
    from schemas.stats import Normalization, Reliability

    Reliability.populate(SCAN_KEY)
    (Normalization & SCAN_KEY).delete_quick()
    queues.queue(TrainedModel).restrict(task, semantic_check=False).delete_quick()
    summary = Worker([Normalization, TrainedModel], idle_exit=0.5, poll=600).run()
    assert summary.failed == 0 and summary.done >= 2, summary
    assert Normalization & SCAN_KEY and TrainedModel & task


# ---------------------------------------------------------------------------------------------
# four workers at once on the whole demo


def _cli(env, *args, timeout=300) -> subprocess.CompletedProcess:
    out = subprocess.run(
        [sys.executable, "-m", "populate", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("attempt", [1, 2, 3])
def test_four_workers_started_together_finish_the_demo_without_errors(db, tmp_path, attempt):
    from schemas import db as settings

    env = dict(
        os.environ,
        PIPELINE_PREFIX=f"{settings.prefix()}_r{attempt}",
        PIPELINE_STORE_DIR=str(tmp_path / "store"),
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
    )  # four workers share the machine's cores
    try:
        _cli(env, "setup")
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import schemas; schemas.activate(); from populate.cli import demo; demo.declare_tasks(quick=True)",
            ],
            cwd=REPO,
            env=env,
            check=True,
            capture_output=True,
            timeout=300,
        )
        logs = [open(tmp_path / f"worker-{i}.log", "w") for i in range(4)]
        workers = [
            subprocess.Popen(
                [sys.executable, "-m", "populate", "worker", "--idle-exit", "8", "--poll", "1"],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            for log in logs
        ]
        for worker in workers:
            worker.wait(timeout=1500)
        text = [(tmp_path / f"worker-{i}.log").read_text() for i in range(4)]
        assert [w.returncode for w in workers] == [0] * 4, text

        tables = assert_quick_demo_complete(json.loads(_cli(env, "status", "--json").stdout))
        # Nothing was reserved before its inputs existed: no make found one missing.
        assert all(", 0 not ready" in t for t in text), text
        makes = {line for t in text for line in t.splitlines() if " done in " in line}
        assert len(makes) == sum(t["done"] for t in tables.values()), "every key computed exactly once"
    finally:
        subprocess.run(
            [sys.executable, "-c", "import schemas; schemas.drop_all()"],
            cwd=REPO,
            env=env,
            capture_output=True,
            timeout=300,
        )
