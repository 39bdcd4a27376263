"""Database roles scoped to the schema prefix, for MySQL/MariaDB and PostgreSQL.

Three roles per prefix ``p`` (``p_admin``, ``p_worker``, ``p_member``), described once in
:data:`SPECS` and rendered into each backend's grants:

admin
    schema changes: creates, alters and drops the ``p__*`` schemas and their tables; runs ``setup``.
worker
    reads every ``p__*`` table; inserts, updates and deletes in the computed tables (Imported,
    Computed and their parts), their job queues (``~~name``) and ``p__operations`` (heartbeats,
    retry counts).  Cannot change any table's structure or drop a schema.
member
    reads every ``p__*`` table (notebooks, analysis).

The schemas of ``p`` are exactly those named ``p__<stage>``: a prefix never contains ``__``, so
the admin of ``v1`` holds nothing on ``v1_test__*``.

MySQL/MariaDB grant on the database pattern ``p\\_\\_%`` (so future schemas are covered) plus
table-level grants on the existing computed and job tables (MySQL cannot pattern-match table
names): rerun ``roles create`` after ``setup`` adds tables.  Admin and worker also get
``PROCESS`` so the scheduler sees every worker's connection and ``gc`` every open transaction.

PostgreSQL has no schema-name patterns: ``roles create`` grants on the existing ``p__*`` schemas,
makes ``p_admin`` their owner (only owners alter or drop), and sets default privileges for
tables ``p_admin`` creates later.  Admin login users get ``ALTER ROLE ... SET role = p_admin`` so
the tables they declare are owned by the role, not by the person.  ``CREATE`` on the database lets
admins create schemas; an event trigger (:mod:`populate.admin.ownership`) refuses them any schema
named after another prefix, and ``setup`` refuses a prefix whose schemas someone else owns.

``roles user`` makes new logins only (or sets the password of a login already holding exactly that
role); :mod:`populate.admin.accounts` says which existing names it refuses.  On PostgreSQL every
command runs in one transaction; MySQL and MariaDB commit each account statement at once, so a
failed ``roles user`` drops the account it had just created.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass

log = logging.getLogger(__name__)

ROLES = ("admin", "worker", "member")
_USER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
_HOST = re.compile(r"[A-Za-z0-9_.%:-]{1,255}")
"""Matched whole (``fullmatch``): ``$`` would accept a trailing newline."""


@dataclass(frozen=True)
class RoleSpec:
    """What one role may do in the prefix's schemas; both backends' grants are rendered from this."""

    owns: bool = False
    """creates, alters and drops the prefix's schemas and tables (all privileges)"""
    reads: bool = True
    """SELECT on every table of the prefix"""
    writes_computed: bool = False
    """INSERT, UPDATE, DELETE on computed tables and their parts and job queues (see :func:`is_worker_writable`)"""
    writes_stages: tuple[str, ...] = ()
    """stages (schemas) in whose every table it may INSERT, UPDATE, DELETE"""
    sees_connections: bool = False
    """sees every connection and transaction (PROCESS / pg_read_all_stats): scheduler, status, gc"""


SPECS = {
    "admin": RoleSpec(owns=True, sees_connections=True),
    "worker": RoleSpec(writes_computed=True, writes_stages=("operations", "checkpoints"), sees_connections=True),
    "member": RoleSpec(),
}
"""The one description of the roles."""

_WRITE = ("INSERT", "UPDATE", "DELETE")


class RolesError(RuntimeError):
    """Roles or users cannot be created as asked."""


def role_names(prefix: str) -> dict[str, str]:
    return {role: f"{prefix}_{role}" for role in ROLES}


def is_worker_writable(table_name: str) -> bool:
    """Computed and Imported tables and their parts start with '_'; job queues with '~~'."""
    return table_name.startswith("_") or table_name.startswith("~~")


def _connection():
    import datajoint as dj

    from schemas import db

    db.configure()
    return dj.conn()


def _prefix_schemas(connection, prefix: str) -> list[str]:
    import datajoint as dj

    from schemas import db

    return sorted(name for name in dj.list_schemas(connection) if db.is_prefix_schema(name, prefix))


def _stage_schema(prefix: str, stage: str) -> str:
    from schemas import db

    return f"{prefix}{db.SEPARATOR}{stage}"


def _tables(connection, schema: str) -> list[str]:
    if connection.adapter.backend == "postgresql":
        rows = connection.query(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY tablename", args=(schema,)
        ).fetchall()
    else:
        rows = connection.query(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY table_name",
            args=(schema,),
        ).fetchall()
    return [row[0] for row in rows]


# ---------------------------------------------------------------------------------------------
# MySQL / MariaDB


def mysql_pattern(prefix: str) -> str:
    # `_` and `%` are wildcards in database-level grants; the prefix's and separator's underscores are literal.
    from schemas import db

    return "`" + _mysql_literal(prefix + db.SEPARATOR) + "%`"


def _mysql_literal(name: str) -> str:
    """A database name in a grant matching that database only (``_`` and ``%`` are wildcards there)."""
    return name.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%")


def mysql_plan(prefix: str, schemas: dict[str, list[str]]) -> list[str]:
    """The statements creating the roles of ``prefix``; ``schemas`` maps each of its schemas to its tables.

    A grant on an exact database shadows the pattern grant for that database (MySQL and MariaDB
    use the most specific ``mysql.db`` row alone), so an exact-database grant repeats what the
    pattern gives.
    """
    names = role_names(prefix)
    pattern = mysql_pattern(prefix)
    plan = [f"CREATE ROLE IF NOT EXISTS '{names[r]}'" for r in ROLES]
    for role in ROLES:
        spec, account = SPECS[role], f"'{names[role]}'"
        everywhere = ["ALL PRIVILEGES"] if spec.owns else (["SELECT"] if spec.reads else [])
        if everywhere:
            plan.append(f"GRANT {', '.join(everywhere)} ON {pattern}.* TO {account}")
        for stage in spec.writes_stages:
            privileges = [p for p in everywhere if p != "ALL PRIVILEGES"] + list(_WRITE)
            plan.append(
                f"GRANT {', '.join(privileges)} ON `{_mysql_literal(_stage_schema(prefix, stage))}`.* TO {account}"
            )
        if spec.sees_connections:
            plan.append(f"GRANT PROCESS ON *.* TO {account}")
        if spec.writes_computed and not spec.owns:
            for schema, tables in sorted(schemas.items()):
                for table in tables:
                    if is_worker_writable(table):
                        plan.append(f"GRANT {', '.join(_WRITE)} ON `{schema}`.`{table}` TO {account}")
    return plan


def _is_mariadb(connection) -> bool:
    from schemas import compat

    return compat.is_mariadb(connection)


# ---------------------------------------------------------------------------------------------
# PostgreSQL


def _pg(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def postgresql_plan(
    prefix: str, schemas: dict[str, list[str]], database: str, types: dict[str, list[str]]
) -> list[str]:
    """The statements creating the roles of ``prefix`` on PostgreSQL database ``database``.

    ``schemas`` maps each schema of the prefix to its tables, ``types`` to its enum types.  The
    owning role becomes the owner of the schemas, their tables and types (only owners alter or drop).
    """
    names = role_names(prefix)
    quoted = {r: _pg(names[r]) for r in ROLES}
    owner = next(r for r in ROLES if SPECS[r].owns)
    plan = [
        f"DO $$ BEGIN CREATE ROLE {quoted[r]} NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$" for r in ROLES
    ]
    plan.append(f"GRANT CONNECT, CREATE ON DATABASE {_pg(database)} TO {quoted[owner]}")
    others = [r for r in ROLES if r != owner]
    plan.append(f"GRANT CONNECT ON DATABASE {_pg(database)} TO {', '.join(quoted[r] for r in others)}")
    watchers = [quoted[r] for r in ROLES if SPECS[r].sees_connections]
    if watchers:
        plan.append(f"GRANT pg_read_all_stats TO {', '.join(watchers)}")
    readers = ", ".join(quoted[r] for r in others if SPECS[r].reads)
    writers = [r for r in others if SPECS[r].writes_computed or SPECS[r].writes_stages]
    for schema, tables in sorted(schemas.items()):
        s = _pg(schema)
        plan.append(f"ALTER SCHEMA {s} OWNER TO {quoted[owner]}")
        plan += [f"ALTER TABLE {s}.{_pg(t)} OWNER TO {quoted[owner]}" for t in tables]
        plan += [f"ALTER TYPE {s}.{_pg(t)} OWNER TO {quoted[owner]}" for t in types.get(schema, ())]
        if readers:
            plan += [
                f"GRANT USAGE ON SCHEMA {s} TO {readers}",
                # REFERENCES too: DataJoint reads primary keys from information_schema.table_constraints,
                # which hides a table from a user holding nothing but SELECT on it.
                f"GRANT SELECT, REFERENCES ON ALL TABLES IN SCHEMA {s} TO {readers}",
                f"ALTER DEFAULT PRIVILEGES FOR ROLE {quoted[owner]} IN SCHEMA {s} GRANT SELECT, REFERENCES ON TABLES "
                f"TO {readers}",
            ]
        for role in writers:
            spec, who = SPECS[role], quoted[role]
            plan.append(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {s} TO {who}")
            if any(schema == _stage_schema(prefix, stage) for stage in spec.writes_stages):
                plan += [
                    f"GRANT {', '.join(_WRITE)} ON ALL TABLES IN SCHEMA {s} TO {who}",
                    f"ALTER DEFAULT PRIVILEGES FOR ROLE {quoted[owner]} IN SCHEMA {s} GRANT {', '.join(_WRITE)} "
                    f"ON TABLES TO {who}",
                ]
            elif spec.writes_computed:
                plan += [f"GRANT {', '.join(_WRITE)} ON {s}.{_pg(t)} TO {who}" for t in tables if is_worker_writable(t)]
    return plan


def _pg_types(connection, schema: str) -> list[str]:
    rows = connection.query(
        "SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
        "WHERE n.nspname = %s AND t.typtype = 'e' ORDER BY t.typname",
        args=(schema,),
    ).fetchall()
    return [row[0] for row in rows]


# ---------------------------------------------------------------------------------------------
# commands


def apply(connection, plan: list[str], shown: list[str] | None = None, undo: dict[int, str] | None = None) -> None:
    """Run ``plan`` as one change: in one transaction on PostgreSQL; on MySQL/MariaDB, which commit
    account statements at once, a failure runs ``undo[i]`` for each statement ``i`` that had
    succeeded, last first, then re-raises.  ``shown`` is what the debug log says (passwords masked)."""
    shown = shown or plan
    postgresql = connection.adapter.backend == "postgresql"
    if postgresql:
        connection.start_transaction()
    done: list[int] = []
    try:
        for i, (statement, text) in enumerate(zip(plan, shown)):
            log.debug("%s", text)
            # The drivers interpolate parameters even without any: a literal % must be doubled.
            connection.query(statement.replace("%", "%%"))
            done.append(i)
    except BaseException:
        if postgresql:
            _quietly(connection.cancel_transaction)  # a lost connection has rolled back already
        for i in reversed(done):
            if undo and i in undo:
                _quietly(connection.query, undo[i].replace("%", "%%"))
        raise
    if postgresql:
        connection.commit_transaction()


def _quietly(action, *args) -> None:
    """``action(*args)``, logging instead of raising: while undoing, the original error is the one to report."""
    try:
        action(*args)
    except Exception as err:
        log.warning("while undoing a failed change: %s", " ".join(str(err).split()))


def _run(connection, plan: list[str], dry_run: bool, shown: list[str] | None = None, undo=None) -> list[str]:
    if dry_run:
        return [statement + ";" for statement in shown or plan]
    apply(connection, plan, shown, undo)
    return [f"{len(plan)} statements executed"]


def create(dry_run: bool = False) -> list[str]:
    """Create the prefix's roles and grant them their privileges; return the SQL (dry run) or a summary.

    Refuses (:class:`RolesError`) when a group role's name is taken by a login, or a schema of the
    prefix is owned by another prefix's admin (:func:`populate.admin.ownership.foreign_owners`).
    """
    from populate.admin import accounts, ownership
    from schemas import db

    connection = _connection()
    prefix = db.prefix()
    problem = accounts.group_login_refusal(connection, list(role_names(prefix).values()))
    problem = problem or next(iter(ownership.foreign_owners(connection, prefix, taking_over=True)), None)
    if problem:
        raise RolesError(problem)
    schemas = {name: _tables(connection, name) for name in _prefix_schemas(connection, prefix)}
    warnings = []
    if connection.adapter.backend == "postgresql":
        database = connection.query("SELECT current_database()").fetchone()[0]
        types = {name: _pg_types(connection, name) for name in schemas}
        plan = postgresql_plan(prefix, schemas, database, types)
        if ownership.is_superuser(connection):
            plan = ownership.GUARD_SQL + plan
        else:
            warnings.append(
                "the schema-name guard (an event trigger) needs a superuser: not installed, so admins of other "
                "prefixes may create this prefix's schemas; `setup` still refuses schemas they own"
            )
    else:
        plan = mysql_plan(prefix, schemas)
    lines = _run(connection, plan, dry_run)
    if not dry_run:
        lines.append(
            f"roles {', '.join(role_names(prefix).values())} cover {len(schemas)} schema(s) of prefix {prefix}"
        )
    return lines + [f"warning: {w}" for w in warnings + public_grants(connection, prefix)]


def public_grants(connection, prefix: str) -> list[str]:
    """Database-level grants to every user (anonymous or PUBLIC) that cover the prefix's schemas.

    MariaDB's default install grants all privileges on ``test`` and ``test\\_%`` to everyone, so
    with a ``test_...`` prefix any user may write; the roles then restrict nothing.
    """
    if connection.adapter.backend == "postgresql":
        return []
    try:
        rows = connection.query(
            "SELECT Db, User FROM mysql.db WHERE User IN ('', 'PUBLIC') AND %s LIKE Db",
            args=(_stage_schema(prefix, "x"),),
        ).fetchall()
    except Exception:  # mysql.db is not readable without privileges; nothing to say then
        return []
    return [
        f"database pattern {db!r} is granted to {'PUBLIC' if user else 'anonymous users'}: every user may write "
        f"schemas of prefix {prefix}; remove that grant (mariadb-install-db --skip-test-db) or use another prefix"
        for db, user in rows
    ]


def drop(dry_run: bool = False) -> list[str]:
    """Drop the prefix's roles (their members lose the privileges); on PostgreSQL, once no prefix has
    an admin role left, the schema-name guard too."""
    from populate.admin import ownership
    from schemas import db

    connection = _connection()
    names = role_names(db.prefix())
    if connection.adapter.backend == "postgresql":
        plan = []
        for name in names.values():
            exists = connection.query("SELECT 1 FROM pg_roles WHERE rolname = %s", args=(name,)).fetchall()
            if exists or dry_run:
                # Objects the role owns go to the caller; then its grants go, then the role.
                plan += [
                    f"REASSIGN OWNED BY {_pg(name)} TO CURRENT_USER",
                    f"DROP OWNED BY {_pg(name)}",
                    f"DROP ROLE IF EXISTS {_pg(name)}",
                ]
        if plan and not dry_run and ownership.is_superuser(connection):
            plan += [ownership.GUARD_LOCK, ownership.UNGUARD_SQL]
    else:
        plan = [f"DROP ROLE IF EXISTS '{name}'" for name in names.values()]
    return _run(connection, plan, dry_run)


def _check_user(name: str, host: str) -> None:
    if not _USER.fullmatch(name):
        raise RolesError(f"user name {name!r}: use letters, digits, '_', '.', '-' (at most 32), starting with a letter")
    if not _HOST.fullmatch(host):
        raise RolesError(f"--host {host!r} is not a MySQL account host (e.g. %, 10.0.%, 127.0.0.1)")


def create_user(name: str, role: str, password: str | None = None, host: str = "%", dry_run: bool = False) -> list[str]:
    """Create login user ``name`` holding role ``role`` of the prefix, or set a new password on a login
    that holds exactly that role already; any other existing name is refused
    (:func:`populate.admin.accounts.login_refusal`) before anything changes."""
    from populate.admin import accounts
    from schemas import db

    if role not in ROLES:
        raise RolesError(f"role {role!r}: choose one of {', '.join(ROLES)}")
    _check_user(name, host)
    connection = _connection()
    group = role_names(db.prefix())[role]
    problem = accounts.login_refusal(connection, name, host, group)
    if problem:
        raise RolesError(problem)
    generated = password is None
    password = password or secrets.token_urlsafe(18)
    if connection.adapter.backend != "postgresql":  # PostgreSQL strings keep backslashes as they are
        password_sql = password.replace("\\", "\\\\")
    else:
        password_sql = password
    literal = "'" + password_sql.replace("'", "''") + "'"
    if connection.adapter.backend == "postgresql":
        exists, template, undo = _pg_user_plan(connection, name, role, group)
    else:
        exists, template, undo = _mysql_user_plan(connection, name, host, group)
    if not exists and not dry_run:
        raise RolesError(f"role {group} does not exist; run `python -m populate roles create` first")
    plan = [s.format(pw=literal) for s in template]
    shown = [s.format(pw="'********'") for s in template]
    lines = _run(connection, plan, dry_run, shown, undo)
    if not dry_run:
        lines.append(f"user {name} holds role {group}" + (f"; password: {password}" if generated else ""))
    return lines


def _pg_user_plan(connection, name: str, role: str, group: str):
    """(whether ``group`` exists, the statements with a ``{pw}`` field, no undo: one transaction)."""
    exists = connection.query("SELECT 1 FROM pg_roles WHERE rolname = %s", args=(group,)).fetchall()
    known = connection.query("SELECT 1 FROM pg_roles WHERE rolname = %s", args=(name,)).fetchall()
    template = [
        f"ALTER ROLE {_pg(name)} PASSWORD {{pw}}" if known else f"CREATE ROLE {_pg(name)} LOGIN PASSWORD {{pw}}",
        f"GRANT {_pg(group)} TO {_pg(name)}",
    ]
    if role == "admin":
        template.append(f"ALTER ROLE {_pg(name)} SET role = {_pg(group)}")
    return bool(exists), template, None


def _mysql_user_plan(connection, name: str, host: str, group: str):
    """(whether ``group`` exists, the statements with a ``{pw}`` field, the undo of a new account).

    A new account is created first and dropped again if a later statement fails; an existing one
    (holding ``group`` already) gets its new password last, after the statements that change nothing.
    """
    mariadb = _is_mariadb(connection)
    exists = (
        connection.query("SELECT 1 FROM mysql.user WHERE user = %s AND is_role = 'Y'", args=(group,)).fetchall()
        if mariadb
        else connection.query("SELECT 1 FROM mysql.user WHERE user = %s AND host = '%%'", args=(group,)).fetchall()
    )
    known = connection.query("SELECT 1 FROM mysql.user WHERE user = %s AND host = %s", args=(name, host)).fetchall()
    account = f"'{name}'@'{host}'"
    grants = [f"GRANT '{group}' TO {account}", f"SET DEFAULT ROLE '{group}' {'FOR' if mariadb else 'TO'} {account}"]
    if known:
        return bool(exists), grants + [f"ALTER USER {account} IDENTIFIED BY {{pw}}"], None
    return bool(exists), [f"CREATE USER {account} IDENTIFIED BY {{pw}}", *grants], {0: f"DROP USER IF EXISTS {account}"}


def drop_user(name: str, host: str = "%", dry_run: bool = False) -> list[str]:
    """Drop login ``name``: only a plain login holding one role of the prefix (or none that exists)."""
    from populate.admin import accounts
    from schemas import db

    _check_user(name, host)
    connection = _connection()
    problems = [accounts.login_refusal(connection, name, host, group) for group in role_names(db.prefix()).values()]
    if all(problems):
        raise RolesError(str(problems[0]).replace("`roles user` makes and updates", "`roles drop-user` drops"))
    if connection.adapter.backend == "postgresql":
        plan = [f"DROP ROLE IF EXISTS {_pg(name)}"]
    else:
        plan = [f"DROP USER IF EXISTS '{name}'@'{host}'"]
    return _run(connection, plan, dry_run)
