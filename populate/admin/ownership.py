"""Who may own and create the schemas of a prefix (PostgreSQL), so that one prefix cannot take over another's.

PostgreSQL lets any role holding ``CREATE`` on the database create a schema of any name, and the
owner of a schema may drop and replace every table in it.  Two guards keep a prefix's schemas with
its own admin role:

* :data:`GUARD_SQL`, an event trigger installed by ``roles create`` (as a superuser), refuses
  ``CREATE SCHEMA`` and ``ALTER SCHEMA`` (rename) of a schema named ``{p}__...`` by anyone but a
  superuser or a member of ``{p}_admin``; while ``{p}_admin`` does not exist, by anyone holding
  another prefix's admin role.
* :func:`foreign_owners`, run by ``setup`` and ``roles create``, refuses a prefix whose existing
  schemas are owned by someone else, naming the owner (a schema made before the trigger was
  installed, or by a superuser for someone else).

MySQL and MariaDB have no schema owners: what a login may create is what its grants say, and the
admin role of ``p`` holds privileges on the database pattern ``p\\_\\_%`` only, so it cannot create
another prefix's schema (``tests/populate/test_ownership.py`` shows both).
"""

from __future__ import annotations

PREFIX_REGEX = "[a-z][a-z0-9]*(?:_[a-z0-9]+)*"
"""A prefix (``schemas.db``'s rule) as a PostgreSQL regular expression."""

GUARD = "pipeline_schema_guard"

GUARD_LOCK = f"SELECT pg_advisory_xact_lock(hashtext('{GUARD}'))"
"""Serialises installing and removing the guard (concurrent ``CREATE OR REPLACE FUNCTION`` fails)."""

GUARD_SQL = [
    GUARD_LOCK,
    f"""CREATE OR REPLACE FUNCTION public.{GUARD}() RETURNS event_trigger LANGUAGE plpgsql
SET search_path = pg_catalog AS $guard$
DECLARE
  command record;
  target text;
  prefix text;
BEGIN
  IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
    RETURN;
  END IF;
  FOR command IN SELECT objid FROM pg_event_trigger_ddl_commands() WHERE object_type = 'schema' LOOP
    SELECT nspname INTO target FROM pg_namespace WHERE oid = command.objid;
    prefix := substring(target FROM '^({PREFIX_REGEX})__');
    CONTINUE WHEN prefix IS NULL;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = prefix || '_admin') THEN
      CONTINUE WHEN pg_has_role(current_user, prefix || '_admin', 'MEMBER');
      RAISE EXCEPTION 'schema % belongs to prefix %: only members of %_admin may create or rename it',
        quote_ident(target), prefix, prefix;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles g WHERE g.rolname ~ '^{PREFIX_REGEX}_admin$' AND NOT g.rolcanlogin
               AND pg_has_role(current_user, g.oid, 'MEMBER')) THEN
      RAISE EXCEPTION 'schema % belongs to prefix %: the admin of another prefix may not create or rename it',
        quote_ident(target), prefix;
    END IF;
  END LOOP;
END $guard$""",
    f"""DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = '{GUARD}') THEN
    CREATE EVENT TRIGGER {GUARD} ON ddl_command_end WHEN TAG IN ('CREATE SCHEMA', 'ALTER SCHEMA')
      EXECUTE FUNCTION public.{GUARD}();
  END IF;
END $$""",
]
"""Statements installing the event trigger (idempotent; a superuser's)."""

UNGUARD_SQL = f"""DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname ~ '^{PREFIX_REGEX}_admin$' AND NOT rolcanlogin) THEN
    DROP EVENT TRIGGER IF EXISTS {GUARD};
    DROP FUNCTION IF EXISTS public.{GUARD}();
  END IF;
END $$"""
"""Removes the trigger once no prefix has an admin role left (``roles drop`` of the last prefix)."""


def is_superuser(connection) -> bool:
    """Whether the connection's current role is a PostgreSQL superuser."""
    return bool(connection.query("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0])


def foreign_owners(connection, prefix: str, *, taking_over: bool = False) -> list[str]:
    """One message per schema of ``prefix`` whose owner is not the prefix's (PostgreSQL; [] elsewhere).

    A schema is the prefix's when a superuser or a member of ``{prefix}_admin`` owns it.  Before that
    role exists, ``setup`` (``taking_over`` False) accepts only the user running it as another owner,
    and ``roles create`` (``taking_over`` True, about to make ``{prefix}_admin`` the owner) anyone
    but a holder of another prefix's admin role.
    """
    from schemas import db

    if connection.adapter.backend != "postgresql":
        return []
    admin = f"{prefix}_admin"
    rows = connection.query(
        "SELECT n.nspname::text, o.rolname::text, o.rolsuper, a.oid IS NOT NULL, "
        "COALESCE(pg_has_role(n.nspowner, a.oid, 'MEMBER'), false), o.rolname = current_user, "
        "EXISTS (SELECT 1 FROM pg_roles g WHERE g.rolname ~ %s AND g.rolname <> %s AND NOT g.rolcanlogin "
        "        AND pg_has_role(n.nspowner, g.oid, 'MEMBER')) "
        "FROM pg_namespace n JOIN pg_roles o ON o.oid = n.nspowner LEFT JOIN pg_roles a ON a.rolname = %s "
        "ORDER BY 1",
        args=(f"^{PREFIX_REGEX}_admin$", admin, admin),
    ).fetchall()
    messages = []
    for name, owner, superuser, admin_exists, member, runner, other_admin in rows:
        if not db.is_prefix_schema(name, prefix) or superuser or member:
            continue
        if taking_over and not other_admin:
            continue
        if not taking_over and not admin_exists and runner and not other_admin:
            continue
        messages.append(
            f"schema {name} of prefix {prefix} is owned by {owner}, not by {admin} or a member of it; if it is "
            f'yours, a superuser may run ALTER SCHEMA "{name}" OWNER TO "{admin}", else drop it'
        )
    return messages


def check_setup(connection, prefix: str) -> None:
    """Refuse (:class:`PermissionError`, naming the schema and its owner) a prefix with a foreign schema."""
    problems = foreign_owners(connection, prefix)
    if problems:
        raise PermissionError(problems[0] + (f" ({len(problems) - 1} more)" if len(problems) > 1 else ""))
