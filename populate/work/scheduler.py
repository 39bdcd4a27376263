"""The scheduler: keeps the job queues filled and puts back the jobs that were cut short.

``python -m populate scheduler`` runs :func:`run` (one process per database is enough; two are
harmless, every change is a guarded single-row UPDATE).  Each pass:

1. refreshes every queue (:func:`populate.work.jobs.refresh`): keys whose inputs appeared become
   ``pending``; pending keys that left the key source are dropped;
2. finds reserved jobs whose worker is dead and puts them back to ``pending``.  A worker is dead
   when its connection id (recorded with the reservation) is gone from the server's process list
   (``information_schema.processlist`` on MySQL/MariaDB, ``pg_stat_activity`` on PostgreSQL)
   *and* its heartbeat in ``{prefix}__operations.worker`` is older than ``stale_after`` (or it
   never had one, e.g. a notebook's ``populate(reserve_jobs=True)``).  A worker whose connection
   the server still lists but whose heartbeat is older than ``lost_after`` is presumed lost with
   its host (the server has not noticed the broken socket yet): its connection is killed and its
   job re-queued.  No bare timeout on the reservation: a job may run for days;
3. re-queues ``error`` jobs whose message reports a transient failure
   (:data:`populate.work.jobs.TRANSIENT`: interrupted, deadlock, lock wait timeout, serialization
   failure, lost connection), after ``backoff * 2**retries`` seconds;

Steps 2 and 3 count against each job's durable retry budget (``max_retries``); a spent job becomes
an ``error`` saying so.  Other errors stay for people (``status``, ``retry``, ``ignore``).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass, field

from populate.work import jobs as queues
from populate.work import reservation

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 30.0
DEFAULT_MAX_RETRIES = 3
DEFAULT_STALE_AFTER_S = 60.0
DEFAULT_LOST_AFTER_S = 1800.0
DEFAULT_BACKOFF_S = 30.0


class SchedulerError(RuntimeError):
    """The scheduler cannot run with the settings given."""


@dataclass
class PassReport:
    added: int = 0
    dead_requeued: int = 0
    transient_requeued: int = 0
    gave_up: int = 0
    settled: int = 0
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"{self.added} added, {self.dead_requeued} re-queued from dead workers, "
            f"{self.transient_requeued} transient errors re-queued, {self.gave_up} out of retries, "
            f"{self.settled} found already done"
        )


def live_connection_ids(connection) -> set[int]:
    """Ids of the connections the server lists (all of them only with the PROCESS privilege on MySQL)."""
    if connection.adapter.backend == "postgresql":
        rows = connection.query("SELECT pid FROM pg_stat_activity").fetchall()
    else:
        rows = connection.query("SELECT ID FROM information_schema.PROCESSLIST").fetchall()
    return {int(row[0]) for row in rows}


def kill_connection(connection, connection_id: int) -> bool:
    """Ask the server to end another session; False where not allowed."""
    try:
        if connection.adapter.backend == "postgresql":
            connection.query("SELECT pg_terminate_backend(%s)", args=(int(connection_id),))
        else:
            connection.query(f"KILL CONNECTION {int(connection_id)}")
        return True
    except Exception as err:
        log.warning("could not end connection %s (%s)", connection_id, " ".join(str(err).split()))
        return False


def _reconnect() -> None:
    """A fresh connection after a failed pass: DataJoint does not reconnect a connection whose own
    reconnect failed (server down at that moment), nor one left inside a cut transaction."""
    import datajoint as dj

    connection = dj.conn()
    try:
        connection.close()
    except Exception:
        pass
    try:
        connection.connect()
        from schemas import compat

        compat.forget_transaction(connection)
    except Exception as err:
        log.warning("database unreachable (%s); next pass retries", " ".join(str(err).split()))


class Scheduler:
    def __init__(
        self,
        tables: list,
        *,
        max_retries: int = DEFAULT_MAX_RETRIES,
        stale_after: float = DEFAULT_STALE_AFTER_S,
        lost_after: float = DEFAULT_LOST_AFTER_S,
        backoff: float = DEFAULT_BACKOFF_S,
    ) -> None:
        from populate.work.settings import check_settings

        check_settings(
            SchedulerError,
            non_negative={"--max-retries": max_retries, "--backoff": backoff},
            positive={"--stale-after": stale_after},
        )
        if lost_after and lost_after < stale_after:
            raise SchedulerError(
                f"--lost-after ({lost_after:g} s) must be 0 (off) or at least --stale-after ({stale_after:g} s)"
            )
        self.tables = tables
        self.max_retries = max_retries
        self.stale_after = stale_after
        self.lost_after = lost_after
        self.backoff = backoff
        self._stop = threading.Event()

    def _workers(self, now) -> dict:
        from schemas import operations

        rows = operations.Worker().to_dicts()
        return {(r["host"], r["pid"]): dict(r, age=(now - r["heartbeat"]).total_seconds()) for r in rows}

    def _verdict(self, job: dict, alive: set[int], workers: dict) -> str | None:
        """Why a reserved job's worker is dead, or None while it may be alive."""
        worker = workers.get((job["host"], job["pid"]))
        connected = int(job["connection_id"]) in alive
        if worker is not None and worker["age"] < self.stale_after:
            return None
        if not connected:
            beat = "no heartbeat" if worker is None else f"heartbeat {worker['age']:.0f} s old"
            return f"worker {job['host']} pid {job['pid']} died (connection {job['connection_id']} gone, {beat})"
        if worker is not None and self.lost_after and worker["age"] >= self.lost_after:
            return (
                f"worker {job['host']} pid {job['pid']} lost (heartbeat {worker['age']:.0f} s old, "
                f"connection {job['connection_id']} still listed)"
            )
        return None

    def run_once(self) -> PassReport:
        import datajoint as dj

        connection = dj.conn()
        report = PassReport()
        queues_ = [queues.queue(table) for table in self.tables]
        for jobs in queues_:
            report.added += queues.refresh(jobs)
        now = queues.server_now(connection)
        alive = live_connection_ids(connection)
        workers = self._workers(now)
        for jobs in queues_:
            self._dead(jobs, alive, workers, report)
            self._transient(jobs, report)
        self._forget_workers(workers, queues_)
        return report

    def _dead(self, jobs, alive, workers, report: PassReport) -> None:
        fields = ("host", "pid", "connection_id")
        for job in jobs.reserved.to_dicts():
            reason = self._verdict(job, alive, workers)
            if reason is None:
                continue
            key = {k: job[k] for k in jobs.primary_key}
            if "still listed" in reason:
                kill_connection(jobs.connection, job["connection_id"])
            outcome = reservation.requeue(
                jobs,
                key,
                reason,
                expect=dict(status="reserved", **{f: job[f] for f in fields}),
                max_retries=self.max_retries,
            )
            self._tally(report, jobs, key, reason, outcome, "dead_requeued")

    def _transient(self, jobs, report: PassReport) -> None:
        for job in jobs.errors.to_dicts():
            kind = queues.transient_reason(job["error_message"])
            if kind is None:
                continue
            key = {k: job[k] for k in jobs.primary_key}
            used = reservation.retries(jobs.target, key)
            if used >= self.max_retries:
                continue  # already reported as spent, or a person will decide
            reason = f"{kind}: {job['error_message']}"
            outcome = reservation.requeue(
                jobs,
                key,
                reason,
                expect=dict(status="error", error_message=job["error_message"]),
                max_retries=self.max_retries,
                delay=self.backoff * 2**used,
            )
            self._tally(report, jobs, key, reason, outcome, "transient_requeued")

    @staticmethod
    def _tally(report: PassReport, jobs, key, reason, outcome, counter) -> None:
        name = f"{jobs.target.__class__.__name__} {queues.key_json(key)}"
        if outcome == "requeued":
            setattr(report, counter, getattr(report, counter) + 1)
            log.info("re-queued %s: %s", name, reason)
        elif outcome == "failed":
            report.gave_up += 1
            log.warning("gave up on %s: %s", name, reason)
        elif outcome == "done":
            report.settled += 1
            log.info("%s had committed; marked done", name)

    def _forget_workers(self, workers: dict, queues_) -> None:
        """Remove heartbeat rows of workers gone for longer than ``lost_after`` that hold no job."""
        from schemas import operations

        horizon = self.lost_after or 24 * 3600.0
        holding = set()
        for jobs in queues_:
            holding |= {(r["host"], r["pid"]) for r in jobs.reserved.to_dicts()}
        for (host, pid), worker in workers.items():
            if worker["age"] >= horizon and (host, pid) not in holding:
                (operations.Worker & dict(worker=worker["worker"])).delete_quick()

    def stop(self, *_) -> None:
        self._stop.set()

    def run(self, interval: float = DEFAULT_INTERVAL_S, once: bool = False) -> PassReport:
        """Pass every ``interval`` seconds until SIGTERM/SIGINT (or once); return the last pass's report."""
        if not interval > 0:
            raise SchedulerError(f"--interval must be positive, got {interval}")
        import datajoint as dj

        from schemas.compat import make_resilient

        make_resilient(dj.conn())
        if once:
            report = self.run_once()
            log.info("scheduler pass: %s", report)
            return report
        handlers = {s: signal.signal(s, self.stop) for s in (signal.SIGTERM, signal.SIGINT)}
        report = PassReport()
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    report = self.run_once()
                    log.info("scheduler pass: %s", report)
                except queues.QueueError:
                    raise
                except Exception as err:  # a failed pass (server restart, lost connection) is retried next time
                    log.error("scheduler pass failed: %s", " ".join(str(err).split()))
                    _reconnect()
                self._stop.wait(max(interval - (time.monotonic() - started), 0.0))
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
        return report
