"""One prefix's admin cannot take over another prefix's schemas (docs/integrity.md, "Prefix ownership and roles").

Two prefixes of this run, ``a`` with its roles and an admin login, ``b`` without: the ``a`` admin
tries to create (and, on PostgreSQL, rename a schema into) ``b``'s namespace; a ``b`` schema owned
by ``a``'s admin role (made by a superuser, as before the guard existed) stops ``setup`` and
``roles create`` of ``b``.  MySQL and MariaDB have no schema owners: the grants alone refuse.
"""

from __future__ import annotations

import uuid

import pytest

from tests.populate.commands import child_env, cli

PASSWORD = "pw-" + uuid.uuid4().hex[:12]


def _host(connection) -> str:
    """The account host of a login made here: a loopback MariaDB has ''@localhost accounts shadowing '%'."""
    import datajoint as dj

    loopback = dj.config["database.host"] in ("127.0.0.1", "localhost")
    return "127.0.0.1" if connection.adapter.backend == "mysql" and loopback else "%"


def _schemas(prefix: str) -> list[str]:
    import datajoint as dj

    from schemas import db

    return sorted(name for name in dj.list_schemas() if db.is_prefix_schema(name, prefix))


def _drop_schemas(prefix: str) -> None:
    import datajoint as dj

    connection = dj.conn()
    for name in _schemas(prefix):
        if connection.adapter.backend == "postgresql":
            connection.query(f'DROP SCHEMA "{name}" CASCADE')
        else:
            connection.query(f"DROP DATABASE `{name}`")


@pytest.fixture(scope="module")
def prefixes(db):
    """(prefix a, prefix b, a login holding a's admin role); everything dropped afterwards."""
    import datajoint as dj

    from schemas import db as settings

    a, b = f"{settings.prefix()}_oa", f"{settings.prefix()}_ob"
    env = child_env(PIPELINE_PREFIX=a, LOGIN_PASSWORD=PASSWORD)
    user, host = f"{a}_u", _host(dj.conn())
    try:
        for argv in (
            ("roles", "create"),
            ("roles", "user", user, "--role", "admin", "--password-env", "LOGIN_PASSWORD", "--host", host),
        ):
            out = cli(*argv, env=env)
            assert out.returncode == 0, (argv, out.stderr)
        login = dj.Connection(
            dj.config["database.host"], user, PASSWORD, port=dj.config["database.port"], use_tls=False
        )
        yield a, b, login
        login.close()
    finally:
        for prefix in (a, b):
            _drop_schemas(prefix)
        cli("roles", "drop-user", user, "--host", host, env=env)
        cli("roles", "drop", env=env)


def test_an_admin_cannot_create_or_rename_a_schema_into_another_prefix(prefixes):
    a, b, login = prefixes
    q = login.adapter.quote_identifier
    with pytest.raises(Exception) as caught:
        login.query(login.adapter.create_schema_sql(f"{b}__recordings"))
    message = str(caught.value).lower()
    assert f"{b}__recordings" in message or "denied" in message, message
    assert _schemas(b) == []
    if login.adapter.backend == "postgresql":
        # an own schema renamed into b's namespace is refused as well
        login.query(login.adapter.create_schema_sql(f"{a}__scratch"))
        with pytest.raises(Exception, match=f"belongs to prefix {b}"):
            login.query(f"ALTER SCHEMA {q(a + '__scratch')} RENAME TO {q(b + '__recordings')}")
        assert _schemas(b) == [] and _schemas(a) == [f"{a}__scratch"]
        login.query(login.adapter.drop_schema_sql(f"{a}__scratch"))


def _pg_only(connection) -> None:
    if connection.adapter.backend != "postgresql":
        pytest.skip("MySQL/MariaDB schemas have no owner; the grants refuse (test above)")


def test_setup_and_roles_create_refuse_a_prefix_whose_schema_another_admin_owns(prefixes):
    import datajoint as dj

    a, b, _ = prefixes
    connection = dj.conn()
    _pg_only(connection)
    squatted = f"{b}__recordings"
    # What the `a` admin could do before the guard was installed (a superuser bypasses the guard).
    connection.query(f'CREATE SCHEMA "{squatted}" AUTHORIZATION "{a}_admin"')
    try:
        for argv in (("setup",), ("roles", "create")):
            out = cli(*argv, env=child_env(PIPELINE_PREFIX=b))
            lines = out.stderr.strip().splitlines()
            assert out.returncode == 1 and len(lines) == 1, (argv, out.stderr)
            assert squatted in lines[0] and f"owned by {a}_admin" in lines[0], lines
        assert _schemas(b) == [squatted], "setup declared other schemas of b"
        tables = connection.query("SELECT count(*) FROM pg_tables WHERE schemaname = %s", args=(squatted,))
        assert tables.fetchone()[0] == 0, "setup declared tables in the squatted schema"
        roles = connection.query("SELECT rolname FROM pg_roles WHERE rolname LIKE %s", args=(f"{b}\\_%",))
        assert roles.fetchall() == [], "roles create made roles of b"
    finally:
        connection.query(f'DROP SCHEMA "{squatted}" CASCADE')


def test_schemas_owned_by_the_prefixs_admin_or_a_superuser_are_its_own(prefixes):
    import datajoint as dj

    from populate.admin import ownership
    from schemas import db as settings

    a, _, login = prefixes
    _pg_only(login)
    login.query(login.adapter.create_schema_sql(f"{a}__scratch"))
    try:
        assert ownership.foreign_owners(login, a) == []  # owned by a_admin: the admin login's role
        assert ownership.foreign_owners(dj.conn(), a) == []  # a superuser's setup accepts it too
    finally:
        login.query(login.adapter.drop_schema_sql(f"{a}__scratch"))
    # this run's schemas, made by the test's superuser before any role existed
    assert ownership.foreign_owners(dj.conn(), settings.prefix()) == []
