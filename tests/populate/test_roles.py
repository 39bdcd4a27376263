"""Database roles of the schema prefix: what admin, worker and member users may do."""

from __future__ import annotations

import importlib
import uuid

import pytest

from populate.cli.main import main

PASSWORD = "pw-" + uuid.uuid4().hex[:12]


def _run(capsys, *argv) -> str:
    code = main(list(argv))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


@pytest.fixture(scope="module")
def neighbour(db):
    """A schema of another team's prefix that begins with this one (``{prefix}_x``), made before the roles."""
    import datajoint as dj

    from schemas import db as settings

    name = f"{settings.prefix()}_x{getattr(settings, 'SEPARATOR', '_')}recordings"
    connection = dj.conn()
    q = connection.adapter.quote_identifier
    connection.query(connection.adapter.create_schema_sql(name))
    connection.query(f"CREATE TABLE {q(name)}.{q('animal')} (animal_id integer PRIMARY KEY)")
    yield name
    connection.query(f"DROP TABLE IF EXISTS {q(name)}.{q('animal')}")
    connection.query(connection.adapter.drop_schema_sql(name))


@pytest.fixture(scope="module")
def users(db, neighbour):
    """Roles for this run's prefix and one login user per role; dropped afterwards."""
    import datajoint as dj

    import schemas
    from populate.cli.main import main as cli
    from schemas import db as settings

    previous = dj.config.database.create_tables
    dj.config.database.create_tables = True
    try:
        operations = importlib.import_module("schemas.operations")
    finally:
        dj.config.database.create_tables = previous
    operations.declare_job_tables(schemas.computed_tables())
    connection = dj.conn()
    from populate.admin import roles

    shadowing = roles.public_grants(connection, settings.prefix())
    if shadowing:
        pytest.skip("this server lets every user write the test prefix's schemas: " + shadowing[0])
    # A loopback MariaDB has anonymous ''@localhost accounts that shadow 'name'@'%'.
    host = (
        "127.0.0.1"
        if connection.adapter.backend == "mysql" and dj.config["database.host"] in ("127.0.0.1", "localhost")
        else "%"
    )
    names = {role: f"{settings.prefix()}_u{role}" for role in ("admin", "worker", "member")}
    import os

    os.environ["ROLES_TEST_PASSWORD"] = PASSWORD
    assert cli(["roles", "create"]) == 0
    for role, name in names.items():
        assert (
            cli(["roles", "user", name, "--role", role, "--password-env", "ROLES_TEST_PASSWORD", "--host", host]) == 0
        )
    logins = {
        role: dj.Connection(dj.config["database.host"], name, PASSWORD, use_tls=False) for role, name in names.items()
    }
    yield logins
    for login in logins.values():
        login.close()
    for name in names.values():
        cli(["roles", "drop-user", name, "--host", host])
    cli(["roles", "drop"])
    if "operations" not in schemas.STAGES:
        name = settings.schema_name("operations")
        if name in dj.list_schemas():
            dj.Schema(name, create_schema=False, create_tables=False).drop(prompt=False)


def _table(connection, stage: str, table: str):
    import datajoint as dj

    from schemas import db as settings

    q = connection.adapter.quote_identifier
    return dj.FreeTable(connection, f"{q(settings.schema_name(stage))}.{q(table)}")


def _denied(action) -> str:
    with pytest.raises(Exception) as caught:
        action()
    message = str(caught.value).lower()
    assert any(word in message for word in ("denied", "privilege", "permission", "must be owner")), message
    return message


def test_dry_run_prints_the_grants_without_running_them(db, capsys):
    out = _run(capsys, "roles", "create", "--dry-run")
    from schemas import db as settings

    assert f"{settings.prefix()}_worker" in out and "GRANT" in out and out.count(";") >= 6


def test_member_reads_but_cannot_insert_or_delete(users):
    member = users["member"]
    animals = _table(member, "recordings", "animal")
    import datajoint as dj

    # reading is allowed: the member sees exactly what the admin connection sees (a denial raises)
    assert animals.to_dicts() == _table(dj.conn(), "recordings", "animal").to_dicts()
    _denied(lambda: animals.insert1(dict(animal_id=987654)))
    _denied(lambda: animals.delete_quick())
    _denied(lambda: _table(member, "stats", "__reliability").delete_quick())


def test_worker_writes_job_queues_but_cannot_change_schemas(users):
    worker = users["worker"]
    key = dict(animal_id=987654, session=1, scan_idx=1)
    jobs = _table(worker, "stats", "~~reliability")
    jobs.insert1(dict(key, status="pending", priority=5))
    assert len(jobs & key) == 1
    (jobs & key).delete_quick()
    _denied(lambda: _table(worker, "recordings", "animal").insert1(dict(animal_id=987654)))

    import datajoint as dj

    from schemas import db as settings

    _denied(lambda: worker.query(worker.adapter.drop_schema_sql(settings.schema_name("stats"))))
    assert settings.schema_name("stats") in dj.list_schemas()


def test_admin_creates_and_drops_a_schema_of_the_prefix(users):
    import datajoint as dj

    from schemas import db as settings

    admin = users["admin"]
    name = settings.schema_name("scratch")
    scratch = dj.Schema(name, connection=admin, create_schema=True, create_tables=True)

    @scratch
    class Note(dj.Manual):
        definition = """
        note: int32
        ---
        text: varchar(64)
        """

    Note.insert1(dict(note=1, text="admin wrote this"))
    assert len(Note()) == 1
    scratch.drop(prompt=False)
    assert name not in dj.list_schemas()


# ---------------------------------------------------------------------------------------------
# the commands each role runs, as separate processes logged in as that role's user


def _as(role: str, *argv, timeout=180):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from schemas import db as settings

    repo = Path(__file__).resolve().parents[2]
    env = dict(
        os.environ,
        DJ_USER=f"{settings.prefix()}_u{role}",
        DJ_PASS=PASSWORD,
        PYTHONPATH=os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")])),
    )
    return subprocess.run(
        [sys.executable, "-m", "populate", *argv], cwd=repo, env=env, capture_output=True, text=True, timeout=timeout
    )


def _failed_job():
    """One failed job in Reliability's queue (no data behind it: only the queue is touched)."""
    from schemas.stats import Reliability

    Reliability.jobs.delete_quick()
    key = dict(animal_id=987654, session=1, scan_idx=1)
    Reliability.jobs.insert1(
        dict(key, status="error", priority=5, error_message="boom", host="h", pid=1, connection_id=1)
    )
    return Reliability.jobs & key


def test_worker_role_runs_worker_scheduler_status_and_retry(users):
    for argv in (
        ("worker", "--idle-exit", "0", "--poll", "0.1", "--heartbeat", "0.2", "--no-refresh"),
        ("scheduler", "--once"),
        ("status",),
    ):
        out = _as("worker", *argv)
        assert out.returncode == 0, (argv, out.stderr[-2000:])
    job = _failed_job()
    out = _as("worker", "retry", "--table", "Reliability")
    assert out.returncode == 0 and "Reliability 1" in out.stdout, out.stderr[-2000:]
    assert job.to_dicts()[0]["status"] == "pending"
    job.delete_quick()


def test_member_role_reads_status_but_cannot_run_or_change_jobs(users):
    out = _as("member", "status")
    assert out.returncode == 0, out.stderr[-2000:]
    job = _failed_job()
    for argv in (("retry", "--table", "Reliability"), ("worker", "--idle-exit", "0", "--no-refresh")):
        out = _as("member", *argv)
        assert out.returncode == 1 and _is_denial(out.stderr), (argv, out.stderr[-2000:])
    assert job.to_dicts()[0]["status"] == "error"
    job.delete_quick()


def _is_denial(text: str) -> bool:
    return any(word in text.lower() for word in ("denied", "privilege", "permission", "must be owner"))


def test_admin_of_a_prefix_cannot_touch_a_longer_prefix_beginning_with_it(users, neighbour):
    import datajoint as dj

    admin = users["admin"]
    q = admin.adapter.quote_identifier
    _denied(lambda: admin.query(f"CREATE TABLE {q(neighbour)}.{q('intruder')} (x integer)"))
    _denied(lambda: admin.query(f"DELETE FROM {q(neighbour)}.{q('animal')}"))
    _denied(lambda: admin.query(admin.adapter.drop_schema_sql(neighbour)))
    assert neighbour in dj.list_schemas()
    if dj.conn().adapter.backend == "postgresql":
        owner = (
            dj.conn()
            .query("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = %s", args=(neighbour,))
            .fetchone()[0]
        )
        assert owner == dj.config["database.user"], f"roles create took {neighbour} over for {owner}"


# ---------------------------------------------------------------------------------------------
# `roles user` makes new logins only: every other existing name is refused with nothing changed


def _account(name: str) -> list:
    """Everything about role or account ``name`` that `roles user` could change ([] when there is none)."""
    import datajoint as dj

    connection = dj.conn()
    if connection.adapter.backend == "postgresql":
        queries = [
            "SELECT r.rolcanlogin, r.rolsuper, r.rolpassword, "
            "ARRAY(SELECT unnest(s.setconfig) FROM pg_db_role_setting s WHERE s.setrole = r.oid ORDER BY 1), "
            "ARRAY(SELECT g.rolname::text FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
            "WHERE m.member = r.oid ORDER BY 1) FROM pg_authid r WHERE r.rolname = %s"
        ]
    else:
        queries = [
            "SELECT Host, is_role, authentication_string FROM mysql.user WHERE User = %s ORDER BY Host",
            "SELECT Host, Role FROM mysql.roles_mapping WHERE User = %s ORDER BY Host, Role",
        ]
    rows = [row for query in queries for row in connection.query(query, args=(name,)).fetchall()]
    return [tuple(row) for row in rows]


@pytest.fixture(scope="module")
def strangers(users):
    """A group role and a superuser login outside the pipeline's names: {kind: name}."""
    import datajoint as dj

    from schemas import db as settings

    connection = dj.conn()
    team, boss = f"{settings.prefix()}_team", f"{settings.prefix()}_boss"
    if connection.adapter.backend == "postgresql":
        made = [f'CREATE ROLE "{team}" NOLOGIN', f"CREATE ROLE \"{boss}\" LOGIN SUPERUSER PASSWORD 'x'"]
        dropped = [f'DROP ROLE IF EXISTS "{name}"' for name in (team, boss)]
    else:
        made = [
            f"CREATE ROLE '{team}'",
            f"CREATE USER '{boss}'@'127.0.0.1' IDENTIFIED BY 'x'",
            f"GRANT ALL ON *.* TO '{boss}'@'127.0.0.1' WITH GRANT OPTION",
        ]
        dropped = [f"DROP ROLE IF EXISTS '{team}'", f"DROP USER IF EXISTS '{boss}'@'127.0.0.1'"]
    for statement in made:
        connection.query(statement)
    yield {"another group role": team, "another superuser": boss}
    for statement in dropped:
        connection.query(statement)


def _superuser() -> str:
    import datajoint as dj

    return dj.config["database.user"] if dj.conn().adapter.backend == "postgresql" else "root"


@pytest.mark.parametrize(
    "kind, role",
    [
        ("member group role", "admin"),
        ("admin group role", "admin"),
        ("group role of a prefix without roles", "member"),
        ("another group role", "member"),
        ("server superuser", "member"),
        ("another superuser", "worker"),
        ("login of another role", "admin"),
    ],
)
@pytest.mark.parametrize("dry_run", [False, True])
def test_roles_user_refuses_an_existing_role_and_changes_nothing(users, strangers, capsys, kind, role, dry_run):
    from populate.cli.main import main as cli
    from schemas import db as settings

    prefix = settings.prefix()
    name = (
        strangers.get(kind)
        or {
            "member group role": f"{prefix}_member",
            "admin group role": f"{prefix}_admin",
            "group role of a prefix without roles": f"{prefix}_none_admin",
            "server superuser": _superuser(),
            "login of another role": f"{prefix}_umember",
        }[kind]
    )
    before = _account(name)
    argv = ["roles", "user", name, "--role", role, "--password-env", "ROLES_TEST_PASSWORD"]
    for host in ("%", "127.0.0.1"):
        code = cli(argv + ["--host", host] + (["--dry-run"] if dry_run else []))
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert code == 1 and len(lines) == 1 and name in lines[0], (kind, captured.err)
        assert "ALTER" not in captured.out and "CREATE" not in captured.out, captured.out
    assert _account(name) == before, f"roles user changed the {kind} {name}"


def test_roles_user_sets_a_new_password_on_a_login_of_the_same_role(users, capsys, monkeypatch):
    import datajoint as dj

    from schemas import db as settings

    name = f"{settings.prefix()}_umember"
    host = "127.0.0.1" if dj.conn().adapter.backend == "mysql" else "%"
    before = _account(name)
    monkeypatch.setenv("ROLES_TEST_PASSWORD_2", PASSWORD + "-2")
    argv = ["roles", "user", name, "--role", "member", "--host", host, "--password-env"]
    try:
        _run(capsys, *argv, "ROLES_TEST_PASSWORD_2")
        dj.Connection(dj.config["database.host"], name, PASSWORD + "-2", use_tls=False).close()
        after = _account(name)
        assert after != before and len(after) == len(before), "the password was not changed, or more than it"
    finally:
        _run(capsys, *argv, "ROLES_TEST_PASSWORD")
    assert _roles_held(_account(name)) == _roles_held(before) != [], "the login's roles changed"


def _roles_held(account: list) -> list:
    """The roles in an :func:`_account` listing: PostgreSQL's last column, MariaDB's roles_mapping rows."""
    return [row[-1] for row in account] if len(account) == 1 else [row for row in account if len(row) == 2]


def test_a_failed_roles_change_leaves_nothing_behind(db):
    """`roles user` runs its statements as one change: a later statement failing undoes the first."""
    import datajoint as dj

    from populate.admin import roles
    from schemas import db as settings

    connection = dj.conn()
    name = f"{settings.prefix()}_half"
    if connection.adapter.backend == "postgresql":
        plan = [f"CREATE ROLE \"{name}\" LOGIN PASSWORD 'x'", f'GRANT "{name}_no_such_role" TO "{name}"']
        undo = None
    else:
        account = f"'{name}'@'127.0.0.1'"
        plan = [f"CREATE USER {account} IDENTIFIED BY 'x'", f"GRANT '{name}_no_such_role' TO {account}"]
        undo = {0: f"DROP USER IF EXISTS {account}"}
    with pytest.raises(Exception, match="no_such_role|GRANT"):
        roles.apply(connection, plan, undo=undo)
    assert _account(name) == [], "the first statement's account survived the failure"


@pytest.mark.parametrize("argv", [["bob\n"], ["bob", "--host", "%\n"], ["bob\nx"]])
def test_names_with_a_newline_are_refused(capsys, argv):
    from tests.populate.commands import run_cli

    code, out, err = run_cli(capsys, "roles", "user", *argv, "--role", "member", "--dry-run")
    assert code == 1 and ("user name" in err or "--host" in err), (out, err)
