"""A training job cut short resumes from its checkpoint on the next worker, with real worker processes.

The worker's SIGTERM path hands the job back to pending (after a SIGKILL the scheduler does, once the
worker's heartbeat is stale); the next worker to reserve it finds the checkpoint the make saved
(``schemas.checkpoints``) and trains on from there.  The stored weights equal
those of an uninterrupted run, and the checkpoint is gone once the result is in.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from tests.conftest import SCAN, SCAN_KEY
from tests.populate.commands import REPO, child_env, cli, run_cli
from tests.populate.test_workers import wait_for

# 1 layer of 4 channels: about 20 steps a second on one thread; 300 steps, saved every 20.  The
# test must freeze the worker between its first checkpoint and the end of training: with 100 steps a
# test process starved by other work on a 2-core machine once saw the checkpoint only after the
# worker had finished, so the training is longer and the workers run at a lower priority than the test.
ITERATIONS = 300
TINY = dict(core=dict(kind="cnn", layers=1, kernel_sizes=(5,), features=4))
TRAINER = dict(max_iterations=ITERATIONS, eval_every=20, patience=ITERATIONS, batch_size=64)
SCHEDULE = dict(PIPELINE_CHECKPOINT_STEPS="20", PIPELINE_PROGRESS_STEPS="2")


@pytest.fixture(scope="module")
def scan(db):
    """The tiny simulated scan with the statistics training reads."""
    from populate import ingest
    from populate.work import run

    ingest.simulate("tiny", seed=1, scan=SCAN)
    run.populate_all(tables=["Reliability", "Normalization"], progress=False)
    return SCAN_KEY


def start_worker(tmp_path, table: str, *args) -> tuple[subprocess.Popen, object]:
    """A worker on ``table`` alone, on one thread, saving checkpoints on :data:`SCHEDULE`; its log file."""
    n = len(list(tmp_path.glob("worker-*.log")))
    path = tmp_path / f"worker-{n}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "populate", "worker", "--tables", table, "--threads", "1", "--poll", "0.2"]
        + ["--heartbeat", "0.3", *args],
        cwd=REPO,
        env=child_env(**SCHEDULE),
        stdout=open(path, "w"),
        stderr=subprocess.STDOUT,
        preexec_fn=lambda: os.nice(10),
    )
    return process, path


def reference_fit(task: dict):
    """The same training (the task's own configs), uninterrupted, in this process (one thread, as the workers)."""
    from pipeline.models import experiment
    from schemas.models import DatasetConfig, ModelConfig, TrainerConfig, load_scan_tensors

    dataset = DatasetConfig.load(task)
    data = load_scan_tensors(dataset.scan_key, dataset.image_shape)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return experiment.run(ModelConfig.load(task), TrainerConfig.load(task), data, seed=task["seed"], progress=False)
    finally:
        torch.set_num_threads(threads)


def interrupt_and_resume(tmp_path, capsys, table, task: dict, kill=signal.SIGTERM, status: bool = False) -> str:
    """Stop the worker training ``task`` of ``table`` by ``kill`` once it has saved a checkpoint, check that the
    job is pending again (at once after SIGTERM; after SIGKILL once the scheduler finds its worker dead), and
    have a second worker resume and complete it; ``status`` as it ran (if asked)."""
    from schemas.checkpoints import Checkpoint, Progress

    mine = dict(job_table=table.full_table_name)
    first, first_log = start_worker(tmp_path, table.__name__)
    try:
        wait_for(lambda: Checkpoint & mine, timeout=120, what="the first checkpoint")
        first.send_signal(signal.SIGSTOP)  # frozen mid-training: it cannot finish while status looks
        out = ""
        if status:
            code, out, err = run_cli(capsys, "status")
            assert code == 0, err
            assert re.search(r"checkpoint: step \d+ \(\d+ s ago\); a worker that takes the job over", out), out
        first.send_signal(kill)
    finally:
        first.send_signal(signal.SIGCONT)
        first.wait(60)
    if kill == signal.SIGTERM:
        assert first.returncode == 0, first_log.read_text()
        assert "back to pending" in first_log.read_text()
    else:
        assert first.returncode == -kill
        assert [j["status"] for j in (table.jobs & task).to_dicts()] == ["reserved"]
        time.sleep(1.6)  # its heartbeat goes stale
        requeue = cli("scheduler", "--once", "--stale-after", "1.5", "--backoff", "0")
        assert "1 re-queued from dead workers" in requeue.stdout, requeue.stdout + requeue.stderr
    assert not table & task
    assert [j["status"] for j in (table.jobs & task).to_dicts()] == ["pending"]
    saved = (Checkpoint & mine).fetch1("step")
    assert saved > 0

    second, second_log = start_worker(tmp_path, table.__name__, "--idle-exit", "1")
    second.wait(180)
    text = second_log.read_text()
    assert second.returncode == 0, text
    assert f"resuming from the checkpoint at step {saved}" in text, text
    assert "1 done" in text
    assert not (Checkpoint & mine) and not (Progress & mine), "the checkpoint goes with the completed job"
    assert not table.jobs & task
    return out


@pytest.mark.parametrize("kill", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_model_cut_short_resumes_on_the_next_worker_and_equals_an_uninterrupted_run(scan, tmp_path, capsys, kill):
    from schemas.models import TrainedModel, TrainingTask

    seed = 0 if kill == signal.SIGTERM else 1  # one task per test
    dataset = dict(scan=SCAN, image_shape=(18, 32))
    task = TrainingTask.add(model=TINY, dataset=dataset, trainer=TRAINER, seeds=(seed,), name="resume")[0]
    out = interrupt_and_resume(tmp_path, capsys, TrainedModel, task, kill, status=kill == signal.SIGTERM)
    if kill == signal.SIGTERM:
        line = rf"progress: fit: step \d+/{ITERATIONS}, loss [\d.]+, val_correlation [\d.-]+, .* it/s"
        assert re.search(line, out), out

    stored = (TrainedModel & task).fetch1()
    whole = reference_fit(task)
    assert stored["iterations"] == whole.fit.iterations == ITERATIONS
    assert stored["history"] == whole.fit.history
    weights = {name: value.numpy() for name, value in whole.fit.state_dict.items()}
    assert stored["weights"].keys() == weights.keys()
    for name, value in weights.items():
        assert np.array_equal(stored["weights"][name], value), name

    # Every checkpoint saved (4: every 20 steps but the last) is now an orphan for `gc` to collect.
    if kill != signal.SIGTERM:
        return
    code, out, err = run_cli(capsys, "gc", "--limit", "0")
    assert code == 0, err
    assert len([line for line in out.splitlines() if "__checkpoints/" in line]) >= 4, out


CLASSIFIER = dict(width=8, epochs=8, max_steps_per_epoch=6, batch_size=16, pair_batch=4, control="neural", alpha=20.0)
"""48 steps of a regularized classifier (its stimulus pairs have a generator of their own), saved every 20."""


def similarity_and_shapes(model: dict, name: str) -> str:
    """A model-based similarity of the tiny scan's images (an ensemble of ``model``) named
    ``{name}-neural`` and a shapes set ``shapes-{name}``; the similarity's name."""
    from populate import ingest
    from populate.work import run
    from schemas.models import Ensemble
    from schemas.similarity import ImageSet, SimilarityTask

    Ensemble.create(name, [model])
    ImageSet.from_scans(name, [SCAN_KEY])
    config = dict(method="model", block_rows=37, dtype="float32")
    SimilarityTask.add(f"{name}-neural", config, image_set=name, ensembles=[name])
    run.populate_all(tables=["PredictedResponses", "Similarity"], progress=False)
    ingest.shapes_classes(12, 4, 4, name=f"shapes-{name}")
    return f"{name}-neural"


def classifier_weights_equal_an_uninterrupted_run(task: dict) -> None:
    """The stored classifier of ``task`` equals the same make run again here, on one thread, in one go."""
    from schemas.classifiers import TrainedClassifier

    resumed = (TrainedClassifier & task).fetch1()
    (TrainedClassifier & task).delete_quick()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        TrainedClassifier.populate(task)
    finally:
        torch.set_num_threads(threads)
    whole = (TrainedClassifier & task).fetch1()
    assert resumed["steps"] == whole["steps"] == 48
    for column in ("weights", "regularizer"):
        assert resumed[column].keys() == whole[column].keys()
        for name, value in whole[column].items():
            assert np.array_equal(resumed[column][name], value), (column, name)
    assert resumed["clean_accuracy"] == whole["clean_accuracy"]
    assert resumed["similarity_fidelity"] == whole["similarity_fidelity"]


@pytest.fixture(scope="module")
def neural_similarity(trained_models):
    return similarity_and_shapes(trained_models["cnn"], "resume")


def test_a_classifier_cut_short_resumes_and_equals_an_uninterrupted_run(neural_similarity, tmp_path, capsys):
    from schemas.classifiers import ClassifierTask, TrainedClassifier

    task = ClassifierTask.add(CLASSIFIER, "shapes-resume", neural=neural_similarity, name="resume")[0]
    interrupt_and_resume(tmp_path, capsys, TrainedClassifier, task)
    line = r"pipeline.training_log: classifier: step \d+/48, epoch \d, loss [\d.]+, validation_accuracy [\d.]+, .* it/s"
    assert re.search(line, (tmp_path / "worker-0.log").read_text())
    classifier_weights_equal_an_uninterrupted_run(task)


def test_a_worker_refuses_bad_checkpoint_settings_before_reserving_anything(db):
    for name, value in [("PIPELINE_CHECKPOINT_MINUTES", "soon"), ("PIPELINE_PROGRESS_SECONDS", "-1")]:
        out = cli("worker", "--idle-exit", "0", env=child_env(**{name: value}))
        assert out.returncode == 1, out.stdout + out.stderr
        assert f"{name}={value!r}" in out.stderr and out.stderr.count("\n") == 1, out.stderr
