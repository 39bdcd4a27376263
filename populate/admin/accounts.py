"""What an existing database account is, before ``roles user`` or ``roles create`` touches it.

``roles user NAME --role ROLE`` creates a new login, or sets a new password on a login that already
is a plain login holding exactly that role of the prefix (so the compose stack's set-up can run
again).  Every other existing name is refused, before any statement runs:

* a pipeline group role's name (``{prefix}_admin``, ``_worker``, ``_member`` of any prefix, existing
  or not: a login of that name would receive the group's grants when ``roles create`` runs);
* a superuser: PostgreSQL ``rolsuper``; MySQL/MariaDB ``root`` or an account holding global
  privileges;
* any other role or account: a group role (NOLOGIN, a MariaDB role, or one granted to others), a
  login with attributes or privileges of its own, or one holding other roles.

``roles create`` refuses a group-role name that exists as a login, whose grants would otherwise go
to whoever logs in with it.
"""

from __future__ import annotations

import re

GROUP_ROLE = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*_(?:admin|worker|member)")
"""The name of a pipeline group role of some prefix (matched whole)."""

_PG_ATTRIBUTES = ("rolcreaterole", "rolcreatedb", "rolreplication", "rolbypassrls")


def login_refusal(connection, name: str, host: str, group: str) -> str | None:
    """Why login ``name`` (``name@host`` on MySQL/MariaDB) may not be made or changed to hold ``group``
    only; None when it does not exist or already is a plain login holding exactly ``group``."""
    if GROUP_ROLE.fullmatch(name):
        return f"user name {name!r} is the name of a pipeline group role; choose a person's or service's name"
    if connection.adapter.backend == "postgresql":
        return _pg_refusal(connection, name, group)
    return _mysql_refusal(connection, name, host, group)


def _pg_refusal(connection, name: str, group: str) -> str | None:
    row = connection.query(
        "SELECT rolsuper, rolcanlogin, " + ", ".join(_PG_ATTRIBUTES) + ", "
        "ARRAY(SELECT g.rolname::text FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
        "      WHERE m.member = r.oid ORDER BY 1), "
        "EXISTS (SELECT 1 FROM pg_auth_members m WHERE m.roleid = r.oid) "
        "FROM pg_roles r WHERE r.rolname = %s",
        args=(name,),
    ).fetchone()
    if row is None:
        return None
    superuser, login, *attributes, holds, has_members = row
    if superuser:
        return f"user {name!r} is a superuser; `roles user` makes and updates pipeline logins only"
    if not login or has_members:
        return f"user {name!r} is an existing group role; `roles user` makes and updates pipeline logins only"
    special = [a[3:].upper() for a, on in zip(_PG_ATTRIBUTES, attributes) if on]
    if special or list(holds) != [group]:
        what = f"has {', '.join(special)}" if special else f"holds {', '.join(holds) or 'no role'}"
        return f"user {name!r} is an existing login of another kind ({what}, not exactly {group})"
    return None


def _mysql_refusal(connection, name: str, host: str, group: str) -> str | None:
    from schemas import compat

    if name == "root":
        return "user 'root' is the server's superuser; `roles user` makes and updates pipeline logins only"
    mariadb = compat.is_mariadb(connection)
    accounts = connection.query(
        "SELECT Host, " + ("is_role" if mariadb else "'N'") + " FROM mysql.user WHERE User = %s", args=(name,)
    ).fetchall()
    for account_host, is_role in accounts:
        account = f"'{name}'@'{account_host}'"
        if is_role == "Y" or _granted_to_others(connection, name, mariadb):
            return f"user {name!r} is an existing role; `roles user` makes and updates pipeline logins only"
        privileges = _direct_privileges(connection, account)
        if "SUPER" in privileges or "ALL PRIVILEGES" in privileges or "CREATE USER" in privileges:
            return f"user {account} is a superuser account; `roles user` makes and updates pipeline logins only"
        holds = _held_roles(connection, name, account_host, mariadb)
        if privileges or holds != [group]:
            what = f"has {', '.join(privileges)}" if privileges else f"holds {', '.join(holds) or 'no role'}"
            return f"user {account} is an existing login of another kind ({what}, not exactly {group})"
    return None


def _direct_privileges(connection, account: str) -> list[str]:
    """Privileges granted to ``account`` itself, global, per database or per table (USAGE aside)."""
    found: set[str] = set()
    for view in ("USER_PRIVILEGES", "SCHEMA_PRIVILEGES", "TABLE_PRIVILEGES"):
        rows = connection.query(
            f"SELECT PRIVILEGE_TYPE FROM information_schema.{view} WHERE GRANTEE = %s AND PRIVILEGE_TYPE <> 'USAGE'",
            args=(account,),
        ).fetchall()
        found.update(row[0] for row in rows)
    return sorted(found)


def _held_roles(connection, name: str, host: str, mariadb: bool) -> list[str]:
    if mariadb:
        query = "SELECT Role FROM mysql.roles_mapping WHERE User = %s AND Host = %s AND Role <> ''"
    else:
        query = "SELECT FROM_USER FROM mysql.role_edges WHERE TO_USER = %s AND TO_HOST = %s"
    return sorted(row[0] for row in connection.query(query, args=(name, host)).fetchall())


def _granted_to_others(connection, name: str, mariadb: bool) -> bool:
    if mariadb:
        query = "SELECT 1 FROM mysql.roles_mapping WHERE Role = %s LIMIT 1"
    else:
        query = "SELECT 1 FROM mysql.role_edges WHERE FROM_USER = %s LIMIT 1"
    return bool(connection.query(query, args=(name,)).fetchall())


def group_login_refusal(connection, groups: list[str]) -> str | None:
    """Why ``roles create`` may not make ``groups`` its group roles: one already exists as a login."""
    from schemas import compat

    for group in groups:
        if connection.adapter.backend == "postgresql":
            query = "SELECT 1 FROM pg_roles WHERE rolname = %s AND (rolcanlogin OR rolsuper)"
        elif compat.is_mariadb(connection):
            query = "SELECT 1 FROM mysql.user WHERE User = %s AND is_role = 'N'"
        else:  # a MySQL role is a locked account without a password
            query = "SELECT 1 FROM mysql.user WHERE User = %s AND (account_locked = 'N' OR authentication_string <> '')"
        if connection.query(query, args=(group,)).fetchall():
            return f"role {group} exists as a login; drop or rename that login before `roles create`"
    return None
