"""Fault-injection campaign: workers and the store collector under injected faults.

Runs the test tables of ``tests/worker_tables.py`` (``Square``: a classic make in one
transaction; ``Cube``: a tripartite make) once undisturbed, then again with two worker processes
and a scheduler while faults are injected into running makes:

* ``SIGKILL``  a worker mid-make (a replacement is started);
* ``SIGTERM``  a worker mid-make; the time from the signal to the process's exit is measured;
* ``conn-kill`` the server ends a worker's connections mid-make;
* ``db-down``  the server refuses the worker's login for a few seconds after ending its
  connections (the worker must wait, not exit);
* ``gc-race``  ``gc --delete --grace 0`` while an import (``simulate --preset tiny``) is held open
  at its last insert by a lock.

It then checks that every job completed, that the tables equal the undisturbed run's, that no
row is missing and that every store file a row names exists, and prints one table.  Tiny sizes:
about two minutes on two cores.  Uses the configured server (``DJ_*``) under a throw-away prefix
and a login of its own (created and dropped here; needs an account that may create logins):

    eval "$(populate/deploy/local_db.sh postgresql)"
    python -m benchmarks.fault_campaign [--items 16] [--rounds 2]

Writes ``benchmarks/results/faults-<backend>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODULE = ("--schema-module", "tests.worker_tables")
HOSTS = ("%%", "127.0.0.1", "localhost")


# ---------------------------------------------------------------------------------------------
# set-up


def _declare():
    from tests.worker_setup import declare

    return declare()


class Login:
    """A login of the campaign's own, so that the database can be taken away from its workers alone."""

    def __init__(self, connection):
        self.connection = connection
        self.name, self.password = f"fc{uuid.uuid4().hex[:10]}", "pw" + uuid.uuid4().hex[:16]
        if self.pg:
            connection.query(f"CREATE ROLE \"{self.name}\" LOGIN SUPERUSER PASSWORD '{self.password}'")
        else:
            for host in HOSTS:
                connection.query(f"CREATE USER '{self.name}'@'{host}' IDENTIFIED BY '{self.password}'")
                connection.query(f"GRANT ALL ON *.* TO '{self.name}'@'{host}'")

    @property
    def pg(self) -> bool:
        return self.connection.adapter.backend == "postgresql"

    def end_connections(self, pids: set[int] | None = None) -> int:
        """End the login's connections on the server (only those of ``pids`` when given)."""
        if self.pg:
            rows = self.connection.query(
                "SELECT pid FROM pg_stat_activity WHERE usename = %s", args=(self.name,)
            ).fetchall()
        else:
            rows = self.connection.query(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s", args=(self.name,)
            ).fetchall()
        ended = 0
        for (pid,) in rows:
            if pids is not None and int(pid) not in pids:
                continue
            try:
                self.connection.query(
                    "SELECT pg_terminate_backend(%s)" if self.pg else f"KILL CONNECTION {int(pid)}",
                    args=(int(pid),) if self.pg else (),
                )
                ended += 1
            except Exception:
                pass
        return ended

    def lock(self, locked: bool) -> None:
        if self.pg:
            self.connection.query(f'ALTER ROLE "{self.name}" {"NOLOGIN" if locked else "LOGIN"}')
        else:
            for host in HOSTS:
                self.connection.query(f"ALTER USER '{self.name}'@'{host}' ACCOUNT {'LOCK' if locked else 'UNLOCK'}")
        if locked:
            self.end_connections()

    def drop(self) -> None:
        self.lock(True)
        if self.pg:
            self.connection.query(f'DROP ROLE IF EXISTS "{self.name}"')
        else:
            for host in HOSTS:
                self.connection.query(f"DROP USER IF EXISTS '{self.name}'@'{host}'")


def _env(login: Login | None, log_dir: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), WORKER_TABLES_LOG=str(log_dir))
    if login is not None:
        env.update(DJ_USER=login.name, DJ_PASS=login.password)
    return env


def _start(args, env, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "populate", *args], cwd=REPO, env=env, stdout=open(log, "a"), stderr=subprocess.STDOUT
    )


def _worker(env, log_dir: Path, n: int) -> subprocess.Popen:
    return _start(
        ["worker", *MODULE, "--poll", "0.2", "--heartbeat", "0.5", "--idle-exit", "8"], env, log_dir / f"worker-{n}.log"
    )


# ---------------------------------------------------------------------------------------------
# observing


def _snapshot(tables) -> dict:
    """Everything the makes wrote, independent of timing."""
    out = {}
    for table in (tables.Square, tables.Cube):
        out[table.__name__] = sorted(tuple(sorted(r.items())) for r in table.to_dicts())
        out[table.__name__ + ".Piece"] = sorted(tuple(sorted(r.items())) for r in table.Piece.to_dicts())
    return out


def _makes(log_dir: Path) -> list[tuple[str, int, int]]:
    path = log_dir / "makes.log"
    if not path.exists():
        return []
    return [(t, int(i), int(p)) for t, i, p in (line.split() for line in path.read_text().splitlines())]


def _running(tables, log_dir: Path, pids: dict, timeout: float = 60) -> tuple[int, dict, object] | None:
    """A worker (pid) whose make has started and whose job is still reserved, with that job and its table."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        started = {(t, i): p for t, i, p in _makes(log_dir)}
        for table in (tables.Square, tables.Cube):
            for job in (table.jobs & "status='reserved'").to_dicts():
                pid = started.get((table.__name__, job["item"]))
                if pid in pids and pids[pid].poll() is None and job["pid"] == pid:
                    return pid, job, table
        time.sleep(0.05)
    return None


def _missing_files() -> int:
    """Store files that some row of the prefix names and that are not there."""
    import datajoint as dj

    from populate.admin import store_gc
    from schemas import compat, db

    schemas = store_gc.prefix_schemas()
    collector = dj.gc.GarbageCollector(*schemas, store=db.STORE)
    referenced = collector.hash_references() | collector.schema_references()
    return sum(not collector.backend.fs.exists(compat.store_path(collector.backend, path)) for path in referenced)


# ---------------------------------------------------------------------------------------------
# the campaign


def _run_queue(tables, items: int, seconds: float) -> None:
    tables.Item.insert([dict(item=i, value=float(i) + 0.5, seconds=seconds) for i in range(items)])
    for table in (tables.Square, tables.Cube):
        table.jobs.refresh()


def _clear(tables) -> None:
    from schemas import operations
    from tests.worker_setup import clear

    clear(tables)
    operations.Worker.delete_quick()
    operations.JobRetry.delete_quick()


def _gc_race(log_dir: Path) -> dict:
    """``gc --delete --grace 0`` while an import is held open mid-transaction; the import must land whole."""
    import datajoint as dj

    from populate import ingest
    from schemas import db, recordings

    connection = dj.conn()
    q = connection.adapter.quote_identifier
    schema = db.schema_name("recordings")
    holder = dj.Connection(
        dj.config["database.host"],
        dj.config["database.user"],
        dj.config["database.password"],
        port=dj.config["database.port"],
        use_tls=dj.config["database.use_tls"],
    )
    holder.query("BEGIN")
    leaf = f"{q(schema)}.{q('ground_truth__unit')}"
    holder.query(
        f"LOCK TABLE {leaf} IN SHARE MODE"
        if holder.adapter.backend == "postgresql"
        else f"SELECT * FROM {leaf} WHERE animal_id = 6 FOR UPDATE"
    )
    importer = _start(
        ["simulate", "--preset", "tiny", "--seed", "6", "--scan", "6-6-6"], _env(None, log_dir), log_dir / "import.log"
    )
    store = db.store_dir()
    deadline = time.monotonic() + 120
    while not any("ground_truth" in p.parts for p in store.rglob("*.npy")) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    gc = subprocess.run(
        [sys.executable, "-m", "populate", "gc", "--delete", "--grace", "0", "--wait", "0"],
        cwd=REPO,
        env=_env(None, log_dir),
        capture_output=True,
        text=True,
    )
    holder.query("ROLLBACK")
    holder.close()
    importer.wait(180)
    exported = True
    try:
        ingest.export_sensorium("6-6-6", Path(tempfile.mkdtemp()) / "export")
    except Exception:
        exported = False
    kept = next((line for line in gc.stdout.splitlines() if "kept" in line), "")
    return dict(
        injected=1,
        recovered=int(
            recordings.scan_exists(dict(animal_id=6, session=6, scan_idx=6)) and importer.returncode == 0 and exported
        ),
        detail=f"gc exit {gc.returncode}; {kept.strip()}",
    )


class _Crew:
    """The disturbed run's worker processes by pid; each started one gets the next log number."""

    def __init__(self, env: dict, log_dir: Path):
        self.env, self.log_dir = env, log_dir
        self.workers: dict[int, subprocess.Popen] = {}
        self.started = 0

    def spawn(self) -> None:
        self.started += 1
        w = _worker(self.env, self.log_dir, self.started)
        self.workers[w.pid] = w

    def stop(self) -> dict[int, int]:
        """SIGTERM to every worker still running; each worker's exit code by pid."""
        for w in self.workers.values():
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
                w.wait(60)
        return {pid: w.returncode for pid, w in self.workers.items()}


def _strike(fault: str, worker: subprocess.Popen, job: dict, login: Login, sigterm_s: list[float]) -> None:
    """Inject one worker fault into the make ``worker`` is running (``job``: its reserved job row)."""
    if fault == "SIGKILL":
        worker.send_signal(signal.SIGKILL)
        worker.wait(30)
    elif fault == "SIGTERM":
        t0 = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
        sigterm_s.append(time.monotonic() - t0)
    elif fault == "conn-kill":
        login.end_connections({int(job["connection_id"])})
    else:  # db-down: logins refused for 3 s while the make runs
        login.lock(True)
        time.sleep(3)
        login.lock(False)


def _drain(tables, items: int, crew: _Crew, timeout: float = 600) -> None:
    """Wait until both tables are complete and nothing is queued, restarting workers if all have exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = sum(len(t.jobs & "status in ('pending', 'reserved', 'error')") for t in (tables.Square, tables.Cube))
        done = sum(len(t()) for t in (tables.Square, tables.Cube))
        if not left and done == 2 * items:
            break
        if all(w.poll() is not None for w in crew.workers.values()):
            crew.spawn()
        time.sleep(0.5)


def _undisturbed(tables, items: int, seconds: float, log_dir: Path) -> dict:
    """One worker computes the queue with no fault: the snapshot the disturbed run must equal."""
    _clear(tables)
    _run_queue(tables, items, seconds)
    _worker(_env(None, log_dir), log_dir, 0).wait(600)
    reference = _snapshot(tables)
    assert len(reference["Square"]) == items and len(reference["Cube"]) == items, "the undisturbed run is incomplete"
    _clear(tables)
    (log_dir / "makes.log").unlink()
    return reference


def _disturbed(tables, items: int, rounds: int, seconds: float, log_dir: Path, login: Login) -> dict:
    """Two workers and a scheduler compute the queue while each fault strikes ``rounds`` running makes.

    Returns the faults (``injected`` counted), the (table, item) each struck, the SIGTERM-to-exit
    times (seconds) and the workers' exit codes by pid.
    """
    crew = _Crew(_env(login, log_dir), log_dir)
    faults = {name: dict(injected=0, recovered=0, detail="") for name in ("SIGKILL", "SIGTERM", "conn-kill", "db-down")}
    sigterm_s: list[float] = []
    hit: dict[str, list] = {}
    _run_queue(tables, items, seconds)
    scheduler_args = ["--interval", "0.5", "--stale-after", "3", "--backoff", "0.5", "--max-retries", "10"]
    scheduler = _start(["scheduler", *MODULE, *scheduler_args], crew.env, log_dir / "scheduler.log")
    for _ in range(2):
        crew.spawn()
    for _ in range(rounds):
        for fault in faults:
            found = _running(tables, log_dir, crew.workers)
            if found is None:
                continue
            pid, job, table = found
            faults[fault]["injected"] += 1
            hit.setdefault(fault, []).append((table, job["item"]))
            _strike(fault, crew.workers[pid], job, login, sigterm_s)
            if crew.workers[pid].poll() is not None:
                crew.spawn()
    faults["gc-race"] = _gc_race(log_dir)
    _drain(tables, items, crew)
    scheduler.send_signal(signal.SIGTERM)
    scheduler.wait(60)
    return dict(faults=faults, hit=hit, sigterm_s=sigterm_s, exits=crew.stop())


def campaign(items: int, rounds: int, seconds: float) -> dict:
    import datajoint as dj

    tables = _declare()
    log_dir = Path(tempfile.mkdtemp(prefix="faults-"))
    connection = dj.conn()
    reference = _undisturbed(tables, items, seconds, log_dir)
    login = Login(connection)
    try:
        run = _disturbed(tables, items, rounds, seconds, log_dir, login)
    finally:
        login.drop()

    result = _snapshot(tables)
    attempts: dict[tuple[str, int], int] = {}
    for table, item, _pid in _makes(log_dir):
        attempts[(table, item)] = attempts.get((table, item), 0) + 1
    recovered = sum(1 for key, n in attempts.items() if n > 1)
    rows_lost = sum(len(set(reference[name]) - set(result[name])) for name in reference)
    from tests.worker_tables import PIECES  # declared by _declare

    faults, sigterm_s = run["faults"], run["sigterm_s"]
    for name, jobs in run["hit"].items():  # a struck job is recovered when its entry is complete and nothing is queued
        faults[name]["recovered"] = sum(
            len(table & dict(item=item)) == 1
            and len(table.Piece & dict(item=item)) == PIECES
            and not (table.jobs & dict(item=item))
            for table, item in jobs
        )
    worker_errors = {pid: code for pid, code in run["exits"].items() if code not in (0, -signal.SIGKILL)}
    return dict(
        backend=connection.adapter.backend,
        items=items,
        faults=faults,
        jobs_recovered=recovered,
        rows_lost=rows_lost,
        files_lost=_missing_files(),
        identical=result == reference,
        complete=all(len(result[n]) == len(reference[n]) for n in reference),
        sigterm_exit_s=dict(
            n=len(sigterm_s),
            median=statistics.median(sigterm_s) if sigterm_s else None,
            max=max(sigterm_s) if sigterm_s else None,
        ),
        unexpected_worker_exits=worker_errors,
        log_dir=None,
    )


def _table(report: dict) -> str:
    lines = [
        f"fault campaign on {report['backend']}: {report['items']} items x 2 tables",
        f"{'fault':<10} {'injected':>8} {'recovered':>9}  detail",
    ]
    for name, f in report["faults"].items():
        lines.append(f"{name:<10} {f['injected']:>8} {f['recovered']:>9}  {f['detail']}")
    s = report["sigterm_exit_s"]
    lines += [
        f"jobs re-run after a fault: {report['jobs_recovered']}",
        f"rows lost: {report['rows_lost']}   files lost: {report['files_lost']}",
        f"results identical to the undisturbed run: {report['identical']}",
        f"SIGTERM to exit: median {s['median']:.2f} s, max {s['max']:.2f} s over {s['n']}"
        if s["n"]
        else "SIGTERM: none",
        f"worker exits other than 0 or SIGKILL: {report['unexpected_worker_exits'] or 'none'}",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2, help="passes over the four worker faults")
    parser.add_argument("--seconds", type=float, default=1.5, help="duration of each make")
    args = parser.parse_args()
    from benchmarks.common import RESULTS, private_database

    with private_database("faults"):
        try:
            report = campaign(args.items, args.rounds, args.seconds)
        finally:
            import datajoint as dj

            from schemas import db

            name = db.schema_name("worktest")  # not a pipeline stage: private_database leaves it
            if name in dj.list_schemas():
                dj.Schema(name, create_schema=False, create_tables=False).drop(prompt=False)
    print(_table(report))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"faults-{report['backend']}.json").write_text(json.dumps(report, indent=2, default=str))
    ok = (
        report["rows_lost"] == 0
        and report["files_lost"] == 0
        and report["identical"]
        and not report["unexpected_worker_exits"]
        and all(f["recovered"] == f["injected"] for f in report["faults"].values())
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
