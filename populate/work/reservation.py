"""The SQL that moves job rows between states: reserve, complete, hand back, re-queue, retry.

DataJoint 2.x keeps one queue per auto-populated table (``~~name``) with a row per key:
``pending`` -> ``reserved`` (by a connection, host and pid) -> deleted on success (or kept as
``success`` with ``jobs.keep_completed``) or ``error``.  Every statement here that changes a row this
process holds is guarded by its host and pid (and the expected state), so a job that changed hands
meanwhile is left alone.

Reserving ahead.  A worker reserves a job alone unless the table's recent makes all took under
``PREFETCH_HORIZON_S`` (:func:`prefetch`); then it reserves about that much work in one
statement (:func:`claim`) and completes the finished jobs in one more (:func:`complete`).  A make
that turns out slow sends the jobs reserved behind it back to pending at once (:func:`release`).
For a trivial make, a statement per job for each of reservation and completion costs as much as the
make itself; for a training job it is noise, and reserving ahead would only keep work from idle
workers.  Reserved-ahead jobs that a stopping worker has not started go back to pending; those of a
killed worker are re-queued by the scheduler (:func:`requeue`) like its running job, and a job
whose result committed before the kill is completed by whichever worker takes it next.
"""

from __future__ import annotations

# schemas.compat (DataJoint) is imported inside the functions: the command line reads this
# package's settings before DataJoint is configured.
from populate.work.jobs import key_hash, key_json, queue

PREFETCH_HORIZON_S = 1.0
"""Seconds of work a worker reserves at once when a table's makes are fast."""


def where(jobs, key: dict) -> str:
    """SQL condition selecting the job row of ``key`` (its primary-key values, escaped)."""
    from datajoint.condition import make_condition

    return make_condition(jobs, {k: key[k] for k in jobs.primary_key}, set())


def _these(jobs, keys: list[dict]) -> str:
    from datajoint.condition import make_condition

    return make_condition(jobs, [{k: key[k] for k in jobs.primary_key} for key in keys], set())


# ---------------------------------------------------------------------------------------------
# a worker's own jobs


def prefetch(recent, batch: int) -> int:
    """How many jobs to reserve at once: about ``PREFETCH_HORIZON_S`` of work, at most ``batch``.

    ``recent``: the table's recent make durations [s] (None or empty before the first make).
    Judged by the slowest of them: a table whose makes take longer than the horizon (any model
    training) has its jobs reserved one at a time, so a worker never sits on work another worker
    could start.  Only fast makes are reserved ahead, where one statement per job for reservation
    and one for completion would cost as much as the makes.
    """
    if not recent:
        return 1
    return max(1, min(batch, int(PREFETCH_HORIZON_S / max(max(recent), 1e-6))))


def slow(recent) -> bool:
    """Whether the table's last make (the last of ``recent`` durations [s]) took longer than the horizon."""
    return bool(recent) and recent[-1] > PREFETCH_HORIZON_S


def claim(jobs, keys: list[dict], *, host: str, pid: int) -> list[dict]:
    """Reserve those of ``keys`` still pending and due, in one statement; return the ones now held.

    Atomic like DataJoint's ``Job.reserve`` (``UPDATE ... WHERE status='pending'``): of two
    workers claiming the same key, exactly one changes the row.  Records the same columns.
    """
    from schemas import compat

    q = jobs.adapter.quote_identifier
    connection = jobs.connection
    pks = [{k: key[k] for k in jobs.primary_key} for key in keys]
    these = _these(jobs, pks)
    mine = [host, pid, connection.connection_id]
    cursor = connection.query(
        f"UPDATE {jobs.full_table_name} SET {q('status')}='reserved', {q('host')}=%s, {q('pid')}=%s, "
        f"{q('connection_id')}=%s, {q('user')}=%s, {q('version')}=%s, {q('reserved_time')}=CURRENT_TIMESTAMP(3) "
        f"WHERE ({these}) AND {q('status')}='pending' "
        f"AND {q('scheduled_time')} <= CURRENT_TIMESTAMP(3)",
        args=[*mine, connection.get_user(), compat.job_version(connection)],
    )
    if cursor.rowcount == len(pks):
        return pks
    if cursor.rowcount == 0:
        return []
    # Some were taken by others meanwhile: ask which are ours.
    columns = ", ".join(q(k) for k in jobs.primary_key)
    rows = connection.query(
        f"SELECT {columns} FROM {jobs.full_table_name} WHERE ({these}) "
        f"AND {q('status')}='reserved' AND {q('host')}=%s AND {q('pid')}=%s AND {q('connection_id')}=%s",
        args=mine,
    ).fetchall()
    held = {tuple(map(str, row)) for row in rows}
    return [pk for pk in pks if tuple(str(pk[k]) for k in jobs.primary_key) in held]


def complete(jobs, done: list[tuple[dict, float | None]], *, host: str, pid: int) -> None:
    """Mark computed jobs (key, make seconds or None) done, if this process still holds them.

    Deleted in one statement, or kept as ``success`` with their durations when
    ``jobs.keep_completed`` is set (as DataJoint's ``Job.complete`` does).
    """
    from schemas import compat

    q = jobs.adapter.quote_identifier
    mine = f"{q('host')}=%s AND {q('pid')}=%s"
    if not compat.keep_completed(jobs.connection):
        jobs.connection.query(
            f"DELETE FROM {jobs.full_table_name} WHERE ({_these(jobs, [key for key, _ in done])}) AND {mine}",
            args=[host, pid],
        )
        return
    for key, seconds in done:
        jobs.connection.query(
            f"UPDATE {jobs.full_table_name} SET {q('status')}='success', "
            f"{q('completed_time')}=CURRENT_TIMESTAMP(3), {q('duration')}=%s "
            f"WHERE {where(jobs, key)} AND {mine}",
            args=[seconds, host, pid],
        )


def release(jobs, unstarted: list[dict], *, host: str, pid: int) -> int:
    """Hand reservations this process has not started back to pending; return how many."""
    q = jobs.adapter.quote_identifier
    cursor = jobs.connection.query(
        f"UPDATE {jobs.full_table_name} SET {q('status')}='pending', {q('reserved_time')}=NULL, "
        f"{q('host')}='', {q('pid')}=0, {q('connection_id')}=0 "
        f"WHERE ({_these(jobs, unstarted)}) AND {q('status')}='reserved' "
        f"AND {q('host')}=%s AND {q('pid')}=%s",
        args=[host, pid],
    )
    return cursor.rowcount


def hand_back_interrupted(jobs, key: dict, *, host: str, pid: int, stop_error: str) -> bool:
    """Put the job whose make this process interrupted back to pending; return whether it still held it.

    Also takes back a job DataJoint recorded as an ``error`` whose message starts with
    ``stop_error`` (the interruption itself, not a failure of the computation).
    """
    q = jobs.adapter.quote_identifier
    cursor = jobs.connection.query(
        f"UPDATE {jobs.full_table_name} SET {q('status')}='pending', {q('reserved_time')}=NULL, "
        f"{q('completed_time')}=NULL, {q('error_message')}='', {q('error_stack')}=NULL, "
        f"{q('host')}='', {q('pid')}=0, {q('connection_id')}=0 "
        f"WHERE {where(jobs, key)} AND {q('host')}=%s AND {q('pid')}=%s AND "
        f"({q('status')}='reserved' OR ({q('status')}='error' AND {q('error_message')} LIKE %s))",
        args=[host, pid, stop_error + "%"],
    )
    return bool(cursor.rowcount)


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
        f"WHERE {where(jobs, key)} AND {q('status')}='reserved' AND {q('host')}=%s AND {q('pid')}=%s",
        args=[reason[:2047], host, pid],
    )
    return bool(cursor.rowcount)


# ---------------------------------------------------------------------------------------------
# the scheduler's re-queues and the operator's retries


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
    from schemas import compat

    target = jobs.target
    q = jobs.adapter.quote_identifier
    condition = where(jobs, key) + "".join(f" AND {q(column)}=%s" for column in expect)
    guard = list(expect.values())
    if key in target:
        # The make committed but the job was never marked complete (worker died in between).
        if compat.keep_completed(jobs.connection):
            query = f"UPDATE {jobs.full_table_name} SET {q('status')}='success' WHERE {condition}"
        else:
            query = f"DELETE FROM {jobs.full_table_name} WHERE {condition}"
        jobs.connection.query(query, args=guard)
        return "done"
    if max_retries is not None:
        used = retries(target, key)
        if used >= max_retries:
            message = f"{reason} [not retried: {used} automatic retries used, limit {max_retries}]"
            cursor = jobs.connection.query(
                f"UPDATE {jobs.full_table_name} SET {q('status')}='error', {q('error_message')}=%s, "
                f"{q('completed_time')}=CURRENT_TIMESTAMP(3) WHERE {condition}",
                args=[message[:2047], *guard],
            )
            return "failed" if cursor.rowcount else "changed"
    interval = jobs.adapter.interval_expr(max(float(delay), 0.0), "second")
    cursor = jobs.connection.query(
        f"UPDATE {jobs.full_table_name} SET {q('status')}='pending', "
        f"{q('scheduled_time')}=CURRENT_TIMESTAMP(3) + {interval}, {q('reserved_time')}=NULL, "
        f"{q('host')}='', {q('pid')}=0, {q('connection_id')}=0 WHERE {condition}",
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
                f"WHERE {where(jobs, job)} AND {q('status')} in ({', '.join(repr(s) for s in statuses)})"
            )
            (_retry_table() & dict(job_table=table.full_table_name, key_hash=key_hash(job))).delete_quick()
        done[table.__name__] = len(keys)
