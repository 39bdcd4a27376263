"""``python -m populate status``: every queue's counts, failed and running jobs, and the workers.

A running job shows its make's latest progress line and checkpoint (:mod:`schemas.checkpoints`).

:func:`status` gathers the report (JSON-ready); :func:`format_status` writes it for people.
"""

from __future__ import annotations

import collections
import json
from datetime import datetime

from populate.work.jobs import key_json, queue, server_now
from populate.work.reservation import retries


def _heartbeats(connection, now: datetime) -> list[dict]:
    from populate.work.scheduler import DEFAULT_STALE_AFTER_S, live_connection_ids
    from populate.work.settings import DEFAULT_HEARTBEAT_S
    from schemas import operations

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

    connection = dj.conn()
    now = server_now(connection)
    workers = _heartbeats(connection, now)
    by_process = {(w["host"], w["pid"]): w for w in workers}
    supervision = _supervision(now)
    report = {"server_time": now.isoformat(), "tables": [], "waiting": [], "errors": [], "running": [], "workers": []}
    for table in tables:
        jobs = queue(table)
        counts, waiting = _counts(table, jobs, max_waiting)
        report["tables"].append(counts)
        report["waiting"] += waiting
        report["errors"] += _errors(table, jobs, max_errors)
        report["running"] += _running(table, jobs, by_process, now, supervision)
    report["workers"] = [_worker_row(w) for w in workers]
    return report


def _counts(table, jobs, max_waiting: int) -> tuple[dict, list[dict]]:
    """One table's key and job counts, and up to ``max_waiting`` of its keys waiting for inputs."""
    from schemas import readiness

    remaining, total = table().progress()
    n_waiting, blocked = readiness.waiting(table, limit=max_waiting)
    counts = jobs.progress()
    counts.pop("total", None)
    queued = counts["pending"] + counts["reserved"] + counts["error"] + counts["ignore"]
    row = dict(
        table=table.__name__,
        full_name=table.full_table_name,
        keys=total + n_waiting,
        done=total - remaining,
        waiting=n_waiting,
        not_queued=max(remaining - queued, 0),
        **counts,
    )
    waiting = [dict(table=table.__name__, key=json.loads(key_json(key)), inputs=inputs) for key, inputs in blocked]
    return row, waiting


def _errors(table, jobs, max_errors: int) -> list[dict]:
    """The table's ``max_errors`` latest failed jobs, with message, traceback and retry count."""
    errors = []
    for row in jobs.errors.to_dicts(order_by="completed_time DESC", limit=max_errors):
        key = {k: row[k] for k in jobs.primary_key}
        stack = row.get("error_stack")
        errors.append(
            dict(
                table=table.__name__,
                key=json.loads(key_json(key)),
                message=row["error_message"],
                traceback=stack if isinstance(stack, str) else (None if stack is None else str(stack)),
                time=row["completed_time"].isoformat() if row["completed_time"] else None,
                host=row["host"],
                pid=row["pid"],
                retries=retries(table, key),
            )
        )
    return errors


def _supervision(now: datetime) -> dict[tuple[str, str], dict]:
    """Each job's latest progress line and checkpoint (:mod:`schemas.checkpoints`), by (table, key hash)."""
    from schemas import checkpoints

    if not checkpoints.available():  # a database set up before the tables existed
        return {}
    found: dict[tuple[str, str], dict] = collections.defaultdict(dict)
    for row in checkpoints.Progress().to_dicts():
        found[row["job_table"], row["key_hash"]].update(
            progress=row["line"], progress_age_s=round((now - row["updated"]).total_seconds(), 1)
        )
    for row in checkpoints.Checkpoint().proj("step", "saved").to_dicts():  # not the state itself
        found[row["job_table"], row["key_hash"]].update(
            checkpoint_step=row["step"], checkpoint_age_s=round((now - row["saved"]).total_seconds(), 1)
        )
    return found


SUPERVISION = dict(progress=None, progress_age_s=None, checkpoint_step=None, checkpoint_age_s=None)
"""A running job's progress fields when it has reported none."""


def _running(table, jobs, by_process: dict, now: datetime, supervision: dict) -> list[dict]:
    """The table's reserved jobs, oldest first, with the worker (by host and pid) that holds each and the
    job's latest progress line and checkpoint."""
    from schemas.checkpoints import key_hash

    running = []
    for row in jobs.reserved.to_dicts(order_by="reserved_time"):
        key = {k: row[k] for k in jobs.primary_key}
        worker = by_process.get((row["host"], row["pid"]))
        reported = supervision.get((table.full_table_name, key_hash(key)), {})
        running.append(
            dict(
                table=table.__name__,
                key=json.loads(key_json(key)),
                host=row["host"],
                pid=row["pid"],
                connection_id=row["connection_id"],
                user=row["user"],
                elapsed_s=round((now - row["reserved_time"]).total_seconds(), 1) if row["reserved_time"] else None,
                worker=worker["worker"] if worker else None,
                heartbeat_age_s=round(worker["heartbeat_age_s"], 1) if worker else None,
                **{**SUPERVISION, **reported},
            )
        )
    return running


def _worker_row(w: dict) -> dict:
    """A worker's heartbeat row as the report lists it (ages in seconds, times ISO 8601)."""
    return dict(
        worker=w["worker"],
        host=w["host"],
        pid=w["pid"],
        device=w["device"],
        state=w["state"],
        heartbeat_age_s=round(w["heartbeat_age_s"], 1),
        job_table=w["job_table"],
        job_key=w["job_key"],
        jobs_done=w["jobs_done"],
        jobs_failed=w["jobs_failed"],
        started=w["started"].isoformat(),
    )


def format_status(report: dict, tracebacks: bool = True, traceback_lines: int = 12) -> str:
    """The status report as text for people."""
    lines = [f"server time {report['server_time']}", ""]
    header = ("table", "keys", "done", "waiting", "not queued", "pending", "reserved", "error", "ignore")
    rows = [
        (
            t["table"],
            t["keys"],
            t["done"],
            t["waiting"],
            t["not_queued"],
            t["pending"],
            t["reserved"],
            t["error"],
            t["ignore"],
        )
        for t in report["tables"]
    ]
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    for r in (header, *rows):
        lines.append(
            "  ".join(str(v).ljust(w) if i == 0 else str(v).rjust(w) for i, (v, w) in enumerate(zip(r, widths)))
        )
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
            if job["progress"]:
                lines.append(f"    progress: {job['progress']} ({job['progress_age_s']:.0f} s ago)")
            if job["checkpoint_step"] is not None:
                lines.append(
                    f"    checkpoint: step {job['checkpoint_step']} ({job['checkpoint_age_s']:.0f} s ago); "
                    "a worker that takes the job over resumes from it"
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
