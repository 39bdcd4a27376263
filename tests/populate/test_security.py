"""Faults, races and hostile input against real servers: nothing lost, nobody where they don't belong.

Each test reproduces one fault or attack (``benchmarks/fault_campaign.py`` injects them together) on
its own tables and prefix: the store collector racing an open import, SQL reaching the server through
``--key``, prefix boundaries, decompression bombs, ids the command line cannot address, settings
errors, concurrent ``setup``/imports, a worker that loses the database while recording a
failure, dead workers shown busy, ``report --out`` into a missing folder, onto a link or an
existing file, and DataJoint's MariaDB warning.  Role grants are exercised in
``tests/populate/test_roles.py``, prefix ownership in ``tests/populate/test_ownership.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
import zipfile
from pathlib import Path

import pytest

from tests.populate.commands import REPO, child_env, cli, run_cli

MODULE = ("--schema-module", "tests.worker_tables")


def wait_for(condition, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _q(name: str) -> str:
    import datajoint as dj

    return dj.conn().adapter.quote_identifier(name)


def _login():
    """A second connection with the test's settings (a person in psql, another process)."""
    import datajoint as dj

    return dj.Connection(
        dj.config["database.host"],
        dj.config["database.user"],
        dj.config["database.password"],
        port=dj.config["database.port"],
        use_tls=dj.config["database.use_tls"],
    )


def _separator() -> str:
    from schemas import db

    return getattr(db, "SEPARATOR", "_")


@pytest.fixture(scope="module")
def wt(db):
    from tests.worker_setup import declare

    return declare()


@pytest.fixture
def fresh(wt, tmp_path, monkeypatch):
    from tests.worker_setup import clear

    clear(wt)
    monkeypatch.setenv("WORKER_TABLES_LOG", str(tmp_path))
    return wt


# ---------------------------------------------------------------------------------------------
# 1. the store collector never deletes what an open transaction is about to commit


def _store_files(schema: str) -> set[Path]:
    from schemas import db

    return {p for p in db.store_dir().rglob("*") if p.is_file() and schema in p.parts}


def test_gc_delete_keeps_the_files_of_an_import_held_open_mid_transaction(db, tmp_path, capsys):
    from populate import ingest
    from schemas import db as settings
    from schemas import recordings

    schema = settings.schema_name("recordings")
    holder = _login()
    # Hold the import at its last table: every earlier file is written, no row is committed.
    # PostgreSQL: a table lock.  InnoDB: a gap lock where the scan's rows would go (LOCK TABLES
    # would lock the parent tables too, and stop the import before it writes anything).
    leaf = f"{_q(schema)}.{_q('ground_truth__unit')}"
    holder.query("BEGIN")
    if holder.adapter.backend == "postgresql":
        holder.query(f"LOCK TABLE {leaf} IN SHARE MODE")
    else:
        holder.query(f"SELECT * FROM {leaf} WHERE animal_id = 6 FOR UPDATE")
    importer = subprocess.Popen(
        [sys.executable, "-m", "populate", "simulate", "--preset", "tiny", "--seed", "6", "--scan", "6-6-6"],
        cwd=REPO,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # GroundTruth's files are encoded right before its INSERT, which then waits for the lock.
        wait_for(
            lambda: any("ground_truth" in p.parts and "animal_id=6" in str(p) for p in _store_files(schema)),
            timeout=120,
            what="the import to reach its last insert",
        )
        time.sleep(0.5)
        written = _store_files(schema)
        code, out, err = run_cli(capsys, "gc", "--delete", "--grace", "0", "--wait", "0", "--limit", "0")
        assert code == 0, err
        assert "kept" in out and "open transaction" in out, out
    finally:
        holder.query("ROLLBACK")
        holder.close()
    output = importer.communicate(timeout=120)[0]
    assert importer.returncode == 0, output
    assert written <= _store_files(schema), "gc deleted files of the open import"
    assert recordings.scan_exists(dict(animal_id=6, session=6, scan_idx=6))
    ingest.export_sensorium("6-6-6", tmp_path / "export")  # reads every stored array of the scan


def test_gc_sees_temporary_saving_files_and_keeps_young_ones(db, capsys):
    import datajoint as dj

    from populate.admin import store_gc
    from schemas import compat
    from schemas import db as settings

    schema = settings.schema_name("models")
    collector = dj.gc.GarbageCollector(
        dj.Schema(schema, create_schema=False, create_tables=False), store=settings.STORE
    )
    folder = Path(compat.store_path(collector.backend, store_gc.hash_section(collector, schema) + "ab"))
    folder.mkdir(parents=True, exist_ok=True)
    old, young = folder / "abcdefghijklmnopqrstuvwxyz.saving", folder / "bcdefghijklmnopqrstuvwxyza.saving"
    for path in (old, young):
        path.write_bytes(b"partial write cut short by a full disk")
    hours_ago = time.time() - 7200
    os.utime(old, (hours_ago, hours_ago))
    code, out, err = run_cli(capsys, "gc", "--limit", "0")
    assert code == 0, err
    assert old.name in out and young.name in out, out
    code, out, err = run_cli(capsys, "gc", "--delete", "--grace", "3600", "--wait", "0")
    assert code == 0, err
    assert not old.exists(), "a temporary file older than the grace period is collected"
    assert young.exists(), "a temporary file younger than the grace period may still be written"
    young.unlink()
    assert store_gc.DEFAULT_GRACE_S > 0


# ---------------------------------------------------------------------------------------------
# 2. keys: typed, checked against the table, never SQL


def _trained_model_jobs(n: int = 3) -> list[dict]:
    """Failed jobs in TrainedModel's queue (no data behind them; the queue is all retry/ignore touch)."""
    from schemas.models import TrainedModel

    jobs = TrainedModel.jobs
    jobs.delete_quick()
    rows = []
    for i in range(n):
        key = dict(model_hash=f"{i:032d}", dataset_hash="d" * 32, trainer_hash="t" * 32, seed=i)
        jobs.insert1(dict(key, status="error", priority=5, error_message="boom", host="h", pid=1, connection_id=1))
        rows.append(key)
    return rows


@pytest.fixture
def canary(db):
    """A table in this run's operations schema that an injected DROP TABLE would remove."""
    import datajoint as dj

    from schemas import db as settings

    name = f"{_q(settings.schema_name('operations'))}.{_q('canary')}"
    dj.conn().query(f"CREATE TABLE IF NOT EXISTS {name} (x integer)")
    yield name
    dj.conn().query(f"DROP TABLE IF EXISTS {name}")


def _exists(full_name: str) -> bool:
    import datajoint as dj

    try:
        dj.conn().query(f"SELECT 1 FROM {full_name}").fetchall()
        return True
    except Exception:
        return False


def test_key_values_never_reach_sql(db, canary, capsys):
    from schemas.models import TrainedModel

    keys = _trained_model_jobs()
    # The campaign's payload: the table named without quotes, so that the list's repr keeps it intact.
    bare = canary.replace('"', "").replace("`", "")
    drop = json.dumps({"model_hash": [f"x')); DROP TABLE {bare}; SELECT (('"]})
    code, out, err = run_cli(capsys, "retry", "--table", "TrainedModel", "--ignored", "--key", drop)
    assert _exists(canary), "the injected DROP TABLE ran"
    assert code == 1 and "not a single number or string" in err, (code, out, err)

    everything = json.dumps({"model_hash": ["x') OR TRUE OR ('a'='a"]})
    code, out, err = run_cli(capsys, "ignore", "--table", "TrainedModel", "--key", everything)
    assert code == 1, (out, err)
    code, out, err = run_cli(capsys, "retry", "--table", "TrainedModel", "--key", everything)
    assert code == 1, (out, err)
    assert len(TrainedModel.jobs & "status='error'") == len(keys), "an injected condition matched every job"

    # A quote inside a plain string value is data: it matches nothing and changes nothing.
    quoted = json.dumps({"model_hash": "x' OR 'a'='a"})
    code, out, err = run_cli(capsys, "retry", "--table", "TrainedModel", "--key", quoted)
    assert code == 0 and "nothing" in out, (out, err)
    assert len(TrainedModel.jobs & "status='error'") == len(keys)

    for bad, why in (
        (json.dumps({"seed": "1"}), "not a number"),
        (json.dumps({"seed": 1.5}), "not a whole number"),
        (json.dumps({"seed": True}), "not a single number"),
        (json.dumps({"seed": None}), "not a single"),
        (json.dumps({"model_hash": {"a": 1}}), "not a single"),
        (json.dumps({"model_hash": 3}), "not a string"),
    ):
        code, out, err = run_cli(capsys, "retry", "--table", "TrainedModel", "--key", bad)
        assert code == 1 and why in err, (bad, err)

    code, out, err = run_cli(capsys, "retry", "--table", "TrainedModel", "--key", json.dumps(keys[0]))
    assert code == 0 and "TrainedModel 1" in out, (out, err)
    TrainedModel.jobs.delete_quick()


def test_a_key_without_a_table_is_refused_and_changes_nothing(fresh, capsys):
    wt = fresh
    wt.Item.insert([dict(item=i, value=i) for i in range(4)])
    for table in (wt.Square, wt.Cube):
        table.jobs.refresh()
    before = {t.__name__: len(t.jobs & "status='pending'") for t in (wt.Square, wt.Cube)}
    code, out, err = run_cli(capsys, "ignore", "--key", '{"nope": 1}', *MODULE)
    assert code == 1 and "needs --table" in err, (out, err)
    code, out, err = run_cli(capsys, "ignore", "--key", '{"item": 1}', *MODULE)
    assert code == 1 and "needs --table" in err, (out, err)
    after = {t.__name__: len(t.jobs & "status='pending'") for t in (wt.Square, wt.Cube)}
    assert after == before == {"Square": 4, "Cube": 4}
    assert not (wt.Square.jobs & "status='ignore'") and not (wt.Cube.jobs & "status='ignore'")


# ---------------------------------------------------------------------------------------------
# 4. prefix boundaries (the role side is in tests/populate/test_roles.py)


@pytest.fixture
def neighbour(db):
    """A schema of another prefix that begins with this one (``{prefix}_x``), with one table."""
    import datajoint as dj

    from schemas import db as settings

    name = f"{settings.prefix()}_x{_separator()}recordings"
    connection = dj.conn()
    connection.query(connection.adapter.create_schema_sql(name))
    connection.query(f"CREATE TABLE {_q(name)}.{_q('animal')} (animal_id integer PRIMARY KEY)")
    yield name
    connection.query(f"DROP TABLE IF EXISTS {_q(name)}.{_q('animal')}")
    connection.query(connection.adapter.drop_schema_sql(name))


def test_the_collector_and_the_roles_stay_inside_the_prefix(db, neighbour, capsys):
    import datajoint as dj

    from populate.admin import roles, store_gc
    from schemas import db as settings

    assert neighbour not in [s.database for s in store_gc.prefix_schemas()]
    code, out, err = run_cli(capsys, "roles", "create", "--dry-run")
    assert code == 0, err
    assert neighbour not in out, "roles of this prefix would cover another prefix's schema"
    if dj.conn().adapter.backend != "postgresql":
        # The grant pattern itself must not match the neighbour's name.
        pattern = roles.mysql_pattern(settings.prefix()).strip("`")
        matches = dj.conn().query("SELECT %s LIKE %s", args=(neighbour, pattern)).fetchone()[0]
        assert not matches, f"grant pattern {pattern} covers {neighbour}"


# ---------------------------------------------------------------------------------------------
# 5. import limits and id ranges


def test_a_zip_bomb_is_refused_before_it_is_inflated(db, tmp_path, capsys, monkeypatch):
    from tests.sensorium_fixtures import write_fake_sensorium

    path = write_fake_sensorium(tmp_path, zip=True, nested=True)
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        prefix = archive.namelist()[0].split("/")[0]
        archive.writestr(f"{prefix}/meta/trials/padding.npy", bytes(32 * 2**20))  # 32 MiB of zeros, ~32 kB packed
    assert path.stat().st_size < 2**20
    monkeypatch.setenv("PIPELINE_IMPORT_MAX_FILE_MB", "8")
    code, out, err = run_cli(capsys, "import", "sensorium", str(path))
    assert code == 1 and "padding.npy" in err and "import limit" in err, (out, err)
    monkeypatch.setenv("PIPELINE_IMPORT_MAX_FILE_MB", "64")
    monkeypatch.setenv("PIPELINE_IMPORT_MAX_GB", "0.01")
    code, out, err = run_cli(capsys, "import", "sensorium", str(path))
    assert code == 1 and "import limit" in err, (out, err)


def test_negative_and_oversized_scan_ids_are_refused(db, tmp_path, capsys):
    from pipeline.data.sensorium import write_sensorium
    from pipeline.data.simulate import simulate
    from schemas import recordings

    for animal in (-3, 2**31):
        recording = simulate("tiny", seed=3)
        recording.animal_id, recording.session, recording.scan_idx = animal, 1, 1
        folder = write_sensorium(recording, tmp_path / f"static{abs(animal)}-1-1")
        code, out, err = run_cli(capsys, "import", "sensorium", str(folder))
        assert code == 1 and "animal_id" in err, (animal, out, err)
        assert not recordings.scan_exists(dict(animal_id=animal, session=1, scan_idx=1)) if animal < 2**31 else True
    code, out, err = run_cli(capsys, "export", "sensorium", "99999999999-1-1", str(tmp_path / "x"))
    assert code == 1 and "exceeds" in err, err


# ---------------------------------------------------------------------------------------------
# 6. settings errors end in one line


@pytest.mark.parametrize("name, value", [("DJ_BACKEND", "oracle"), ("DJ_PORT", "abc"), ("DJ_PORT", "99999")])
def test_invalid_connection_settings_give_one_error_line(name, value):
    out = cli("status", env=child_env(**{name: value, "DJ_HOST": "127.0.0.1", "DJ_USER": "u", "DJ_PASS": "p"}))
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and len(lines) == 1 and lines[0].startswith("error:") and name in lines[0], out.stderr


def test_report_into_a_missing_folder_is_refused(db, tmp_path, capsys):
    target = tmp_path / "no" / "such" / "report.html"
    code, out, err = run_cli(capsys, "report", "--out", str(target))
    assert code == 1 and "does not exist" in err, (out, err)
    assert not (tmp_path / "no").exists()


def test_report_refuses_a_link_or_an_existing_file_unless_forced(db, tmp_path, capsys):
    victim = tmp_path / "notes.txt"
    victim.write_text("a file the link points at")
    link, existing = tmp_path / "link.html", tmp_path / "old.html"
    link.symlink_to(victim)
    existing.write_text("last week's report")
    for path, kind in ((link, "symbolic link"), (existing, "existing file")):
        code, out, err = run_cli(capsys, "report", "--out", str(path))
        assert code == 1 and kind in err and str(path) in err and "--force" in err, (out, err)
    assert victim.read_text() == "a file the link points at" and existing.read_text() == "last week's report"
    for path in (link, existing):
        code, out, err = run_cli(capsys, "report", "--out", str(path), "--force")
        assert code == 0, err
        assert not path.is_symlink() and path.read_text().lstrip().lower().startswith("<!doctype html")
    assert victim.read_text() == "a file the link points at", "--force wrote through the link"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.html", "notes.txt", "old.html"]


def test_the_mariadb_warning_becomes_one_debug_line():
    """DataJoint warns on every MariaDB connection; the command line logs it once, at debug level."""
    script = (
        "import logging, sys, warnings\n"
        "from populate.work import connection\n"
        "logging.basicConfig(level=logging.DEBUG if sys.argv[1] == '-v' else logging.INFO, format='%(message)s')\n"
        "connection.quiet_mariadb_warning(); connection.quiet_mariadb_warning()\n"
        "for _ in range(2):\n"
        "    warnings.warn('MariaDB is not officially supported by DataJoint 2.x (server reports 10.11). '\n"
        "                  'Compatibility is best-effort and may break in future releases.', UserWarning)\n"
        "warnings.warn('another warning', UserWarning)\n"
    )
    for flag, mariadb_lines in (("-v", 1), ("-q", 0)):
        out = subprocess.run(
            [sys.executable, "-c", script, flag], cwd=REPO, env=child_env(), capture_output=True, text=True
        )
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 0, out.stderr
        assert sum("MariaDB" in line for line in lines) == mariadb_lines, lines
        assert any("another warning" in line for line in lines), "other warnings are shown as before"


def test_a_failing_command_prints_one_line_on_every_server(db):
    from schemas import db as settings

    out = cli("status", env=child_env(PIPELINE_PREFIX=f"{settings.prefix()}_nothing"))
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and len(lines) == 1 and lines[0].startswith("error:"), out.stderr


# ---------------------------------------------------------------------------------------------
# 7. races end in the documented no-op


def _race(env: dict, *argv: str, racers: int = 3) -> list[str]:
    """Start ``racers`` identical ``python -m populate ARGV`` processes at once; their outputs, once
    every one has exited 0."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "populate", *argv],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(racers)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    assert all(p.returncode == 0 for p in processes), outputs
    return outputs


def test_concurrent_setup_and_imports_of_one_scan_are_no_ops_for_the_losers(db):
    from schemas import db as settings

    prefix = f"{settings.prefix()}_race"
    env = child_env(PIPELINE_PREFIX=prefix)
    try:
        _race(env, "setup")
        outputs = _race(env, "simulate", "--preset", "tiny", "--seed", "8", "--scan", "8-8-8")
        states = sorted(
            "inserted" if "(inserted)" in out else "present" if "already present" in out else out for out in outputs
        )
        assert states == ["inserted", "present", "present"], outputs
    finally:
        import schemas

        schemas.drop_all(prefix)  # downstream first


# ---------------------------------------------------------------------------------------------
# 8. workers: the database gone while recording a failure; a killed worker in `status`


_HOSTS = ("%%", "127.0.0.1", "localhost")
"""Account hosts of a MariaDB login (a literal % is doubled: the driver interpolates every query)."""


def _worker_login(connection, name: str, password: str) -> None:
    """A login that may do everything, so that locking it is the only thing that stops it."""
    if connection.adapter.backend == "postgresql":
        connection.query(f"CREATE ROLE \"{name}\" LOGIN SUPERUSER PASSWORD '{password}'")
    else:
        for host in _HOSTS:
            connection.query(f"CREATE USER '{name}'@'{host}' IDENTIFIED BY '{password}'")
            connection.query(f"GRANT ALL ON *.* TO '{name}'@'{host}'")


def _lock_login(connection, name: str, locked: bool) -> None:
    if connection.adapter.backend == "postgresql":
        connection.query(f'ALTER ROLE "{name}" {"NOLOGIN" if locked else "LOGIN"}')
        if locked:
            connection.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", args=(name,))
        return
    for host in _HOSTS:
        connection.query(f"ALTER USER '{name}'@'{host}' ACCOUNT {'LOCK' if locked else 'UNLOCK'}")
    if locked:
        for (pid,) in connection.query(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s", args=(name,)
        ).fetchall():
            try:
                connection.query(f"KILL CONNECTION {int(pid)}")
            except Exception:
                pass


def _drop_login(connection, name: str) -> None:
    if connection.adapter.backend == "postgresql":
        connection.query(f'DROP ROLE IF EXISTS "{name}"')
    else:
        for host in _HOSTS:
            connection.query(f"DROP USER IF EXISTS '{name}'@'{host}'")


def _square_worker(tmp_path, name: str, password: str) -> subprocess.Popen:
    """A worker process on ``Square`` logged in as ``name``, logging to ``tmp_path/worker.log``."""
    log = open(tmp_path / "worker.log", "w")
    argv = ["worker", *MODULE, "--tables", "Square", "--poll", "0.2", "--heartbeat", "0.3", "--idle-exit", "2"]
    return subprocess.Popen(
        [sys.executable, "-m", "populate", *argv],
        cwd=REPO,
        env=child_env(DJ_USER=name, DJ_PASS=password, WORKER_TABLES_LOG=str(tmp_path)),
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def test_a_worker_waits_for_the_database_to_record_a_failed_make(fresh, tmp_path):
    import datajoint as dj

    wt = fresh
    connection = dj.conn()
    name, password = f"w{uuid.uuid4().hex[:10]}", "pw" + uuid.uuid4().hex[:12]
    _worker_login(connection, name, password)
    try:
        wt.Item.insert1(dict(item=1, value=1.0, seconds=3.0))
        wt.Square.jobs.refresh()
        worker = _square_worker(tmp_path, name, password)
        wait_for(lambda: (tmp_path / "makes.log").exists(), what="the make to start")
        # The server goes away for this worker in the middle of its make (connection ended, logins refused).
        _lock_login(connection, name, True)
        wait_for(
            lambda: "database unreachable" in (tmp_path / "worker.log").read_text() or worker.poll() is not None,
            timeout=60,
            what="the worker to notice",
        )
        time.sleep(2)
        assert worker.poll() is None, (tmp_path / "worker.log").read_text()
        _lock_login(connection, name, False)
        worker.wait(120)
        text = (tmp_path / "worker.log").read_text()
        assert worker.returncode == 0, text
        job = (wt.Square.jobs & dict(item=1)).to_dicts()
        assert job and job[0]["status"] == "error", (job, text)
        assert len(wt.Square & dict(item=1)) == 0 and len(wt.Square.Piece & dict(item=1)) == 0
    finally:
        _lock_login(connection, name, True)
        _drop_login(connection, name)


def test_a_worker_started_while_the_database_is_away_waits_for_it(fresh, tmp_path):
    """Service managers start workers without knowing whether the server is up: a refused login at
    start-up (while the table modules are imported) is waited for, and the queued job then runs."""
    import datajoint as dj

    wt = fresh
    connection = dj.conn()
    name, password = f"w{uuid.uuid4().hex[:10]}", "pw" + uuid.uuid4().hex[:12]
    _worker_login(connection, name, password)
    try:
        wt.Item.insert1(dict(item=2, value=3.0, seconds=0.0))
        wt.Square.jobs.refresh()
        _lock_login(connection, name, True)
        worker = _square_worker(tmp_path, name, password)
        wait_for(
            lambda: "waiting for it" in (tmp_path / "worker.log").read_text() or worker.poll() is not None,
            timeout=60,
            what="the worker to find the database away",
        )
        assert worker.poll() is None, (tmp_path / "worker.log").read_text()
        _lock_login(connection, name, False)
        worker.wait(120)
        text = (tmp_path / "worker.log").read_text()
        assert worker.returncode == 0, text
        assert len(wt.Square & dict(item=2)) == 1, text
    finally:
        _lock_login(connection, name, True)
        _drop_login(connection, name)


def test_a_killed_worker_is_not_shown_busy(fresh, tmp_path, capsys):
    wt = fresh
    wt.Item.insert1(dict(item=1, value=1.0, seconds=60.0))
    wt.Square.jobs.refresh()
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "populate",
            "worker",
            *MODULE,
            "--tables",
            "Square",
            "--poll",
            "0.2",
            "--heartbeat",
            "0.3",
        ],
        cwd=REPO,
        env=child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def states():
        code, out, err = run_cli(capsys, "status", "--json", *MODULE)
        assert code == 0, err
        return [w["state"] for w in json.loads(out)["workers"] if w["pid"] == worker.pid]

    wait_for(lambda: states() == ["busy"], what="the worker to be busy")
    worker.send_signal(signal.SIGKILL)
    worker.wait(30)
    wait_for(lambda: states() == ["dead"], timeout=90, what="status to show the killed worker dead")
