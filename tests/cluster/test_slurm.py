"""Populate workers started by SLURM on this checkout's one-node cluster (``local_slurm.sh``).

Each test submits ``populate/deploy/slurm_worker.sbatch`` through ``slurm_submit.sh`` as the README
does (``--gres= --export=ALL,WORKER_DEVICE=cpu``), with this run's database, prefix and store in the
exported environment, this interpreter as ``PYTHON`` and this checkout on ``PYTHONPATH``.  The
workers serve the quick demo's whole task list, the worker test tables (``tests.worker_tables``),
``TrainedModel`` or ``TrainedClassifier``; the tests read the job tables, the workers' SLURM logs and
SLURM's own job states.

Each test's pytest timeout is the sum of its waits plus :data:`SETTLE_S`, above the suite's 300 s: a
machine too slow for a wait fails that test (the wait's message names it) instead of the thread
timeout ending the whole run.

The times from ``sbatch`` to the first job reserved and from ``scancel`` to the job back in pending
are written to ``.local/slurm_timings.json``, or to the file ``SLURM_TIMINGS`` names: the committed
``benchmarks/results/slurm_timings.json`` (quoted by docs/running_at_scale.md) comes from
``SLURM_TIMINGS=benchmarks/results/slurm_timings.json python -m pytest tests/cluster``, so that a
test run leaves the tracked file alone.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
from datetime import datetime, timezone

import numpy as np
import pytest

from tests.conftest import REPO, tiny_model
from tests.populate.commands import assert_quick_demo_complete, child_env
from tests.populate.test_workers import job, makes, rows_of, wait_for

pytestmark = pytest.mark.cluster

SUBMIT = REPO / "populate" / "deploy" / "slurm_submit.sh"
TIMINGS = REPO / os.environ.get("SLURM_TIMINGS", ".local/slurm_timings.json")
WORKTEST = ("--schema-module", "tests.worker_tables", "--poll", "0.2", "--heartbeat", "0.3")
# Workers stop within this after SIGTERM: below the local cluster's KillWait (15 s), as the sbatch file asks.
STOP_TIMEOUT = 10
START_S = 180  # a worker's start under SLURM on a busy two-core machine: job launch, imports, connection
FINISH_S = 600  # an array job of these tests to its end
# What a test does beyond its waits: module fixtures (a scan imported, models trained), reference
# runs in the test process, child commands.
SETTLE_S = 300
RESERVED_S = 30  # a make logged to its job row seen reserved
LIMITED_S = 240  # a --time=2 job to its end (SLURM would kill it at 120 s)
CHECKPOINT_S = 120  # a started classifier training to its first checkpoint


def limit(*waits: float) -> int:
    """A test's pytest timeout: the sum of its waits, plus :data:`SETTLE_S`."""
    return int(sum(waits) + SETTLE_S)


# ---------------------------------------------------------------------------------------------
# SLURM helpers


def submit(slurm, tmp_path, *options, worker_args, idle_exit=3) -> str:
    """``slurm_submit.sh`` with one CPU, 1 GiB and 10 minutes per task, then ``options``; the array job id.

    Later options win over earlier ones (sbatch reads them in order)."""
    env = child_env(
        **slurm,
        PYTHON=sys.executable,
        WORKER_IDLE_EXIT=str(idle_exit),
        WORKER_STOP_TIMEOUT=str(STOP_TIMEOUT),
        WORKER_ARGS=" ".join(worker_args),
    )
    out = subprocess.run(
        [str(SUBMIT), "--parsable", "--gres=", "--export=ALL,WORKER_DEVICE=cpu", "--cpus-per-task=1", "--mem=1G"]
        + ["--time=10", f"--output={tmp_path}/worker-%A_%a.log", *options],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().split(";")[0]


def slurm_command(slurm, *args) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=dict(os.environ, **slurm), capture_output=True, text=True, timeout=60)


# SLURM's end states (squeue(1), JOB STATE CODES); a task in any other is not finished.
ENDED = {
    "COMPLETED",
    "CANCELLED",
    "FAILED",
    "TIMEOUT",
    "NODE_FAIL",
    "PREEMPTED",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
}


def unfinished(slurm, job_id: str) -> list[str]:
    """The tasks of array job ``job_id`` not in an end state, as "<task> <state>"."""
    out = slurm_command(slurm, "squeue", "-h", "-j", job_id, "-t", "all", "-o", "%i %T")
    assert out.returncode == 0, out.stderr
    return [line for line in out.stdout.splitlines() if line.split()[-1] not in ENDED]


def wait_finished(slurm, job_id: str, timeout: float) -> None:
    wait_for(lambda: not unfinished(slurm, job_id), timeout=timeout, what=f"SLURM job {job_id} to finish")


def job_field(slurm, task: str, field: str) -> str:
    """One field of ``scontrol show job`` for an array task (``<job>_<index>``)."""
    out = slurm_command(slurm, "scontrol", "-o", "show", "job", task)
    assert out.returncode == 0, out.stderr
    return re.search(rf"\b{field}=(\S+)", out.stdout).group(1)


def job_state(slurm, task: str) -> str:
    """SLURM's state of one array task, e.g. COMPLETED, CANCELLED, TIMEOUT."""
    return job_field(slurm, task, "JobState")


def scancel(slurm, *args) -> float:
    """Run scancel; return the monotonic time it returned."""
    out = slurm_command(slurm, "scancel", *args)
    assert out.returncode == 0, out.stderr
    return time.monotonic()


def worker_log(tmp_path, job_id: str, index: int) -> str:
    path = tmp_path / f"worker-{job_id}_{index}.log"
    return path.read_text() if path.exists() else ""


def record_timing(slurm, name: str, seconds: float, what: str) -> None:
    """Merge one measured time into :data:`TIMINGS`."""
    data = json.loads(TIMINGS.read_text()) if TIMINGS.exists() else {}
    version = slurm_command(slurm, "sbatch", "--version").stdout.strip()
    data["measured_by"] = "SLURM_TIMINGS=benchmarks/results/slurm_timings.json python -m pytest tests/cluster"
    data["machine"] = f"{os.cpu_count()} CPUs, {platform.machine()}; {version}; local_slurm.sh's one-node cluster"
    data[name] = dict(
        seconds=round(seconds, 2), what=what, date=datetime.now(timezone.utc).isoformat(timespec="seconds")
    )
    TIMINGS.parent.mkdir(parents=True, exist_ok=True)
    TIMINGS.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def holding(slurm, job_id: str, table, item: int, tmp_path) -> dict:
    """Wait until task 0 of ``job_id`` holds the job of ``item`` and its make has started; the job row."""

    def started() -> bool:
        if not unfinished(slurm, job_id):
            raise AssertionError(f"SLURM job {job_id} ended before its make started: {worker_log(tmp_path, job_id, 0)}")
        return (table.__name__, item) in {(t, i) for t, i, _ in makes(tmp_path)}

    wait_for(started, timeout=START_S, what=f"{table.__name__} make")
    return wait_for(
        lambda: (j := job(table, item)) and j["status"] == "reserved" and j, timeout=RESERVED_S, what="reservation"
    )


# ---------------------------------------------------------------------------------------------
# the cluster itself


def test_a_second_start_while_the_cluster_runs_starts_nothing(slurm):
    from tests.cluster.conftest import DAEMONS, STATE, daemon_pids

    before = daemon_pids()
    out = subprocess.run(
        [str(REPO / "populate" / "deploy" / "local_slurm.sh"), "start"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "already running" in out.stderr and "nothing started" in out.stderr, out.stderr
    assert out.stdout.strip() == f"export SLURM_CONF={STATE / 'slurm.conf'}"
    assert daemon_pids() == before and set(before) == set(DAEMONS)
    node = slurm_command(slurm, "sinfo", "-h", "-o", "%D %t %c")
    assert node.stdout.split() == ["1", "idle", str(os.cpu_count())], node.stdout


# ---------------------------------------------------------------------------------------------
# four workers drain the quick demo's task list

DEMO_IDLE_S = 20  # a worker waits this long for upstream work of the others before it leaves


@pytest.fixture
def quick_demo(db):
    """The quick demo's data and every task of every stage (``demo.declare_tasks(quick=True)``), nothing
    computed, under a prefix of its own (``{run prefix}_demo``); this process's tables are bound to it
    until the test ends.  Its store is this run's (``PIPELINE_STORE_DIR``), as the workers'."""
    import schemas
    from populate.cli import demo
    from tests.conftest import PREFIX

    prefix = f"{PREFIX}_demo"
    schemas.declare_all(prefix)
    try:
        demo.declare_tasks(quick=True)
        yield prefix
    finally:
        schemas.drop_all(prefix)
        schemas.activate(PREFIX)


@pytest.mark.timeout(limit(START_S, FINISH_S))
def test_an_array_of_four_workers_drains_the_quick_demo(slurm, quick_demo, tmp_path):
    from populate.work.jobs import queue, select_tables
    from populate.work.status import status

    tables = select_tables()

    def started() -> bool:
        return any(queue(t) & "status='reserved'" or t() for t in tables)

    submitted = time.monotonic()
    env = {**slurm, "PIPELINE_PREFIX": quick_demo}
    minutes = f"--time={FINISH_S // 60 + 5}"  # SLURM ends the tasks only after the wait below has given up
    job_id = submit(env, tmp_path, "--array=0-3", minutes, worker_args=("--poll", "1"), idle_exit=DEMO_IDLE_S)
    wait_for(started, timeout=START_S, what="the first job reserved")
    record_timing(
        slurm,
        "sbatch_to_first_reserved",
        time.monotonic() - submitted,
        "slurm_submit.sh --array=0-3 to the first job of the quick demo's task list reserved (or its row in), "
        "polled every 0.1 s",
    )
    wait_finished(slurm, job_id, timeout=FINISH_S)
    submitted_at, started_at = (
        datetime.fromisoformat(job_field(slurm, f"{job_id}_0", f)) for f in ("SubmitTime", "StartTime")
    )
    record_timing(
        slurm,
        "sbatch_to_task_start",
        (started_at - submitted_at).total_seconds(),
        "SLURM's part: SubmitTime to StartTime of array task 0 (scontrol show job, whole seconds)",
    )

    logs = [worker_log(tmp_path, job_id, i) for i in range(4)]
    assert [job_state(slurm, f"{job_id}_{i}") for i in range(4)] == ["COMPLETED"] * 4, logs
    for text in logs:
        pattern = rf"exits \(idle for {DEMO_IDLE_S} s\): \d+ done, 0 failed, 0 handed back, 0 not ready"
        assert re.search(pattern, text), text
    computed = [len(re.findall(r" done in [\d.]+ s", text)) for text in logs]
    assert sum(n > 0 for n in computed) > 1, f"the work should be shared between the array's tasks: {computed}"

    rows = assert_quick_demo_complete(status(tables))
    assert sum(computed) == sum(row["done"] for row in rows.values()), "every key computed exactly once"
    print(f"quick demo drained by four SLURM workers: {sum(computed)} makes, {computed} per task")


# ---------------------------------------------------------------------------------------------
# scancel mid-training

# Long enough to be stopped mid-training on a busy machine (patience never ends it early).
LONG_TRAINER = dict(max_iterations=160, eval_every=40, patience=100, batch_size=64)
TRAIN_SCAN = "5-1-1"


@pytest.fixture(scope="module")
def training(db):
    """A CNN training task on a tiny scan of its own, its inputs computed; the task key."""
    from populate import ingest
    from populate.work import run
    from schemas.models import TrainingTask

    ingest.simulate("tiny", seed=5, scan=TRAIN_SCAN)
    run.populate_all(tables=["Reliability", "Normalization"], progress=False)
    return TrainingTask.add(
        model=tiny_model("cnn"),
        dataset=dict(scan=TRAIN_SCAN, image_shape=(18, 32)),
        trainer=LONG_TRAINER,
        seeds=(0,),
        name="cluster-cnn",
    )[0]


def training_job(key) -> dict | None:
    from schemas.models import TrainedModel

    rows = TrainedModel.jobs.restrict(key, semantic_check=False).to_dicts()
    return rows[0] if rows else None


def undisturbed(key) -> dict:
    """The training of ``key`` run here in one go, on one thread as the one-CPU SLURM task: its fitted values."""
    import torch

    from schemas.models import TrainedModel

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        table = TrainedModel()
        fitted, _ = table.make_compute(key, *table.make_fetch(key))
    finally:
        torch.set_num_threads(threads)
    return fitted


@pytest.mark.timeout(limit(START_S, 2 * STOP_TIMEOUT, FINISH_S))
def test_scancel_hands_the_training_back_at_once_and_a_later_task_completes_it(slurm, training, tmp_path):
    """scancel --batch --signal=TERM signals the batch shell alone, as a time limit's B:TERM does: the
    worker receives it only because the script execs it.  (A plain scancel signals every process of
    the job and would reach a worker the shell merely started.)  %1: task 1 starts once task 0 ended."""
    from schemas.models import TrainedModel

    worker_args = ("--tables", "TrainedModel", "--poll", "0.5", "--heartbeat", "0.5")
    job_id = submit(slurm, tmp_path, "--array=0-1%1", worker_args=worker_args)
    wait_for(
        lambda: (j := training_job(training)) and j["status"] == "reserved",
        timeout=START_S,
        what="the training reserved",
    )
    time.sleep(2)  # into the training's iterations
    assert not TrainedModel & training, "the training ended before it could be interrupted"
    cancelled = scancel(slurm, "--batch", "--signal=TERM", f"{job_id}_0")
    wait_for(
        lambda: (j := training_job(training)) and j["status"] == "pending",
        timeout=2 * STOP_TIMEOUT,
        what="the job back in pending",
    )
    record_timing(
        slurm,
        "scancel_to_pending",
        time.monotonic() - cancelled,
        "scancel --batch --signal=TERM of the task training a model to its job back in pending, polled every 0.1 s",
    )
    assert not TrainedModel & training

    wait_finished(slurm, job_id, timeout=FINISH_S)
    first, later = worker_log(tmp_path, job_id, 0), worker_log(tmp_path, job_id, 1)
    assert "exits (SIGTERM): 0 done, 0 failed, 1 handed back" in first, first
    assert re.search(r"TrainedModel \{.*\} done in", later) and "1 done, 0 failed, 0 handed back" in later, later
    assert training_job(training) is None

    stored = (TrainedModel & training).fetch1()
    reference = undisturbed(training)
    assert stored["iterations"] == reference["iterations"] == LONG_TRAINER["max_iterations"]
    assert stored["val_correlation"] == pytest.approx(reference["val_correlation"], rel=1e-5)
    assert sorted(stored["weights"]) == sorted(reference["weights"])
    for name, array in reference["weights"].items():
        np.testing.assert_allclose(stored["weights"][name], array, rtol=1e-5, atol=1e-7, err_msg=name)


# ---------------------------------------------------------------------------------------------
# the time limit, and SIGKILL


@pytest.mark.timeout(limit(START_S, RESERVED_S, LIMITED_S))
def test_a_time_limit_signal_hands_the_job_back_before_slurm_kills_the_worker(slurm, fresh, tmp_path):
    """--time=2 with --signal=B:TERM@30.  slurmctld checks time limits every 30 s and sends the signal
    at the first check within 30 + 30 s of the limit: 60-90 s into this job, leaving a busy machine a
    minute to start the worker (with --time=1 and @30 it came at once, before the worker had
    started).  SLURM would kill the job at 120 s."""
    wt = fresh
    wt.Item.insert1(dict(item=1, value=2.0, seconds=600))
    options = ("--array=0", "--time=2", "--signal=B:TERM@30")
    job_id = submit(slurm, tmp_path, *options, worker_args=(*WORKTEST, "--tables", "Square"))
    holding(slurm, job_id, wt.Square, 1, tmp_path)
    wait_finished(slurm, job_id, timeout=LIMITED_S)

    text = worker_log(tmp_path, job_id, 0)
    assert "exits (SIGTERM): 0 done, 0 failed, 1 handed back" in text, text
    assert "TIME LIMIT" not in text, "SLURM ended the job at its limit: the worker did not stop first"
    assert job_state(slurm, f"{job_id}_0") == "COMPLETED", text
    assert job(wt.Square, 1)["status"] == "pending" and rows_of(wt.Square, 1) == (0, 0)


@pytest.mark.timeout(limit(START_S, RESERVED_S, START_S, 60, 60))
def test_a_worker_killed_by_slurm_is_requeued_by_the_scheduler_after_the_stale_timeout(slurm, fresh, tmp_path):
    wt = fresh
    wt.Item.insert1(dict(item=1, value=3.0, seconds=600))
    job_id = submit(slurm, tmp_path, "--array=0", worker_args=(*WORKTEST, "--tables", "Square"))
    reserved = holding(slurm, job_id, wt.Square, 1, tmp_path)
    with open(tmp_path / "scheduler.log", "w") as log:
        scheduler = subprocess.Popen(
            [sys.executable, "-m", "populate", "scheduler", "--stale-after", "3", "--interval", "0.5"]
            + ["--backoff", "0", *WORKTEST[:2]],
            cwd=REPO,
            env=child_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        # The scheduler's first pass (it leaves the live worker's job alone), so that the time below is its re-queue's.
        wait_for(
            lambda: "scheduler pass" in (tmp_path / "scheduler.log").read_text(), timeout=START_S, what="scheduler"
        )
        # --batch: SIGKILL to the batch step, the worker.  A plain `scancel --signal=KILL` is SLURM's
        # ordinary cancel (SIGTERM, then SIGKILL after KillWait), which the worker survives long enough
        # to hand its job back.
        killed = scancel(slurm, "--batch", "--signal=KILL", f"{job_id}_0")
        wait_for(lambda: job(wt.Square, 1)["status"] == "pending", timeout=60, what="the scheduler's re-queue")
        record_timing(
            slurm,
            "sigkill_to_pending",
            time.monotonic() - killed,
            "scancel --batch --signal=KILL to the job back in pending by `populate scheduler --stale-after 3`",
        )
        wait_finished(slurm, job_id, timeout=60)
    finally:
        scheduler.terminate()
        scheduler.wait(30)
    assert job_state(slurm, f"{job_id}_0") == "FAILED"
    text = worker_log(tmp_path, job_id, 0)
    assert " exits (" not in text, "a worker killed by SIGKILL cannot hand its job back: " + text
    from schemas import operations

    retry = (operations.JobRetry & dict(job_table=wt.Square.full_table_name)).to_dicts()
    assert [r["retries"] for r in retry] == [1] and str(reserved["pid"]) in retry[0]["last_reason"], retry
    assert rows_of(wt.Square, 1) == (0, 0)
    assert f"worker {platform.node()} pid {reserved['pid']} died" in (tmp_path / "scheduler.log").read_text()


# ---------------------------------------------------------------------------------------------
# a classifier training cut short by scancel resumes from its checkpoint on the next task


@pytest.fixture(scope="module")
def classifier_task(trained_models):
    """A regularized classifier task of 48 steps (``tests.populate.test_resume.CLASSIFIER``) on a
    model-based similarity and a shapes set of its own; the task key."""
    from schemas.classifiers import ClassifierTask
    from tests.populate.test_resume import CLASSIFIER, similarity_and_shapes

    neural = similarity_and_shapes(trained_models["cnn"], "cluster")
    return ClassifierTask.add(CLASSIFIER, "shapes-cluster", neural=neural, name="cluster-resume")[0]


@pytest.mark.timeout(limit(START_S + CHECKPOINT_S, 2 * STOP_TIMEOUT, FINISH_S))
def test_a_classifier_cut_by_scancel_at_half_resumes_from_its_checkpoint_on_the_next_task(
    slurm, classifier_task, tmp_path
):
    """Task 0 saves a checkpoint every 20 of the 48 steps.  Once the first is in, the worker is frozen
    (SIGSTOP to the batch shell, which the worker is), cancelled with SIGTERM as in the scancel test
    above, and let go: it hands the job back.  Task 1 (%1: it starts once task 0 ended) resumes from
    that step, and the stored weights equal an uninterrupted run's."""
    from schemas.checkpoints import Checkpoint, Progress
    from schemas.classifiers import TrainedClassifier
    from tests.populate.test_resume import SCHEDULE, classifier_weights_equal_an_uninterrupted_run

    task = classifier_task
    mine = dict(job_table=TrainedClassifier.full_table_name)
    worker_args = ("--tables", "TrainedClassifier", "--poll", "0.5", "--heartbeat", "0.5")
    job_id = submit({**slurm, **SCHEDULE}, tmp_path, "--array=0-1%1", worker_args=worker_args)
    wait_for(lambda: Checkpoint & mine, timeout=START_S + CHECKPOINT_S, what="the first checkpoint")
    scancel(slurm, "--batch", "--signal=STOP", f"{job_id}_0")  # frozen: it cannot finish meanwhile
    saved = (Checkpoint & mine).fetch1("step")
    assert 0 < saved < 48 and not TrainedClassifier & task
    scancel(slurm, "--batch", "--signal=TERM", f"{job_id}_0")
    scancel(slurm, "--batch", "--signal=CONT", f"{job_id}_0")
    wait_for(
        lambda: [j["status"] for j in (TrainedClassifier.jobs & task).to_dicts()] == ["pending"],
        timeout=2 * STOP_TIMEOUT,
        what="the classifier's job back in pending",
    )
    wait_finished(slurm, job_id, timeout=FINISH_S)
    first, later = worker_log(tmp_path, job_id, 0), worker_log(tmp_path, job_id, 1)
    assert "exits (SIGTERM): 0 done, 0 failed, 1 handed back" in first, first
    assert f"resuming from the checkpoint at step {saved}" in later, later
    assert "1 done, 0 failed, 0 handed back" in later, later
    assert not (Checkpoint & mine) and not (Progress & mine), "the checkpoint goes with the completed job"
    classifier_weights_equal_an_uninterrupted_run(task)
