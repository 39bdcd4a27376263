"""Two checkouts on one machine each get private database servers of their own (issue #37).

The script `populate/deploy/local_db.sh` is copied into two temporary checkouts (it finds its root
two folders above itself), which start their PostgreSQL and MariaDB servers side by side as `make
test` does; each answers `SELECT 1` through the settings its checkout printed, and stopping one
checkout's servers leaves the other's running.  No `db` fixture: this runs once, in `make test`'s
first pass.  It needs the server programs; without them it skips, except under CI.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "populate" / "deploy" / "local_db.sh"
BACKENDS = ("postgresql", "mariadb")
# The settings that would point the script at a configured server or at fixed ports.
CLEARED = ("DJ_HOST", "DJ_PORT", "DJ_USER", "DJ_PASS", "DJ_BACKEND", "PIPELINE_PG_PORT", "PIPELINE_MARIADB_PORT")


def _missing_programs() -> list[str]:
    missing = []
    if not glob.glob("/usr/lib/postgresql/*/bin/initdb") and not shutil.which("initdb"):
        missing.append("PostgreSQL (initdb)")
    if not (shutil.which("mariadbd") or os.path.exists("/usr/sbin/mariadbd")) or not shutil.which("mariadb-install-db"):
        missing.append("MariaDB (mariadbd, mariadb-install-db)")
    return missing


class Checkout:
    """A temporary checkout holding just the script, at populate/deploy/local_db.sh."""

    def __init__(self, root: Path):
        self.root = root
        (root / "populate" / "deploy").mkdir(parents=True)
        self.script = root / "populate" / "deploy" / "local_db.sh"
        shutil.copy2(SCRIPT, self.script)

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        environ = {k: v for k, v in os.environ.items() if k not in CLEARED}
        environ.update(env)
        return subprocess.run(
            ["bash", str(self.script), *args], cwd=self.root, env=environ, capture_output=True, text=True, timeout=240
        )

    def start(self, backend: str, **env: str) -> tuple[dict[str, str] | None, str]:
        """The settings the script printed for backend (None if it failed), and its messages."""
        done = self.run(backend, **env)
        if done.returncode != 0:
            log = self.root / ".local" / backend / "server.log"
            lines = log.read_text(errors="replace").splitlines() if log.is_file() else []
            errors = "".join(f"\n    server.log: {line}" for line in lines if "ERROR" in line)
            return None, f"exit {done.returncode}: {done.stderr.strip()}{errors}"
        words = done.stdout.split()
        assert words and words[0] == "export", done.stdout
        return dict(word.split("=", 1) for word in words[1:]), done.stderr.strip()

    def pid_files(self) -> list[Path]:
        return [self.root / ".local" / "postgresql" / "postmaster.pid", self.root / ".local" / "mariadb" / "mysqld.pid"]

    def data_dirs(self) -> list[str]:
        local = self.root / ".local"
        return [os.path.realpath(local / "postgresql"), os.path.realpath(local / "mariadb" / "db")]


def select_one(settings: dict[str, str]) -> int:
    """SELECT 1 through the printed settings, as DataJoint would connect."""
    host, port, user, password = (settings[k] for k in ("DJ_HOST", "DJ_PORT", "DJ_USER", "DJ_PASS"))
    if settings["DJ_BACKEND"] == "postgresql":
        import psycopg2

        conn = psycopg2.connect(
            host=host, port=int(port), user=user, password=password, dbname="postgres", connect_timeout=10
        )
    else:
        import pymysql

        conn = pymysql.connect(host=host, port=int(port), user=user, password=password, connect_timeout=10)
    try:
        cur = conn.cursor()
        cur.execute("SELECT 1")
        return cur.fetchone()[0]
    finally:
        conn.close()


def check(settings: dict[str, str] | None) -> str | None:
    """None when SELECT 1 answers through settings, else what went wrong."""
    if settings is None:
        return "no settings printed"
    try:
        return None if select_one(settings) == 1 else "SELECT 1 did not answer 1"
    except Exception as error:  # noqa: BLE001 - the error is the report
        return f"{type(error).__name__}: {str(error).strip()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _server_pids(checkout: Checkout) -> list[int]:
    """The server processes running from checkout's data folders (by pid file and working directory)."""
    pids = []
    for pid_file, data in zip(checkout.pid_files(), checkout.data_dirs()):
        try:
            pid = int(pid_file.read_text().split()[0])
            if _alive(pid) and os.path.realpath(f"/proc/{pid}/cwd") == data:
                pids.append(pid)
        except (OSError, ValueError, IndexError):
            pass
    return pids


def _teardown(checkout: Checkout) -> None:
    """Stop whatever checkout started, whether or not its script can, and remove its data."""
    try:
        checkout.run("stop")
    except subprocess.TimeoutExpired:
        pass
    for pid in _server_pids(checkout):
        os.kill(pid, signal.SIGTERM)
        for _ in range(60):
            if not _alive(pid):
                break
            time.sleep(0.5)
        else:
            os.kill(pid, signal.SIGKILL)
    link = checkout.root / ".local" / "postgresql"
    if link.is_symlink() and os.path.realpath(link).startswith("/var/tmp/pipeline-postgresql-"):
        shutil.rmtree(os.path.realpath(link), ignore_errors=True)


@pytest.fixture(scope="module")
def checkouts(tmp_path_factory):
    missing = _missing_programs()
    if missing:
        message = "database server programs not installed: " + ", ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(message + ": under CI this test must run, not skip")
        pytest.skip(message)
    base = tmp_path_factory.mktemp("checkouts")
    pair = (Checkout(base / "a"), Checkout(base / "b"))
    yield pair
    for checkout in pair:
        _teardown(checkout)


def test_two_checkouts_get_servers_of_their_own(checkouts):
    a, b = checkouts
    problems = []
    settings = {}
    for name, checkout in (("a", a), ("b", b)):
        for backend in BACKENDS:
            printed, messages = checkout.start(backend)
            settings[name, backend] = printed
            failure = check(printed)
            if failure:
                problems.append(f"checkout {name}, {backend}: {failure}\n    local_db.sh said: {messages}")
    assert not problems, "\n".join(problems)
    for backend in BACKENDS:
        assert settings["a", backend]["DJ_PORT"] != settings["b", backend]["DJ_PORT"], backend
        assert settings["a", backend]["DJ_PASS"] != settings["b", backend]["DJ_PASS"], backend
        # The recorded port is reused while the checkout's server lives.
        again, _ = a.start(backend)
        assert again == settings["a", backend]
        assert (a.root / ".local" / f"{backend}.port").read_text().strip() == settings["a", backend]["DJ_PORT"]

    a_pids = _server_pids(a)
    assert len(a_pids) == 2 and len(_server_pids(b)) == 2
    stopped = a.run("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert not any(_alive(pid) for pid in a_pids), "checkout a's servers still run after its stop"
    for backend in BACKENDS:
        assert check(settings["a", backend]) is not None, f"{backend}: checkout a's server still answers"
        assert check(settings["b", backend]) is None, f"{backend}: checkout b's server went with a's stop"


def test_taken_ports_and_clean(checkouts):
    a, b = checkouts
    a.run("stop")
    b_settings = {backend: b.start(backend)[0] for backend in BACKENDS}
    assert all(check(s) is None for s in b_settings.values())
    b_pg_port = b_settings["postgresql"]["DJ_PORT"]

    # An explicit port held by another checkout's server: one line naming the process and that checkout.
    refused = a.run("postgresql", PIPELINE_PG_PORT=b_pg_port)
    assert refused.returncode != 0 and refused.stdout == ""
    line = refused.stderr.strip().splitlines()[-1]
    assert f"port {b_pg_port}" in line and "pid " in line and os.path.realpath(b.root) in line, refused.stderr

    # A recorded port that another server took meanwhile: a checkout moves to a free one and says so.
    (a.root / ".local" / "mariadb.port").write_text(b_settings["mariadb"]["DJ_PORT"] + "\n")
    moved, messages = a.start("mariadb")
    assert check(moved) is None, messages
    assert moved["DJ_PORT"] != b_settings["mariadb"]["DJ_PORT"] and os.path.realpath(b.root) in messages

    # clean stops and deletes only this checkout's servers and data (the PostgreSQL data under /var/tmp too).
    a.start("postgresql")
    pg_data = os.path.realpath(a.root / ".local" / "postgresql")
    cleaned = a.run("clean")
    assert cleaned.returncode == 0, cleaned.stderr
    assert not os.path.exists(pg_data) and not (a.root / ".local" / "mariadb").exists()
    assert all(check(s) is None for s in b_settings.values()), "checkout b's servers went with a's clean"
