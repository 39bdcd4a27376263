"""The job queues of the computed tables: which tables, filling them, keys, and ``ignore``.

DataJoint 2.x keeps one queue per auto-populated table (``~~name`` in the table's schema) with a
row per key: ``pending`` -> ``reserved`` (by a worker's connection, host and pid) -> deleted on
success (``jobs.keep_completed`` false) or ``error`` (message and traceback).  This module finds
the queues (:func:`queue`, :func:`select_tables`), fills them (:func:`refresh`), parses and prints
job keys, and tells transient failures from real ones (:func:`transient_reason`).  The SQL that
moves rows between states is in :mod:`populate.work.reservation`; the ``status`` report in
:mod:`populate.work.status`.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import re
from datetime import datetime

from populate.plain import plain

log = logging.getLogger(__name__)

TRANSIENT = {
    "interrupted": r"^(SystemExit|KeyboardInterrupt|StopRequested)\b|SIGTERM received",
    "deadlock": r"deadlock found when trying to get lock|deadlock detected|\(1213\b",
    "lock wait timeout": r"lock wait timeout exceeded|canceling statement due to lock timeout|\(1205\b",
    "serialization failure": r"could not serialize access",
    "lost connection": (
        r"LostConnectionError|lost connection to (mysql |mariadb )?server|server has gone away|"
        r"server closed the connection unexpectedly|connection already closed|"
        r"terminating connection due to administrator command|connection was lost during a transaction|"
        r"server connection lost|\((2003|2006|2013|4151)\b|can't connect to (mysql |mariadb )?server|"
        r"connection refused|could not connect to server|is not permitted to log in|account is locked|"
        r"the database system is (starting up|shutting down)|database was unreachable"
    ),
}
"""Error messages that say the job was cut short, not that its computation is wrong (regexes)."""

_TRANSIENT = {name: re.compile(pattern, re.IGNORECASE) for name, pattern in TRANSIENT.items()}


class QueueError(RuntimeError):
    """A job queue cannot be used as asked (missing table, unknown name, bad key)."""


def transient_reason(message: str) -> str | None:
    """The kind of transient failure an error message reports (a key of :data:`TRANSIENT`), else None."""
    for name, pattern in _TRANSIENT.items():
        if pattern.search(message or ""):
            return name
    return None


# ---------------------------------------------------------------------------------------------
# tables and their queues


def select_tables(names: list[str] | None = None, modules: list[str] | None = None) -> list:
    """Auto-populated table classes, upstream first.

    ``modules`` (dotted module names) replaces the pipeline's stage modules, for extensions and
    tests; ``names`` (class names) restricts the selection.
    """
    import schemas

    if modules:
        tables = []
        for name in modules:
            try:
                module = importlib.import_module(name)
            except ImportError as err:
                raise QueueError(f"--schema-module {name}: cannot import it ({err})") from err
            found = schemas.module_tables(module)
            if not found:
                raise QueueError(f"--schema-module {name} defines no Computed or Imported table")
            tables += [t for t in found if t not in tables]
    else:
        tables = schemas.computed_tables()
    if not names:
        return tables
    by_name = {table.__name__: table for table in tables}
    unknown = sorted(set(names) - set(by_name))
    if unknown:
        raise QueueError(f"unknown table(s) {', '.join(unknown)}; known: {', '.join(by_name) or 'none'}")
    return [table for table in tables if table.__name__ in names]


def queue(table):
    """The job queue of ``table`` without declaring it (workers must not create tables)."""
    from datajoint.jobs import Job

    jobs = Job(table())
    if not jobs.is_declared:
        raise QueueError(
            f"the job table of {table.__name__} ({jobs.full_table_name}) does not exist; "
            "run `python -m populate setup` first"
        )
    return jobs


def due(jobs, limit: int | None = None) -> list[dict]:
    """Keys of the pending jobs whose scheduled time has come, most urgent first (priority, then age)."""
    q = jobs.adapter.quote_identifier
    return (jobs & f"{q('status')}='pending'" & f"{q('scheduled_time')} <= CURRENT_TIMESTAMP(3)").keys(
        order_by="priority ASC, scheduled_time ASC", limit=limit
    )


def refresh(jobs) -> int:
    """Fill one queue from its table's key source; return the number of keys added.

    A key enters the queue only once its inputs are in place (:mod:`schemas.readiness`), and a
    pending job whose key has left the key source (an input deleted meanwhile) is dropped, whatever
    its age, so that no worker reserves it; it comes back when its inputs do.
    """
    from datajoint.condition import Not

    added = jobs.refresh(delay=-1)["added"]
    q = jobs.adapter.quote_identifier
    unready = (jobs & f"{q('status')}='pending'").restrict(Not(jobs.target.key_source.proj()), semantic_check=False)
    dropped = unready.delete_quick(get_count=True)
    if dropped:
        log.info("%s: %d pending job(s) dropped, their inputs are gone", jobs.target.__class__.__name__, dropped)
    return added


def key_json(key: dict) -> str:
    """Canonical JSON of a primary key (sorted names, plain values)."""
    return json.dumps({k: plain(v) for k, v in sorted(key.items())}, sort_keys=True, default=str)


def key_hash(key: dict) -> str:
    return hashlib.md5(key_json(key).encode()).hexdigest()


def parse_key(text: str | None, table=None) -> dict | None:
    """A job key from its JSON text, typed against ``table``'s primary key.

    Only a JSON object of scalars is accepted, every name must be in the primary key of
    ``table`` (required whenever a key is given) and every value must fit its column: a whole
    number for an integer column, a finite number for a numeric one, a string for the others.
    The values then reach SQL only as escaped literals of those types.
    """
    if text is None:
        return None
    try:
        key = json.loads(text)
    except json.JSONDecodeError as err:
        raise QueueError(f"--key {text!r} is not valid JSON ({err.msg}); e.g. --key '{{\"scan_idx\": 1}}'") from err
    if not isinstance(key, dict) or not key:
        raise QueueError(f"--key {text!r} must be a JSON object of primary-key values")
    if table is None:
        raise QueueError("--key needs --table: a key names the primary-key fields of one table")
    unknown = sorted(set(key) - set(table.primary_key))
    if unknown:
        raise QueueError(
            f"--key names {', '.join(unknown)}, not in the primary key of {table.__name__} "
            f"({', '.join(table.primary_key)})"
        )
    heading = table().heading
    return {name: _typed(table, heading.attributes[name], value) for name, value in key.items()}


def _typed(table, attribute, value):
    """``value`` checked against the column ``attribute`` (see :func:`parse_key`)."""
    import math

    where = f"--key field {attribute.name} of {table.__name__} ({attribute.type})"
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise QueueError(f"{where}: {json.dumps(value)} is not a single number or string")
    if attribute.numeric:
        if isinstance(value, str):
            raise QueueError(f"{where}: {json.dumps(value)} is not a number")
        if isinstance(value, float) and not math.isfinite(value):
            raise QueueError(f"{where}: {value} is not a finite number")
        if re.match(r"^(tiny|small|medium|big)?int|^u?int\d*|^integer", attribute.type, re.I):
            if isinstance(value, float) and not value.is_integer():
                raise QueueError(f"{where}: {value} is not a whole number")
            return int(value)
        return value
    if not isinstance(value, str):
        raise QueueError(f"{where}: {json.dumps(value)} is not a string")
    return value


def server_now(connection) -> datetime:
    """The database server's clock, as naive datetime like the job tables store it."""
    now = connection.query("SELECT CURRENT_TIMESTAMP(3)").fetchone()[0]
    return now.replace(tzinfo=None)


def ignore(tables: list, key: dict | None = None) -> dict[str, int]:
    """Mark failed jobs, or the job of ``key`` whatever its state but reserved, as ``ignore``.

    All in one transaction: a refusal (no such key, a job running) changes nothing.
    """
    import datajoint as dj

    done = {}
    with dj.conn().transaction:
        _ignore(tables, key, done)
    return done


def _ignore(tables: list, key: dict | None, done: dict) -> None:
    for table in tables:
        jobs = queue(table)
        if key is not None:
            from schemas.readiness import candidates

            full = (candidates(table) & key).keys()  # a key still waiting for its inputs can be ignored too
            if not full:
                raise QueueError(f"{table.__name__} has no key matching {key_json(key)}")
            count = 0
            for job in full:
                job = {k: job[k] for k in jobs.primary_key}
                if jobs & job & "status='reserved'":
                    raise QueueError(f"{table.__name__} {key_json(job)} is running now; stop its worker first")
                jobs.ignore(job)
                count += 1
            done[table.__name__] = count
        else:
            keys = jobs.errors.keys()
            for job in keys:
                jobs.ignore(job)
            done[table.__name__] = len(keys)
