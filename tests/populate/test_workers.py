"""Distributed populate workers with real processes against a real server.

Every worker is ``python -m populate worker --schema-module tests.worker_tables`` in its own
process; the tests kill, stop and disconnect them and check the tables and job queues afterwards.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from populate.cli.main import main
from tests.populate.commands import REPO, child_env, cli, run_cli

MODULE = ("--schema-module", "tests.worker_tables")
FAST = ("--poll", "0.2", "--heartbeat", "0.3")


# ---------------------------------------------------------------------------------------------
# fixtures and helpers


@pytest.fixture(scope="module")
def wt(db):
    """The test schema (and the operations schema) declared under this run's prefix."""
    import datajoint as dj

    from schemas import db as settings
    from tests.worker_setup import declare

    module = declare()
    yield module
    import schemas

    for stage in ("worktest",) if "operations" in schemas.STAGES else ("worktest", "operations"):
        name = settings.schema_name(stage)
        if name in dj.list_schemas():
            dj.Schema(name, create_schema=False, create_tables=False).drop(prompt=False)


@pytest.fixture
def fresh(wt, tmp_path, monkeypatch):
    """Empty tables and queues; makes are logged to ``tmp_path/makes.log``."""
    from tests.worker_setup import clear

    clear(wt)
    monkeypatch.setenv("WORKER_TABLES_LOG", str(tmp_path))
    return wt


def start_worker(tmp_path, *args) -> subprocess.Popen:
    n = len(list(tmp_path.glob("worker-*.log")))
    out = open(tmp_path / f"worker-{n}.log", "w")
    return subprocess.Popen(
        [sys.executable, "-m", "populate", "worker", *MODULE, *FAST, *args],
        cwd=REPO,
        env=child_env(),
        stdout=out,
        stderr=subprocess.STDOUT,
    )


def makes(tmp_path) -> list[tuple[str, int, int]]:
    log = tmp_path / "makes.log"
    if not log.exists():
        return []
    return [(t, int(i), int(p)) for t, i, p in (line.split() for line in log.read_text().splitlines())]


def wait_for(condition, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def job(table, item) -> dict | None:
    rows = (table.jobs & dict(item=item)).to_dicts()
    return rows[0] if rows else None


def running(tmp_path, table, item) -> dict:
    """Wait until a worker holds the job of ``item`` and its make has started; return the job row."""
    wait_for(lambda: (table.__name__, item) in {(t, i) for t, i, _ in makes(tmp_path)}, what=f"{table.__name__} make")
    return wait_for(lambda: (j := job(table, item)) and j["status"] == "reserved" and j, what="reservation")


def rows_of(table, item) -> tuple[int, int]:
    """(master rows, part rows) of one key: (1, PIECES) when complete, (0, 0) when absent."""
    return len(table & dict(item=item)), len(table.Piece & dict(item=item))


def reap(*processes, timeout=30):
    for process in processes:
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            raise


# ---------------------------------------------------------------------------------------------
# tests


def test_four_workers_compute_every_key_exactly_once(fresh, tmp_path):
    wt = fresh
    values = np.random.default_rng(0).normal(size=20)
    wt.Item.insert(dict(item=i, value=float(v), seconds=0.05) for i, v in enumerate(values))
    workers = [start_worker(tmp_path, "--idle-exit", "2") for _ in range(4)]
    reap(*workers, timeout=90)
    assert [w.returncode for w in workers] == [0] * 4, [p.read_text() for p in tmp_path.glob("worker-*.log")]

    log = makes(tmp_path)
    for table in ("Square", "Cube"):
        items = sorted(i for t, i, _ in log if t == table)
        assert items == list(range(len(values))), f"{table}: each key must be computed exactly once"
    assert len({pid for *_, pid in log}) > 1, "the work should be shared between processes"

    squares = dict(zip(*wt.Square().to_arrays("item", "square")))
    cubes = dict(zip(*wt.Cube().to_arrays("item", "cube")))
    np.testing.assert_allclose([squares[i] for i in range(len(values))], values**2)
    np.testing.assert_allclose([cubes[i] for i in range(len(values))], values**3)
    assert len(wt.Square.Piece()) == len(wt.Cube.Piece()) == len(values) * wt.PIECES
    np.testing.assert_allclose(wt.Square.Piece().to_arrays("share").sum(), (values**2).sum())
    assert len(wt.Square.jobs) == len(wt.Cube.jobs) == 0, "completed jobs leave the queue"


def test_killed_worker_leaves_no_partial_rows_and_its_job_is_requeued(fresh, tmp_path):
    wt = fresh
    wt.Item.insert1(dict(item=1, value=3.0, seconds=60))
    worker = start_worker(tmp_path, "--tables", "Square")
    reserved = running(tmp_path, wt.Square, 1)
    time.sleep(0.5)  # the make has written its master row inside its transaction

    # A live worker keeps its job, however old its reservation.
    out = cli("scheduler", "--once", "--stale-after", "1.5", "--backoff", "0", *MODULE)
    assert out.returncode == 0, out.stderr
    assert "0 re-queued from dead workers" in out.stdout
    assert job(wt.Square, 1)["status"] == "reserved"

    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    assert rows_of(wt.Square, 1) == (0, 0), "the interrupted transaction must leave nothing"
    assert job(wt.Square, 1)["status"] == "reserved"
    time.sleep(1.6)  # its heartbeat goes stale

    out = cli("scheduler", "--once", "--stale-after", "1.5", "--backoff", "0", *MODULE)
    assert out.returncode == 0, out.stderr
    assert "1 re-queued from dead workers" in out.stdout, out.stdout + out.stderr
    requeued = job(wt.Square, 1)
    assert requeued["status"] == "pending" and requeued["connection_id"] == 0
    from schemas import operations

    retry = (operations.JobRetry & dict(job_table=wt.Square.full_table_name)).to_dicts()
    assert [r["retries"] for r in retry] == [1] and str(reserved["pid"]) in retry[0]["last_reason"]

    wt.Item.update1(dict(item=1, seconds=0))
    other = start_worker(tmp_path, "--tables", "Square", "--idle-exit", "1")
    reap(other)
    assert rows_of(wt.Square, 1) == (1, wt.PIECES)
    assert (wt.Square & dict(item=1)).fetch1("square") == 9.0
    assert job(wt.Square, 1) is None
    assert [pid for t, i, pid in makes(tmp_path) if t == "Square"] == [reserved["pid"], other.pid]


def _reserving_ahead(tmp_path, wt, n: int = 300) -> subprocess.Popen:
    """A worker on ``n`` fast Square makes, caught while it holds several reservations."""
    wt.Item.insert(dict(item=i, value=float(i), seconds=0.005) for i in range(n))
    worker = start_worker(tmp_path, "--tables", "Square")
    wait_for(lambda: len(wt.Square.jobs & "status='reserved'") > 1, what="jobs reserved ahead")
    return worker


def _complete_once(wt, tmp_path, n: int) -> None:
    """Every key has its full result, no job is left, and at most one make ran twice (the interrupted one)."""
    assert len(wt.Square()) == n and len(wt.Square.Piece()) == n * wt.PIECES
    np.testing.assert_allclose(sorted(wt.Square().to_arrays("square")), np.arange(n, dtype=float) ** 2)
    assert len(wt.Square.jobs) == 0
    counts = np.bincount([i for t, i, _ in makes(tmp_path) if t == "Square"], minlength=n)
    assert counts.min() == 1 and (counts > 1).sum() <= 1 and counts.max() <= 2, np.flatnonzero(counts != 1)


def test_jobs_reserved_ahead_by_a_killed_worker_are_requeued_and_done_once(fresh, tmp_path):
    wt, n = fresh, 300
    worker = _reserving_ahead(tmp_path, wt, n)
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    stranded = len(wt.Square.jobs & "status='reserved'")
    assert stranded >= 1
    time.sleep(1.6)  # its heartbeat goes stale
    out = cli("scheduler", "--once", "--stale-after", "1.5", "--backoff", "0", *MODULE)
    # Reserved ahead and not started: re-queued; computed but not yet marked complete: settled.
    requeued = int(re.search(r"(\d+) re-queued from dead workers", out.stdout)[1])
    settled = int(re.search(r"(\d+) found already done", out.stdout)[1])
    assert requeued >= 1 and requeued + settled == stranded, out.stdout + out.stderr
    reap(start_worker(tmp_path, "--tables", "Square", "--idle-exit", "1"), timeout=60)
    _complete_once(wt, tmp_path, n)


def test_sigterm_hands_jobs_reserved_ahead_back(fresh, tmp_path):
    wt, n = fresh, 300
    worker = _reserving_ahead(tmp_path, wt, n)
    worker.send_signal(signal.SIGTERM)
    worker.wait(10)
    assert worker.returncode == 0
    assert len(wt.Square.jobs & "status='reserved'") == 0, "nothing stays reserved"
    done, pending = len(wt.Square()), len(wt.Square.jobs & "status='pending'")
    assert done + pending == n and pending > 0, (done, pending)
    reap(start_worker(tmp_path, "--tables", "Square", "--idle-exit", "1"), timeout=60)
    _complete_once(wt, tmp_path, n)


@pytest.mark.parametrize("table", ["Square", "Cube"], ids=["in-transaction", "tripartite-compute"])
def test_sigterm_hands_the_job_back_within_the_bound(fresh, tmp_path, table):
    wt = fresh
    target = getattr(wt, table)
    wt.Item.insert1(dict(item=2, value=2.0, seconds=60))
    worker = start_worker(tmp_path, "--tables", table, "--stop-timeout", "5")
    running(tmp_path, target, 2)
    time.sleep(0.3)
    sent = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    worker.wait(10)
    elapsed = time.monotonic() - sent
    log = (tmp_path / "worker-0.log").read_text()
    assert worker.returncode == 0, log
    assert elapsed < 5, f"the worker took {elapsed:.1f} s to stop"
    handed = job(target, 2)
    assert handed["status"] == "pending" and handed["error_message"] == "", handed
    assert rows_of(target, 2) == (0, 0)
    assert "1 handed back" in log
    from schemas import operations

    assert len(operations.Worker()) == 0, "a stopped worker removes its heartbeat"


def test_failed_make_shows_in_status_and_retry_runs_it_again(fresh, tmp_path, capsys):
    wt = fresh
    wt.Item.insert([dict(item=i, value=float(i), fail=i == 4) for i in range(6)])
    reap(start_worker(tmp_path, "--tables", "Square", "--idle-exit", "1"))
    assert len(wt.Square()) == 5 and job(wt.Square, 4)["status"] == "error"

    code, out, err = run_cli(capsys, "status", *MODULE)
    assert code == 0, err
    assert "ValueError: item 4 is marked to fail" in out
    assert "Traceback (most recent call last)" in out and "worker_tables.py" in out
    code, out, err = run_cli(capsys, "status", "--json", *MODULE)
    report = json.loads(out)
    square = next(t for t in report["tables"] if t["table"] == "Square")
    assert (square["keys"], square["done"], square["error"]) == (6, 5, 1)
    [error] = [e for e in report["errors"] if e["table"] == "Square"]
    assert error["key"] == {"item": 4} and "_check" in error["traceback"]

    # The scheduler leaves real errors alone.
    out = cli("scheduler", "--once", "--backoff", "0", *MODULE)
    assert out.returncode == 0 and job(wt.Square, 4)["status"] == "error"

    wt.Item.update1(dict(item=4, fail=False))
    code, out, err = run_cli(capsys, "retry", "--table", "Square", "--key", '{"item": 4}', *MODULE)
    assert code == 0, err
    assert "Square 1" in out and job(wt.Square, 4)["status"] == "pending"
    reap(start_worker(tmp_path, "--tables", "Square", "--idle-exit", "1"))
    assert rows_of(wt.Square, 4) == (1, wt.PIECES)
    assert [i for t, i, _ in makes(tmp_path) if t == "Square"].count(4) == 2


def _kill_connection(connection_id: int) -> None:
    import datajoint as dj

    connection = dj.conn()
    if connection.adapter.backend == "postgresql":
        assert connection.query("SELECT pg_terminate_backend(%s)", args=(connection_id,)).fetchone()[0]
    else:
        connection.query(f"KILL CONNECTION {int(connection_id)}")


def test_connection_killed_during_tripartite_compute_still_lands(fresh, tmp_path):
    wt = fresh
    wt.Item.insert1(dict(item=5, value=1.5, seconds=2))
    worker = start_worker(tmp_path, "--tables", "Cube", "--idle-exit", "1")
    reserved = running(tmp_path, wt.Cube, 5)
    _kill_connection(reserved["connection_id"])
    reap(worker)
    assert worker.returncode == 0
    assert rows_of(wt.Cube, 5) == (1, wt.PIECES)
    assert (wt.Cube & dict(item=5)).fetch1("cube") == 1.5**3
    assert job(wt.Cube, 5) is None, "the job is complete"


def test_connection_killed_inside_a_transaction_is_requeued_not_half_written(fresh, tmp_path):
    wt = fresh
    wt.Item.insert1(dict(item=6, value=2.5, seconds=1.5))
    worker = start_worker(tmp_path, "--tables", "Square", "--idle-exit", "1")
    reserved = running(tmp_path, wt.Square, 6)
    time.sleep(0.3)
    _kill_connection(reserved["connection_id"])
    reap(worker)
    assert rows_of(wt.Square, 6) == (0, 0), "never a half-written entry"
    failed = job(wt.Square, 6)
    assert failed["status"] == "error" and "LostConnectionError" in failed["error_message"], failed

    out = cli("scheduler", "--once", "--backoff", "0", *MODULE)
    assert "1 transient errors re-queued" in out.stdout, out.stdout + out.stderr
    assert job(wt.Square, 6)["status"] == "pending"
    reap(start_worker(tmp_path, "--tables", "Square", "--idle-exit", "1"))
    assert rows_of(wt.Square, 6) == (1, wt.PIECES)


def test_bad_input_gives_a_clear_message_and_a_non_zero_exit(wt, capsys):
    cases = [
        (("worker", "--tables", "Nope", *MODULE), 1, "unknown table(s) Nope"),
        (("worker", "--device", "gpu", *MODULE), 2, "not a device"),
        (("worker", "--max-jobs", "0", *MODULE), 2, "must be positive"),
        (("worker", "--schema-module", "tests.no_such_module"), 1, "cannot import"),
        (("scheduler", "--stale-after", "60", "--lost-after", "5", *MODULE), 1, "--lost-after"),
        (("retry", "--key", "{item: 1", *MODULE), 1, "not valid JSON"),
        (("retry", "--table", "Square", "--key", '{"scan": 1}', *MODULE), 1, "not in the primary key"),
        (("ignore", "--table", "Square", "--key", '{"item": 999}', *MODULE), 1, "no key matching"),
    ]
    import torch

    if not torch.cuda.is_available():
        cases.append((("worker", "--device", "cuda:0", "--max-jobs", "1", *MODULE), 1, "CUDA is not available"))
    for argv, expected, message in cases:
        code = _exit_code(argv)
        err = capsys.readouterr().err
        assert code == expected, (argv, err)
        assert message in err, (argv, err)

    env = child_env()
    env["PIPELINE_PREFIX"] = "Bad-Prefix"
    out = cli("status", *MODULE, env=env)
    assert out.returncode == 1 and "PIPELINE_PREFIX='Bad-Prefix' is not a valid schema prefix" in out.stderr
    env = child_env()
    env["DJ_PORT"] = "1"
    out = cli("worker", "--start-timeout", "0", *MODULE, env=env)
    assert out.returncode == 1 and out.stderr.strip().splitlines()[-1].startswith("error:"), out.stderr


def _exit_code(argv) -> int:
    try:
        return main(list(argv))
    except SystemExit as exit:  # argparse rejects the command line
        return exit.code


def test_gc_lists_orphaned_store_files_and_deletes_them_on_request(fresh, capsys):
    wt = fresh
    wt.Payload.delete_quick()
    wt.Payload.insert([dict(payload=p, data=np.arange(5.0) + p) for p in (1, 2)])
    (wt.Payload & dict(payload=1)).delete_quick()

    code, out, err = run_cli(capsys, "gc", "--limit", "0")
    assert code == 0, err
    orphans = [line.strip() for line in out.splitlines() if line.startswith("  ") and "payload" in line]
    assert len(orphans) == 1 and "dry run" in out
    from schemas import db

    path = db.store_dir() / orphans[0]
    assert path.exists(), "a dry run deletes nothing"

    code, out, err = run_cli(capsys, "gc", "--delete", "--grace", "0")
    assert code == 0, err
    assert not path.exists()
    np.testing.assert_array_equal((wt.Payload & dict(payload=2)).fetch1("data").load(), np.arange(5.0) + 2)


def test_compose_file_describes_the_deployment():
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"db", "minio", "setup", "scheduler", "worker", "gpu-worker", "notebook"} <= set(services)
    for name in ("worker", "gpu-worker", "scheduler", "notebook"):
        environment = services[name]["environment"]
        assert str(environment["DJ_CREATE_TABLES"]).lower() == "false", name
    assert "setup" in " ".join(services["setup"]["command"])
    devices = services["gpu-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert ":" in services["minio"]["image"] and not services["minio"]["image"].endswith(":latest")
    stores = json.loads(services["worker"]["environment"]["DJ_STORES"])
    assert stores["pipeline"]["protocol"] == "s3"


def test_claim_returns_only_the_keys_this_worker_reserved(fresh):
    from populate.work import jobs as queues
    from populate.work.worker import Worker

    wt = fresh
    wt.Item.insert(dict(item=i, value=float(i)) for i in range(4))
    jobs = queues.queue(wt.Square)
    jobs.refresh(delay=-1)
    assert jobs.reserve(dict(item=2))
    q = jobs.adapter.quote_identifier
    jobs.connection.query(f"UPDATE {jobs.full_table_name} SET {q('pid')}={q('pid')}+1")  # another worker's
    worker = Worker([wt.Square])
    held = worker.claim(jobs, [dict(item=i) for i in (1, 2, 3)])
    assert held == [dict(item=1), dict(item=3)]
    assert worker.claim(jobs, [dict(item=1)]) == [], "a reserved key cannot be claimed twice"
    worker.finish(jobs, held)
    assert sorted(r["status"] for r in jobs.to_dicts()) == ["pending", "pending", "pending", "reserved"]


def test_a_slow_make_sends_the_jobs_reserved_behind_it_back(fresh, monkeypatch):
    import collections

    from populate.work import jobs as queues
    from populate.work import worker as workers

    wt = fresh
    wt.Item.insert(dict(item=i, value=float(i), seconds=1.2 if i == 0 else 0.0) for i in range(10))
    jobs = queues.queue(wt.Square)
    jobs.refresh(delay=-1)
    q = jobs.adapter.quote_identifier
    jobs.connection.query(f"UPDATE {jobs.full_table_name} SET {q('priority')}=0 WHERE {q('item')}=0")
    monkeypatch.setattr(workers.random, "shuffle", lambda keys: None)  # the slow key is claimed first
    worker = workers.Worker([wt.Square], max_jobs=10, refresh=False, batch=8)
    worker.make_seconds[wt.Square.full_table_name] = collections.deque([0.01])  # looked fast so far
    summary = worker.run()
    assert (summary.done, summary.handed_back) == (10, 7), summary
    assert len(wt.Square()) == 10 and len(wt.Square.jobs) == 0


def test_completed_jobs_are_kept_as_success_when_configured(fresh, monkeypatch):
    import datajoint as dj

    from populate.work.worker import Worker

    wt = fresh
    wt.Item.insert(dict(item=i, value=float(i)) for i in range(12))
    wt.Square.jobs.refresh(delay=-1)
    monkeypatch.setattr(dj.config.jobs, "keep_completed", True)
    summary = Worker([wt.Square], max_jobs=12, refresh=False).run()
    assert summary.done == 12 and len(wt.Square()) == 12
    rows = wt.Square.jobs.to_dicts()
    assert len(rows) == 12 and {r["status"] for r in rows} == {"success"}
    assert all(r["completed_time"] is not None and r["duration"] is not None for r in rows)


# ---------------------------------------------------------------------------------------------
# `populate run` shares the queues


def start_run(tmp_path, *args) -> subprocess.Popen:
    """``python -m populate run`` on the test tables, in its own process (output in ``run-N.log``)."""
    n = len(list(tmp_path.glob("run-*.log")))
    out = open(tmp_path / f"run-{n}.log", "w")
    return subprocess.Popen(
        [sys.executable, "-m", "populate", "run", "--quiet", "--poll", "0.2", *MODULE, *args],
        cwd=REPO,
        env=child_env(),
        stdout=out,
        stderr=subprocess.STDOUT,
    )


def test_two_runs_and_a_worker_compute_every_key_once(fresh, tmp_path):
    wt = fresh
    values = np.random.default_rng(1).normal(size=12)
    wt.Item.insert(dict(item=i, value=float(v), seconds=0.2) for i, v in enumerate(values))
    processes = [start_run(tmp_path), start_run(tmp_path), start_worker(tmp_path, "--idle-exit", "3")]
    reap(*processes, timeout=120)
    logs = [p.read_text() for p in sorted(tmp_path.glob("*.log")) if p.name != "makes.log"]
    assert [p.returncode for p in processes] == [0, 0, 0], logs

    log = makes(tmp_path)
    for table in ("Square", "Cube"):
        assert sorted(i for t, i, _ in log if t == table) == list(range(len(values))), f"{table}: once per key"
    assert len({pid for *_, pid in log}) > 1, "the work should be shared between processes"
    np.testing.assert_allclose(sorted(wt.Cube().to_arrays("cube")), np.sort(values**3))
    assert len(wt.Square.jobs) == len(wt.Cube.jobs) == 0


def test_a_failed_make_in_run_raises_and_goes_back_to_pending(fresh, tmp_path):
    wt = fresh
    wt.Item.insert([dict(item=i, value=float(i), fail=i == 2) for i in range(4)])
    out = cli("run", "--quiet", *MODULE, "--tables", "Square")
    assert out.returncode == 1 and "item 2 is marked to fail" in out.stderr, out.stderr
    assert job(wt.Square, 2)["status"] == "pending", "a failure in `run` records no error row: a rerun retries it"
    assert rows_of(wt.Square, 2) == (0, 0)

    wt.Item.update1(dict(item=2, fail=False))
    out = cli("run", "--quiet", *MODULE, "--tables", "Square")
    assert out.returncode == 0, out.stderr
    assert len(wt.Square()) == 4 and len(wt.Square.jobs) == 0


def test_run_names_jobs_failed_in_a_worker_and_computes_the_rest(fresh, tmp_path):
    wt = fresh
    wt.Item.insert([dict(item=0, value=1.0, fail=True)])
    reap(start_worker(tmp_path, "--tables", "Square", "--idle-exit", "1"))
    assert job(wt.Square, 0)["status"] == "error"
    wt.Item.insert([dict(item=i, value=float(i)) for i in (1, 2)])

    out = cli("run", "--quiet", *MODULE, "--tables", "Square")
    assert out.returncode == 1
    assert "Square: 1 job(s) failed in another process" in out.stderr and '{"item": 0}' in out.stderr, out.stderr
    assert sorted(wt.Square().to_arrays("item")) == [1, 2]
    assert job(wt.Square, 0)["status"] == "error", "another process's error is left for a person"


def test_run_takes_back_the_job_of_a_holder_that_died(fresh, tmp_path):
    wt = fresh
    wt.Item.insert([dict(item=i, value=float(i)) for i in range(3)])
    # A process that reserves item 0 and exits without computing it (its connection closes).
    claim = (
        "from tests import worker_setup; from populate.work import jobs, reservation; "
        "wt = worker_setup.declare(); q = jobs.queue(wt.Square); jobs.refresh(q); "
        "print(reservation.claim(q, [dict(item=0)], host='gone-host', pid=1))"
    )
    out = subprocess.run(
        [sys.executable, "-c", claim], cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and "'item': 0" in out.stdout, out.stderr
    assert job(wt.Square, 0)["status"] == "reserved"

    out = cli("run", "--quiet", "--poll", "0.2", *MODULE, "--tables", "Square")
    assert out.returncode == 0, out.stderr
    assert "held by gone-host pid 1" in out.stderr
    assert sorted(wt.Square().to_arrays("item")) == [0, 1, 2] and len(wt.Square.jobs) == 0


@pytest.mark.parametrize("table", ["Square", "Cube"], ids=["in-transaction", "tripartite-compute"])
def test_sigterm_stops_run_and_hands_its_job_back(fresh, tmp_path, table):
    wt = fresh
    target = getattr(wt, table)
    wt.Item.insert([dict(item=0, value=2.0, seconds=60.0)])
    run = start_run(tmp_path, "--tables", table)
    running(tmp_path, target, 0)
    run.send_signal(signal.SIGTERM)
    reap(run, timeout=30)
    assert run.returncode != 0
    assert job(target, 0)["status"] == "pending", "the interrupted make's job is handed back"
    assert rows_of(target, 0) == (0, 0)
