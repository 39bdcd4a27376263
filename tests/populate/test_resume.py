"""A training job cut short by SIGTERM resumes from its checkpoint on the next worker, with real worker processes.

The worker's SIGTERM path hands the job back to pending; the next worker to reserve it finds the
checkpoint the make saved (``schemas.checkpoints``) and trains on from there.  The stored weights equal
those of an uninterrupted run, and the checkpoint is gone once the result is in.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.conftest import SCAN, SCAN_KEY
from tests.populate.commands import REPO, child_env, run_cli
from tests.populate.test_workers import wait_for

# 1 layer of 4 channels: about 20 steps a second on one thread; 160 steps, saved every 20
TINY = dict(core=dict(kind="cnn", layers=1, kernel_sizes=(5,), features=4))
TRAINER = dict(max_iterations=160, eval_every=20, patience=100, batch_size=64)
SCHEDULE = dict(PIPELINE_CHECKPOINT_STEPS="20", PIPELINE_PROGRESS_STEPS="10")


@pytest.fixture(scope="module")
def scan(db):
    """The tiny simulated scan with the statistics training reads."""
    from populate import ingest
    from populate.work import run

    ingest.simulate("tiny", seed=1, scan=SCAN)
    run.populate_all(tables=["Reliability", "Normalization"], progress=False)
    return SCAN_KEY


def start_worker(tmp_path, *args) -> tuple[subprocess.Popen, object]:
    n = len(list(tmp_path.glob("worker-*.log")))
    path = tmp_path / f"worker-{n}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "populate", "worker", "--tables", "TrainedModel", "--threads", "1", "--poll", "0.2"]
        + ["--heartbeat", "0.3", *args],
        cwd=REPO,
        env=child_env(**SCHEDULE),
        stdout=open(path, "w"),
        stderr=subprocess.STDOUT,
    )
    return process, path


def reference_fit(task: dict):
    """The same training, uninterrupted, in this process (one thread, as the workers)."""
    from pipeline.models import experiment
    from pipeline.models.encoder import ModelConfig
    from pipeline.models.training import TrainerConfig
    from schemas.models import DatasetConfig, load_scan_tensors

    dataset = DatasetConfig.load(task)
    data = load_scan_tensors(dataset.scan_key, dataset.image_shape)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return experiment.run(
            ModelConfig.from_dict(TINY), TrainerConfig.from_dict(TRAINER), data, seed=task["seed"], progress=False
        )
    finally:
        torch.set_num_threads(threads)


def test_sigterm_mid_training_hands_back_and_the_next_worker_resumes_from_the_checkpoint(scan, tmp_path, capsys):
    from schemas.checkpoints import Checkpoint, Progress
    from schemas.models import TrainedModel, TrainingTask

    task = TrainingTask.add(model=TINY, dataset=dict(scan=SCAN, image_shape=(18, 32)), trainer=TRAINER, name="resume")[
        0
    ]
    mine = dict(job_table=TrainedModel.full_table_name)
    first, first_log = start_worker(tmp_path)
    try:
        wait_for(lambda: Checkpoint & mine, timeout=120, what="the first checkpoint")
        first.send_signal(signal.SIGSTOP)  # frozen mid-training: it cannot finish while status looks
        code, out, err = run_cli(capsys, "status")
        assert code == 0, err
        assert re.search(r"progress: fit: step \d+/160, loss [\d.]+, val_correlation [\d.-]+, .* it/s", out), out
        assert re.search(r"checkpoint: step \d+ ", out), out
        first.send_signal(signal.SIGTERM)
    finally:
        first.send_signal(signal.SIGCONT)
        first.wait(60)
    assert first.returncode == 0, first_log.read_text()
    assert "back to pending" in first_log.read_text()
    assert not TrainedModel & task
    job = (TrainedModel.jobs & task).to_dicts()
    assert [j["status"] for j in job] == ["pending"]
    saved = (Checkpoint & mine).fetch1("step")
    assert 20 <= saved < 160 and saved % 20 == 0

    second, second_log = start_worker(tmp_path, "--idle-exit", "1")
    second.wait(180)
    text = second_log.read_text()
    assert second.returncode == 0, text
    assert f"resuming from the checkpoint at step {saved}" in text, text
    assert "1 done" in text
    assert not (Checkpoint & mine) and not (Progress & mine), "the checkpoint goes with the completed job"
    assert not TrainedModel.jobs & task

    stored = (TrainedModel & task).fetch1()
    whole = reference_fit(task)
    assert stored["iterations"] == whole.fit.iterations == 160
    assert stored["history"] == whole.fit.history
    weights = {name: value.numpy() for name, value in whole.fit.state_dict.items()}
    assert stored["weights"].keys() == weights.keys()
    for name, value in weights.items():
        assert np.array_equal(stored["weights"][name], value), name

    # Every checkpoint saved (7: every 20 steps but the last) is now an orphan for `gc` to collect.
    code, out, err = run_cli(capsys, "gc", "--limit", "0")
    assert code == 0, err
    assert len([line for line in out.splitlines() if "__checkpoints/" in line]) >= 7, out
