"""Populating the pipeline in the current process, table by table, upstream first.

Every key is reserved in its table's job queue before its make runs, exactly as the workers reserve
them (:mod:`populate.work.reservation`), so ``populate run``, a second ``populate run``, a benchmark driver
and any number of ``populate worker`` processes can share one database: each key is computed once.
A table is finished when no job of it is pending or held elsewhere; keys that other processes hold
are waited for, so that the next table finds its inputs in place.  While waiting, a scheduler pass
(:class:`populate.work.scheduler.Scheduler`) puts back the jobs of holders that died, so a killed process
does not block the run.

Failures keep the direct-mode contract: the exception propagates and its job goes back to pending
(no ``error`` row), so a rerun tries it again.  SIGTERM (a batch system's time limit) interrupts the
make the same way: its job goes back to pending before the process exits.  Jobs that failed in
*another* process stay theirs: the run stops on that table naming them (``python -m populate
status``, ``retry``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import signal
import threading
import time

from pipeline.progress import on_terminal

log = logging.getLogger(__name__)


class FailedElsewhere(RuntimeError):
    """Jobs of a table failed in another process; a person decides (``retry`` or ``ignore``)."""


def populate_all(
    tables: list[str] | None = None,
    progress: bool = True,
    modules: list[str] | None = None,
    poll: float | None = None,
) -> dict[str, int]:
    """Populate each table fully, sharing the job queues with other processes.

    tables : class names (default: every computed table); modules : schema modules instead of the
    pipeline's (see :func:`populate.work.jobs.select_tables`); poll : seconds between looks while other
    processes hold jobs (default: the workers' poll).

    Returns the number of rows this process added per table.  A failed make raises its exception;
    jobs failed elsewhere raise :class:`FailedElsewhere`.
    """
    from pipeline.device import configure_threads
    from populate.work.jobs import select_tables
    from populate.work.settings import DEFAULT_POLL_S

    configure_threads()
    added = {}
    with _sigterm_interrupts():
        for table in select_tables(tables, modules):
            start = time.monotonic()
            added[table.__name__] = _populate_table(
                table, progress and on_terminal(), DEFAULT_POLL_S if poll is None else poll
            )
            log.info("%s: %d new rows in %.1f s", table.__name__, added[table.__name__], time.monotonic() - start)
    return added


@contextlib.contextmanager
def _sigterm_interrupts():
    """SIGTERM raises SystemExit in the main thread, so that the running make's job is handed back
    (Python's default would end the process with the job still reserved)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise SystemExit("SIGTERM received")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _populate_table(table, progress: bool, poll: float) -> int:
    """Compute the pending jobs of ``table`` this process can reserve, wait for those held elsewhere;
    return how many rows this process added."""
    from tqdm import tqdm

    from populate.work.jobs import due, queue, refresh
    from populate.work.scheduler import Scheduler

    jobs = queue(table)
    me = dict(host=platform.node(), pid=os.getpid())
    q = jobs.adapter.quote_identifier
    done, waiting_on = 0, None
    refresh(jobs)
    while True:
        for key in tqdm(due(jobs), desc=table.__name__, disable=not progress):
            done += _make(jobs, key, me)
        refresh(jobs)  # keys whose inputs landed meanwhile
        open_jobs = (jobs & f"{q('status')} in ('pending', 'reserved')").to_dicts()
        if not open_jobs:
            break
        holders = sorted({f"{j['host']} pid {j['pid']}" for j in open_jobs if j["status"] == "reserved"})
        if holders != waiting_on:
            log.info(
                "%s: waiting for %d job(s) held by %s",
                table.__name__,
                len(open_jobs),
                ", ".join(holders) or "nobody (due later)",
            )
            waiting_on = holders
        time.sleep(poll)
        Scheduler([table]).run_once()  # puts back jobs whose holder died, re-queues transient failures
    _raise_failed_elsewhere(jobs)
    return done


def _make(jobs, key: dict, me: dict) -> int:
    """Reserve and compute one job; 1 if this process computed it, 0 if another holds or did it."""
    from populate.work import reservation
    from schemas import compat

    if not reservation.claim(jobs, [key], **me):
        return 0
    started = time.monotonic()
    try:
        result = compat.populate_one(jobs.target, key)
    except BaseException:
        reservation.release(jobs, [key], **me)
        raise
    if isinstance(result, tuple):  # (key, exception): the make failed
        reservation.release(jobs, [key], **me)
        raise result[1]
    reservation.complete(jobs, [(key, time.monotonic() - started)], **me)
    return int(result is True)


def _raise_failed_elsewhere(jobs) -> None:
    from populate.work.jobs import key_json

    failed = [j for j in jobs.errors.to_dicts() if {k: j[k] for k in jobs.primary_key} not in jobs.target]
    if failed:
        first = failed[0]
        raise FailedElsewhere(
            f"{jobs.target.__class__.__name__}: {len(failed)} job(s) failed in another process, e.g. "
            f"{key_json({k: first[k] for k in jobs.primary_key})} on {first['host']}: {first['error_message']} "
            "(see `python -m populate status`; `python -m populate retry` runs them again)"
        )
