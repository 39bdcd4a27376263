"""The job queues of the computed tables: which tables, their state, and the changes people make.

DataJoint 2.x keeps one queue per auto-populated table (``~~name`` in the table's schema) with a
row per key: ``pending`` -> ``reserved`` (by a worker's connection, host and pid) -> deleted on
success (``jobs.keep_completed`` false) or ``error`` (message and traceback).  This module reads
those queues for ``status``, puts jobs back for ``retry``/``ignore``, and holds what the scheduler
and the workers share: :func:`requeue` with its durable retry count and :func:`transient_reason`.
"""

from __future__ import annotations

import collections
import hashlib
import importlib
import json
import logging
import re
from datetime import datetime

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


def hand_back_unready(jobs, key: dict, reason: str, *, host: str, pid: int, delay: float) -> bool:
    """Put a job whose make found an input missing back to pending, due after ``delay`` seconds.

    Not an error: the job simply was not ready.  The reason stays in its ``error_message`` for
    ``status``.  Returns whether the job was still this worker's (host, pid) to hand back.
    """
    q = jobs.adapter.quote_identifier
    interval = jobs.adapter.interval_expr(max(float(delay), 0.0), "second")
    cursor = jobs.connection.query(
        f"UPDATE {jobs.full_table_name} SET {q('status')}='pending', "
        f"{q('scheduled_time')}=CURRENT_TIMESTAMP(3) + {interval}, {q('reserved_time')}=NULL, "
        f"{q('error_message')}=%s, {q('error_stack')}=NULL, {q('host')}='', {q('pid')}=0, {q('connection_id')}=0 "
        f"WHERE {_where(jobs, key)} AND {q('status')}='reserved' AND {q('host')}=%s AND {q('pid')}=%s",
        args=[reason[:2047], host, pid],
    )
    return bool(cursor.rowcount)


def key_json(key: dict) -> str:
    """Canonical JSON of a primary key (sorted names, plain values)."""
    return json.dumps({k: _plain(v) for k, v in sorted(key.items())}, sort_keys=True)


def _plain(value):
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, datetime):
        return value.isoformat()
    return value if isinstance(value, (int, float, str, bool, type(None))) else str(value)


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


def _where(jobs, key: dict) -> str:
    from datajoint.condition import make_condition

    return make_condition(jobs, {k: key[k] for k in jobs.primary_key}, set())


# ---------------------------------------------------------------------------------------------
# putting jobs back


def _retry_table():
    from schemas import operations

    return operations.JobRetry


def retries(table, key: dict) -> int:
    """Automatic re-queues of one job so far."""
    rows = (_retry_table() & dict(job_table=table.full_table_name, key_hash=key_hash(key))).to_dicts()
    return rows[0]["retries"] if rows else 0


def _count_retry(table, key: dict, reason: str) -> None:
    retry = _retry_table()
    restriction = dict(job_table=table.full_table_name, key_hash=key_hash(key))
    count = retries(table, key) + 1
    (retry & restriction).delete_quick()
    retry.insert1(dict(restriction, job_key=key_json(key)[:2047], retries=count, last_reason=reason[:2047]))


def requeue(
    jobs,
    key: dict,
    reason: str,
    *,
    expect: dict,
    max_retries: int | None = None,
    delay: float = 0.0,
) -> str:
    """Put one job back to pending, unless done already or out of automatic retries.

    ``expect`` holds the column values the job row must still have (e.g. its status and the
    dead worker's connection id), so a job that changed hands meanwhile is left alone.  With
    ``max_retries``, the re-queue counts against the job's durable budget in
    ``{prefix}__operations.job_retry``; once spent, the job becomes an ``error`` naming why.
    Returns ``"requeued"``, ``"done"`` (its result is in the table), ``"failed"`` or ``"changed"``.
    """
    target = jobs.target
    q = jobs.adapter.quote_identifier
    where = _where(jobs, key) + "".join(f" AND {q(column)}=%s" for column in expect)
    guard = list(expect.values())
    if key in target:
        # The make committed but the job was never marked complete (worker died in between).
        from schemas import compat

        if compat.keep_completed(jobs.connection):
            query = f"UPDATE {jobs.full_table_name} SET {q('status')}='success' WHERE {where}"
        else:
            query = f"DELETE FROM {jobs.full_table_name} WHERE {where}"
        jobs.connection.query(query, args=guard)
        return "done"
    if max_retries is not None:
        used = retries(target, key)
        if used >= max_retries:
            message = f"{reason} [not retried: {used} automatic retries used, limit {max_retries}]"
            cursor = jobs.connection.query(
                f"UPDATE {jobs.full_table_name} SET {q('status')}='error', {q('error_message')}=%s, "
                f"{q('completed_time')}=CURRENT_TIMESTAMP(3) WHERE {where}",
                args=[message[:2047], *guard],
            )
            return "failed" if cursor.rowcount else "changed"
    interval = jobs.adapter.interval_expr(max(float(delay), 0.0), "second")
    cursor = jobs.connection.query(
        f"UPDATE {jobs.full_table_name} SET {q('status')}='pending', "
        f"{q('scheduled_time')}=CURRENT_TIMESTAMP(3) + {interval}, {q('reserved_time')}=NULL, "
        f"{q('host')}='', {q('pid')}=0, {q('connection_id')}=0 WHERE {where}",
        args=guard,
    )
    if not cursor.rowcount:
        return "changed"
    if max_retries is not None:
        _count_retry(target, key, reason)
    return "requeued"


def retry(tables: list, key: dict | None = None, include_ignored: bool = False) -> dict[str, int]:
    """Put failed jobs (and with ``include_ignored`` ignored ones) back to pending, afresh.

    Clears their error and their automatic-retry count.  Returns the number per table.
    """
    import datajoint as dj

    statuses = ("error", "ignore") if include_ignored else ("error",)
    done = {}
    with dj.conn().transaction:  # all tables or none
        _retry(tables, key, statuses, done)
    return done


def _retry(tables: list, key: dict | None, statuses: tuple, done: dict) -> None:
    for table in tables:
        jobs = queue(table)
        q = jobs.adapter.quote_identifier
        rows = jobs & f"{q('status')} in ({', '.join(repr(s) for s in statuses)})"
        if key is not None:
            rows = rows & key
        keys = rows.keys()
        for job in keys:
            jobs.connection.query(
                f"UPDATE {jobs.full_table_name} SET {q('status')}='pending', "
                f"{q('scheduled_time')}=CURRENT_TIMESTAMP(3), {q('reserved_time')}=NULL, "
                f"{q('completed_time')}=NULL, {q('error_message')}='', {q('error_stack')}=NULL "
                f"WHERE {_where(jobs, job)} AND {q('status')} in ({', '.join(repr(s) for s in statuses)})"
            )
            (_retry_table() & dict(job_table=table.full_table_name, key_hash=key_hash(job))).delete_quick()
        done[table.__name__] = len(keys)


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


# ---------------------------------------------------------------------------------------------
# status


def _heartbeats(connection, now: datetime) -> list[dict]:
    from schemas import operations

    from .scheduler import DEFAULT_STALE_AFTER_S, live_connection_ids
    from .worker import DEFAULT_HEARTBEAT_S

    rows = operations.Worker().to_dicts(order_by="worker")
    try:
        alive = live_connection_ids(connection)
    except Exception:  # not allowed to list connections: judge by heartbeats alone
        alive = None
    for row in rows:
        age = row["heartbeat_age_s"] = (now - row["heartbeat"]).total_seconds()
        # A killed worker's connection vanishes at once; a reconnecting one reports its new id with the next beat.
        gone = alive is not None and int(row["connection_id"] or 0) not in alive
        if (gone and age >= 3 * DEFAULT_HEARTBEAT_S) or (alive is None and age >= DEFAULT_STALE_AFTER_S):
            row["state"] = "dead"
        elif age >= DEFAULT_STALE_AFTER_S:
            row["state"] = "unresponsive"
    return rows


def status(tables: list, max_errors: int = 50, max_waiting: int = 5) -> dict:
    """Every queue's counts, its failed and running jobs, and the workers' heartbeats (JSON-ready).

    ``keys`` counts every key a table is meant to compute; ``waiting`` those whose inputs are not
    all in place yet (never queued, see :mod:`schemas.readiness`), listed up to ``max_waiting`` per
    table with the inputs each lacks; ``not_queued`` ready keys the queue has not picked up yet.
    """
    import datajoint as dj

    from schemas import readiness

    connection = dj.conn()
    now = server_now(connection)
    workers = _heartbeats(connection, now)
    by_process = {(w["host"], w["pid"]): w for w in workers}
    report = {"server_time": now.isoformat(), "tables": [], "waiting": [], "errors": [], "running": [],
              "workers": []}
    for table in tables:
        jobs = queue(table)
        remaining, total = table().progress()
        n_waiting, blocked = readiness.waiting(table, limit=max_waiting)
        counts = jobs.progress()
        counts.pop("total", None)
        queued = counts["pending"] + counts["reserved"] + counts["error"] + counts["ignore"]
        report["tables"].append(
            dict(table=table.__name__, full_name=table.full_table_name, keys=total + n_waiting,
                 done=total - remaining, waiting=n_waiting, not_queued=max(remaining - queued, 0), **counts)
        )
        report["waiting"] += [dict(table=table.__name__, key=json.loads(key_json(key)), inputs=inputs)
                              for key, inputs in blocked]
        for row in jobs.errors.to_dicts(order_by="completed_time DESC", limit=max_errors):
            key = {k: row[k] for k in jobs.primary_key}
            stack = row.get("error_stack")
            report["errors"].append(
                dict(table=table.__name__, key=json.loads(key_json(key)), message=row["error_message"],
                     traceback=stack if isinstance(stack, str) else (None if stack is None else str(stack)),
                     time=row["completed_time"].isoformat() if row["completed_time"] else None,
                     host=row["host"], pid=row["pid"], retries=retries(table, key))
            )
        for row in jobs.reserved.to_dicts(order_by="reserved_time"):
            key = {k: row[k] for k in jobs.primary_key}
            worker = by_process.get((row["host"], row["pid"]))
            report["running"].append(
                dict(table=table.__name__, key=json.loads(key_json(key)), host=row["host"], pid=row["pid"],
                     connection_id=row["connection_id"], user=row["user"],
                     elapsed_s=round((now - row["reserved_time"]).total_seconds(), 1) if row["reserved_time"] else None,
                     worker=worker["worker"] if worker else None,
                     heartbeat_age_s=round(worker["heartbeat_age_s"], 1) if worker else None)
            )
    for w in workers:
        report["workers"].append(
            dict(worker=w["worker"], host=w["host"], pid=w["pid"], device=w["device"], state=w["state"],
                 heartbeat_age_s=round(w["heartbeat_age_s"], 1), job_table=w["job_table"], job_key=w["job_key"],
                 jobs_done=w["jobs_done"], jobs_failed=w["jobs_failed"], started=w["started"].isoformat())
        )
    return report


def format_status(report: dict, tracebacks: bool = True, traceback_lines: int = 12) -> str:
    """The status report as text for people."""
    lines = [f"server time {report['server_time']}", ""]
    header = ("table", "keys", "done", "waiting", "not queued", "pending", "reserved", "error", "ignore")
    rows = [(t["table"], t["keys"], t["done"], t["waiting"], t["not_queued"], t["pending"], t["reserved"], t["error"],
             t["ignore"]) for t in report["tables"]]
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    for r in (header, *rows):
        lines.append("  ".join(str(v).ljust(w) if i == 0 else str(v).rjust(w) for i, (v, w) in enumerate(zip(r, widths))))
    if report["waiting"]:
        lines += ["", "waiting for inputs (not queued until every input is in place):"]
        by_table = collections.defaultdict(list)
        for w in report["waiting"]:
            by_table[w["table"]].append(w)
        for t in report["tables"]:
            listed = by_table[t["table"]]
            lines += [f"  {t['table']} {json.dumps(w['key'])} waits for {', '.join(w['inputs'])}" for w in listed]
            if t["waiting"] > len(listed):
                lines.append(f"  {t['table']}: {t['waiting'] - len(listed)} more waiting")
    if report["running"]:
        lines += ["", "running jobs:"]
        for job in report["running"]:
            beat = "no heartbeat" if job["heartbeat_age_s"] is None else f"heartbeat {job['heartbeat_age_s']:.0f} s ago"
            lines.append(
                f"  {job['table']} {json.dumps(job['key'])} on {job['host']} pid {job['pid']} "
                f"(connection {job['connection_id']}), {job['elapsed_s']:.0f} s, {beat}"
            )
    if report["errors"]:
        lines += ["", "errors:"]
        for err in report["errors"]:
            retried = f", retried {err['retries']}x automatically" if err["retries"] else ""
            lines.append(f"  {err['table']} {json.dumps(err['key'])} at {err['time']} on {err['host']}{retried}")
            lines.append(f"    {err['message']}")
            if tracebacks and err["traceback"]:
                tb = err["traceback"].rstrip().splitlines()
                if traceback_lines and len(tb) > traceback_lines:
                    tb = ["..."] + tb[-traceback_lines:]
                lines += [f"      {line}" for line in tb]
    if report["workers"]:
        lines += ["", "workers:"]
        for w in report["workers"]:
            job = f" on {w['job_table']} {w['job_key']}" if w["job_key"] else ""
            lines.append(
                f"  {w['worker']} {w['device'] or '-'} {w['state']}{job}, heartbeat {w['heartbeat_age_s']:.0f} s ago, "
                f"{w['jobs_done']} done, {w['jobs_failed']} failed"
            )
    return "\n".join(lines)
