"""A populate worker: one process computing one job at a time from DataJoint's job queues.

``python -m populate worker`` runs :class:`Worker`.  It walks the computed tables upstream first,
reserves pending jobs (an atomic ``UPDATE ... WHERE status='pending'``, as DataJoint's
``Job.reserve``), runs the table's ``make`` in this process (no multiprocessing, so nothing forks
once CUDA is up), one job at a time, and records a failing make as an ``error`` job instead of
dying.  It never declares a table: a missing job table is an error telling the operator to run
``setup``.

Reserving ahead.  A job is reserved alone unless the table's recent makes all took under
``PREFETCH_HORIZON_S``; then the worker reserves about that much work in one statement and
completes the finished jobs in one more.  A make that turns out slow sends the jobs reserved
behind it back to pending at once.  For a trivial make, a statement per job for each of
reservation and completion costs as much as the make itself; for a training job it is noise, and
reserving ahead would only keep work from idle workers.  Reserved-ahead jobs that a stopping
worker has not started go back to pending; those of a killed worker are re-queued by the
scheduler like its running job, and a job whose result committed before the kill is completed by
whichever worker takes it next (the make is skipped, its key being in the table).

Liveness.  A background thread beats every ``heartbeat`` seconds into
``{prefix}__operations.worker`` through its own connection (the main one is busy inside a make),
with the worker's host, pid, main connection id, device and the job it holds.  The scheduler
re-queues a reserved job only when its connection is gone from the server *and* its worker's
heartbeat is stale (see :mod:`populate.scheduler`).

Stopping.  SIGTERM or SIGINT sets a flag; if a make is running it is interrupted with
:class:`StopRequested` at the next Python bytecode (sleeps, socket waits and most numpy/torch
calls return promptly), the connection is closed so the server rolls back the make's
transaction, and the job is put back to ``pending``.  The worker then exits with status 0.
Bound: once the signal handler has run, an interval timer with SIGALRM's default action ends the
process after ``stop_timeout`` seconds whatever it is doing; its job then stays reserved until the
scheduler sees its connection gone and its heartbeat stale.  A native call that holds the GIL
delays the handler itself; the container runtime's SIGKILL after its grace period covers that.
"""

from __future__ import annotations

import argparse
import collections
import logging
import os
import platform
import random
import re
import secrets
import signal
import threading
import time
import traceback
from dataclasses import dataclass

from . import jobs as queues

log = logging.getLogger(__name__)

DEFAULT_HEARTBEAT_S = 5.0
DEFAULT_POLL_S = 10.0
DEFAULT_STOP_TIMEOUT_S = 10.0
DEFAULT_BATCH = 8
PREFETCH_HORIZON_S = 1.0
RECONNECT_MAX_WAIT_S = 30.0
DEFAULT_START_TIMEOUT_S = 300.0
"""How long a starting worker waits for a server it has not reached yet (a database starting beside it)."""


class StopRequested(SystemExit):
    """Raised inside a running make when the worker has been told to stop."""


class WorkerError(RuntimeError):
    """The worker cannot start with the settings given."""


# ---------------------------------------------------------------------------------------------
# device


_DEVICE = re.compile(r"^(cpu|auto|cuda(:\d+)?)$")


def device_spec(text: str) -> str:
    """argparse type of ``--device``: ``cpu``, ``auto``, ``cuda`` or ``cuda:N``."""
    value = text.strip().lower()
    if not _DEVICE.match(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device: use cpu, auto, cuda or cuda:N")
    return value


def use_device(spec: str | None) -> str | None:
    """Make ``spec`` the device of this process's makes; return the device chosen.

    Exports it as ``PIPELINE_DEVICE``, which :func:`pipeline.device.resolve_device` reads in every
    make, and, for a CUDA device, makes it torch's current device.  ``auto`` picks ``cuda:0`` (the
    first visible GPU) when CUDA is available, else ``cpu``.  None leaves the environment as it is.
    """
    from pipeline.device import DEVICE_VARIABLE, resolve_device

    if spec is None:
        return os.environ.get(DEVICE_VARIABLE)
    try:
        device = resolve_device(spec)
    except RuntimeError as error:
        raise WorkerError(f"--device {spec}: {error}") from None
    name = "cpu"
    if device.type == "cuda":
        import torch

        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise WorkerError(
                f"--device {spec}: only {torch.cuda.device_count()} GPU(s) visible "
                f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})"
            )
        torch.cuda.set_device(index)
        name = f"cuda:{index}"
    os.environ[DEVICE_VARIABLE] = name
    return name


# ---------------------------------------------------------------------------------------------
# connection


def make_resilient(connection) -> None:
    """Keep ``connection.connection_id`` true across reconnects, and reconnect on PostgreSQL too.

    Also caches the connection's user name, which DataJoint queries for every reservation.

    DataJoint reconnects a lost MySQL connection inside ``query`` but keeps the old
    ``connection_id``, which job reservations then record; the scheduler would take the worker
    for dead.  On PostgreSQL a connection closed by the server is not recognised as lost at all.
    """
    if getattr(connection, "_worker_resilient", False):
        return
    reconnect = connection.connect

    def connect() -> None:
        reconnect()
        connection.connection_id = connection.adapter.get_connection_id(connection._conn)

    connection.connect = connect
    # Every reservation records the user; it cannot change over the connection's life, so ask once.
    user = connection.get_user()
    connection.get_user = lambda: user
    if connection.adapter.backend == "postgresql":
        _recognise_lost_postgresql_connections(type(connection.adapter))
    connection._worker_resilient = True


def _recognise_lost_postgresql_connections(adapter_class) -> None:
    original = adapter_class.translate_error
    if getattr(original, "_worker_fix", False):
        return

    def translate_error(self, error, query=""):
        import psycopg2
        from datajoint.errors import LostConnectionError

        # A closed connection carries no SQLSTATE; DataJoint would pass it through unrecognised.
        if isinstance(error, (psycopg2.OperationalError, psycopg2.InterfaceError)) and not getattr(error, "pgcode", None):
            return LostConnectionError("Server connection lost: " + " ".join(str(error).split()))
        return original(self, error, query)

    translate_error._worker_fix = True
    adapter_class.translate_error = translate_error


def open_connection():
    """A new connection with the configured settings (for the heartbeat thread)."""
    import datajoint as dj

    config = dj.config
    return dj.Connection(
        config["database.host"], config["database.user"], config["database.password"],
        use_tls=config["database.use_tls"],
    )


def lost_connection(error: BaseException) -> bool:
    """Whether ``error`` says the server went away (or is refusing this login), not that a query is wrong."""
    return queues.transient_reason(f"{type(error).__name__}: {error}") == "lost connection"


def reconnect(stop: threading.Event, deadline: float | None = None):
    """A fresh connection; while the server is unreachable, wait for it (backing off to
    ``RECONNECT_MAX_WAIT_S``) unless ``stop`` is set or ``deadline`` (``time.monotonic()``) passed."""
    import datajoint as dj

    try:
        dj.conn().close()  # the server rolls back whatever the interrupted make left open
    except Exception:
        pass  # includes: no connection could be made yet
    delay = 1.0
    while True:
        try:
            connection = dj.conn()  # makes the first connection when none was made yet
            if not connection.is_connected:
                connection.connect()
            break
        except Exception as err:
            if stop.is_set():
                raise StopRequested(f"stopping while the database is unreachable ({err})") from None
            if deadline is not None and time.monotonic() + delay > deadline:
                raise
            log.warning("database unreachable (%s); reconnecting in %.0f s", " ".join(str(err).split()), delay)
            stop.wait(delay)
            delay = min(delay * 2, RECONNECT_MAX_WAIT_S)
    connection._in_transaction = False
    return connection


def until_reachable(action, stop: threading.Event, what: str, timeout: float | None = None):
    """``action()``, run again after a reconnect for as long as it fails because the server is away,
    at most ``timeout`` seconds (None: without limit).

    Workers are started by schedulers and service managers that do not know whether the database
    is up; a worker that exits on a blip leaves its node idle.  The limit still ends a worker
    whose settings name a server that never answers.  Other errors propagate.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            return action()
        except StopRequested:
            raise
        except Exception as err:
            if not lost_connection(err) and Worker._connected():
                raise
            if deadline is not None and time.monotonic() >= deadline:
                raise
            log.warning("lost the database %s (%s); waiting for it", what, " ".join(str(err).split()))
            reconnect(stop, deadline)


# ---------------------------------------------------------------------------------------------
# heartbeat


class Heartbeat(threading.Thread):
    """Beats the worker's row in ``{prefix}__operations.worker`` from its own connection."""

    def __init__(self, worker: str, interval: float, snapshot) -> None:
        super().__init__(name="heartbeat", daemon=True)
        from schemas import operations

        self.worker = worker
        self.interval = interval
        self.snapshot = snapshot
        self.table = operations.Worker
        self._halt = threading.Event()
        self._connection = None

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            self.beat()
        if self._connection is not None:
            try:
                self._connection.close()
            except Exception:
                pass

    def beat(self) -> None:
        state = self.snapshot()
        try:
            if self._connection is None:
                self._connection = open_connection()
            q = self._connection.adapter.quote_identifier
            columns = ("state", "job_table", "job_key", "jobs_done", "jobs_failed", "connection_id")
            cursor = self._connection.query(
                f"UPDATE {self.table.full_table_name} SET {q('heartbeat')}=CURRENT_TIMESTAMP(3), "
                + ", ".join(f"{q(c)}=%s" for c in columns)
                + f" WHERE {q('worker')}=%s",
                args=[state[c] for c in columns] + [self.worker],
                reconnect=False,
            )
            if cursor.rowcount == 0:  # the scheduler forgot us (e.g. after a long network partition)
                names = ("worker", "host", "pid", "device", *columns)
                self._connection.query(
                    f"INSERT INTO {self.table.full_table_name} ({', '.join(q(n) for n in names)}) "
                    f"VALUES ({', '.join(['%s'] * len(names))})",
                    args=[state[n] for n in names],
                    reconnect=False,
                )
        except Exception as err:  # a missed beat is harmless; the next one reconnects
            log.warning("heartbeat failed (%s); retrying in %.0f s", " ".join(str(err).split()), self.interval)
            try:
                self._connection.close()
            except Exception:
                pass
            self._connection = None

    def stop(self, timeout: float = 5.0) -> None:
        self._halt.set()
        self.join(timeout)


# ---------------------------------------------------------------------------------------------
# the worker


def _missing_input(error: BaseException) -> bool:
    """Whether a make failed for an input not in place yet (see :mod:`schemas.readiness`)."""
    from schemas.readiness import MissingInput

    return isinstance(error, MissingInput)


@dataclass
class Summary:
    done: int = 0
    failed: int = 0
    handed_back: int = 0
    not_ready: int = 0  # jobs handed back because their make found an input missing
    reason: str = ""


class Worker:
    """Computes jobs of ``tables`` (auto-populated table classes, upstream first) until stopped.

    ``max_jobs``: exit after this many makes (successful or not).  ``idle_exit``: exit after this
    many seconds without work.  ``poll``: seconds between looks at empty queues (the worker
    refreshes them itself then, adding keys whose upstream rows appeared).  ``heartbeat``:
    seconds between beats.  ``stop_timeout``: seconds between SIGTERM and a forced exit.
    ``batch``: pending keys fetched per look (tried in random order to spread workers out), and the
    most reserved at once (see *Reserving ahead* above).
    """

    def __init__(
        self,
        tables: list,
        *,
        device: str | None = None,
        max_jobs: int | None = None,
        idle_exit: float | None = None,
        poll: float = DEFAULT_POLL_S,
        heartbeat: float = DEFAULT_HEARTBEAT_S,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT_S,
        batch: int = DEFAULT_BATCH,
        refresh: bool = True,
        threads: int | None = None,
        start_timeout: float = DEFAULT_START_TIMEOUT_S,
    ) -> None:
        if not tables:
            raise WorkerError("no tables to work on")
        for name, value in (("max_jobs", max_jobs), ("batch", batch)):
            if value is not None and value < 1:
                raise WorkerError(f"{name} must be at least 1, got {value}")
        for name, value in (("poll", poll), ("heartbeat", heartbeat), ("stop_timeout", stop_timeout)):
            if not value > 0:
                raise WorkerError(f"{name} must be positive, got {value}")
        for name, value in (("idle_exit", idle_exit), ("start_timeout", start_timeout)):
            if value is not None and value < 0:
                raise WorkerError(f"{name} must not be negative, got {value}")
        self.tables = tables
        self.device = device
        self.threads = threads
        self.max_jobs = max_jobs
        self.idle_exit = idle_exit
        self.poll = poll
        self.heartbeat_interval = heartbeat
        self.stop_timeout = stop_timeout
        self.batch = batch
        self.refresh = refresh
        self.start_timeout = start_timeout
        self.summary = Summary()
        self._done: list[tuple[dict, float]] = []  # computed, job row not yet completed
        self._make_seconds: dict[str, collections.deque] = {}  # recent makes' durations, per table
        self._stop = threading.Event()
        self._in_make = False
        self._state = dict(state="idle", job_table="", job_key="")
        self.host = platform.node()
        self.pid = os.getpid()
        self.name = f"{self.host[:80]}:{self.pid}:{secrets.token_hex(3)}"

    # -- signals -------------------------------------------------------------------------------

    def _on_signal(self, signum, frame) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self.summary.reason = signal.Signals(signum).name
        self._state["state"] = "stopping"
        # The hard bound: SIGALRM's default action ends the process without needing Python.
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.setitimer(signal.ITIMER_REAL, self.stop_timeout)
        if self._in_make:
            self._in_make = False
            raise StopRequested(f"{self.summary.reason} received: worker {self.name} is stopping")

    def stop(self) -> None:
        """Ask the worker to finish after its current job (for in-process use)."""
        self._stop.set()

    # -- one job -------------------------------------------------------------------------------

    def _reset_connection(self):
        return reconnect(self._stop)

    def _unreachable(self, message: str) -> str:
        """A make's error message, marked as a lost connection when the server is unreachable now.

        Whatever the driver said (refused, reset, login failed while reconnecting), a make that
        failed while the database was gone was cut short: the scheduler re-queues it.
        """
        if self._connected() or queues.transient_reason(message):
            return message
        return f"LostConnectionError: the database was unreachable during the make ({message})"

    @staticmethod
    def _connected() -> bool:
        import datajoint as dj

        try:
            return bool(dj.conn().is_connected)
        except Exception:
            return False

    def _settle(self, jobs, key: dict) -> bool:
        """After an interrupted make: mark the job done if its result committed; return whether it did."""
        if key not in jobs.target:
            return False
        self._complete(jobs, [(key, None)])
        return True

    def _complete(self, jobs, done: list[tuple[dict, float | None]]) -> None:
        """Mark computed jobs (key, make seconds or None) done, if this worker still holds them.

        Deleted in one statement, or kept as ``success`` with their durations when
        ``jobs.keep_completed`` is set (as DataJoint's ``Job.complete`` does).
        """
        from datajoint.condition import make_condition

        q = jobs.adapter.quote_identifier
        mine = f"{q('host')}=%s AND {q('pid')}=%s"
        if not jobs.connection._config.jobs.keep_completed:
            condition = make_condition(jobs, [key for key, _ in done], set())
            jobs.connection.query(f"DELETE FROM {jobs.full_table_name} WHERE ({condition}) AND {mine}",
                                  args=[self.host, self.pid])
            return
        for key, seconds in done:
            jobs.connection.query(
                f"UPDATE {jobs.full_table_name} SET {q('status')}='success', "
                f"{q('completed_time')}=CURRENT_TIMESTAMP(3), {q('duration')}=%s "
                f"WHERE {queues._where(jobs, key)} AND {mine}",
                args=[seconds, self.host, self.pid],
            )

    def _hand_back(self, jobs, key: dict) -> None:
        """Put the job this worker was running back to pending (its make was interrupted)."""
        self._reset_connection()
        if self._settle(jobs, key):
            return
        q = jobs.adapter.quote_identifier
        cursor = jobs.connection.query(
            f"UPDATE {jobs.full_table_name} SET {q('status')}='pending', {q('reserved_time')}=NULL, "
            f"{q('completed_time')}=NULL, {q('error_message')}='', {q('error_stack')}=NULL, "
            f"{q('host')}='', {q('pid')}=0, {q('connection_id')}=0 "
            f"WHERE {queues._where(jobs, key)} AND {q('host')}=%s AND {q('pid')}=%s AND "
            f"({q('status')}='reserved' OR ({q('status')}='error' AND {q('error_message')} LIKE %s))",
            args=[self.host, self.pid, StopRequested.__name__ + "%"],
        )
        if cursor.rowcount:
            self.summary.handed_back += 1
            log.info("handed %s %s back to pending", jobs.target.__class__.__name__, queues.key_json(key))

    def _record_escaped(self, jobs, key: dict, error: BaseException, stack: str | None = None) -> None:
        """An exception escaped DataJoint's own handling (the connection broke while it recorded the error)."""
        message = self._unreachable(f"{type(error).__name__}: {' '.join(str(error).split())}")
        stack = stack or traceback.format_exc()
        log.error("%s %s: %s", jobs.target.__class__.__name__, queues.key_json(key), message)
        while True:
            self._reset_connection()
            try:
                if self._settle(jobs, key):
                    return
                q = jobs.adapter.quote_identifier
                if not jobs & key & {"host": self.host, "pid": self.pid} & f"{q('status')}='reserved'":
                    log.warning("%s %s changed hands meanwhile; its failure here is not recorded",
                                jobs.target.__class__.__name__, queues.key_json(key))
                    return
                jobs.error(key, error_message=message, error_stack=stack)
                break
            except Exception as again:
                if not queues.transient_reason(f"{type(again).__name__}: {again}"):
                    raise
                log.warning("connection lost again while recording the failure (%s); retrying", again)
        self.summary.failed += 1

    def _run_one(self, jobs, key: dict) -> str:
        """Compute one job this worker holds; return ``success``, ``error`` or ``skipped`` (already computed).

        The make runs in DataJoint's direct mode (its transaction, its ``key in table`` check);
        the reservation and completion around it are this worker's (see :meth:`_claim`).
        """
        table = jobs.target
        name = table.__class__.__name__
        self._state.update(state="busy", job_table=table.full_table_name, job_key=queues.key_json(key))
        started = time.monotonic()
        try:
            self._in_make = True
            result = table._populate1(key, None, suppress_errors=True, return_exception_objects=True)
            self._in_make = False
        except BaseException as error:
            self._in_make = False
            if self._stop.is_set() or isinstance(error, (StopRequested, KeyboardInterrupt)):
                self._hand_back(jobs, key)
                raise StopRequested("stopping") from None
            self._record_escaped(jobs, key, error)
            return "error"
        finally:
            self._in_make = False
            self._state.update(state="stopping" if self._stop.is_set() else "idle", job_table="", job_key="")
        seconds = time.monotonic() - started
        self._make_seconds.setdefault(table.full_table_name, collections.deque(maxlen=self.batch)).append(seconds)
        if isinstance(result, tuple) and _missing_input(result[1]):
            # Not ready, not wrong: the job goes back to pending; the refresh drops it while the
            # input stays out of the key source and queues it again once the input lands.
            message = str(result[1])
            log.warning("%s %s handed back: %s", name, queues.key_json(key), message)
            if queues.hand_back_unready(jobs, key, message, host=self.host, pid=self.pid, delay=self.poll):
                self.summary.not_ready += 1
            return "not ready"
        if isinstance(result, tuple):
            error = result[1]
            message = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            message = self._unreachable(message)
            log.error("%s %s failed: %s", name, queues.key_json(key), message)
            stack = "".join(traceback.format_exception(error))
            try:
                jobs.error(key, error_message=message, error_stack=stack)
            except Exception:  # the connection broke while recording: wait for the server, record it then
                self._record_escaped(jobs, key, error, stack)
                return "error"
            self.summary.failed += 1
            return "error"
        self._done.append((key, seconds))
        if result is True:
            self.summary.done += 1
            log.info("%s %s done in %.2f s", name, queues.key_json(key), seconds)
            return "success"
        return "skipped"

    # -- reservations --------------------------------------------------------------------------

    def _prefetch(self, jobs) -> int:
        """How many jobs to reserve at once: about ``PREFETCH_HORIZON_S`` of work, at most ``batch``.

        Judged by the slowest of the table's recent makes: a table whose makes take longer than
        the horizon (any model training) has its jobs reserved one at a time, so a worker never
        sits on work another worker could start.  Only fast makes are reserved ahead, where one
        statement per job for reservation and one for completion would cost as much as the makes.
        """
        recent = self._make_seconds.get(jobs.target.full_table_name)
        if not recent:
            return 1
        return max(1, min(self.batch, int(PREFETCH_HORIZON_S / max(max(recent), 1e-6))))

    def _slow(self, jobs) -> bool:
        """Whether the table's last make took longer than the horizon."""
        recent = self._make_seconds.get(jobs.target.full_table_name)
        return bool(recent) and recent[-1] > PREFETCH_HORIZON_S

    def _claim(self, jobs, keys: list[dict]) -> list[dict]:
        """Reserve those of ``keys`` still pending and due, in one statement; return the ones now held.

        Atomic like DataJoint's ``Job.reserve`` (``UPDATE ... WHERE status='pending'``): of two
        workers claiming the same key, exactly one changes the row.  Records the same columns.
        """
        from datajoint.condition import make_condition
        from datajoint.jobs import _get_job_version

        q = jobs.adapter.quote_identifier
        connection = jobs.connection
        pks = [{k: key[k] for k in jobs.primary_key} for key in keys]
        these = make_condition(jobs, pks, set())
        mine = [self.host, self.pid, connection.connection_id]
        cursor = connection.query(
            f"UPDATE {jobs.full_table_name} SET {q('status')}='reserved', {q('host')}=%s, {q('pid')}=%s, "
            f"{q('connection_id')}=%s, {q('user')}=%s, {q('version')}=%s, {q('reserved_time')}=CURRENT_TIMESTAMP(3) "
            f"WHERE ({these}) AND {q('status')}='pending' "
            f"AND {q('scheduled_time')} <= CURRENT_TIMESTAMP(3)",
            args=[*mine, connection.get_user(), _get_job_version(connection._config)],
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

    def _finish(self, jobs, unstarted: list[dict]) -> None:
        """Complete the computed jobs and hand unstarted reservations back to pending."""
        from datajoint.condition import make_condition

        done, self._done = self._done, []
        if done:
            self._complete(jobs, done)
        if unstarted:
            q = jobs.adapter.quote_identifier
            cursor = jobs.connection.query(
                f"UPDATE {jobs.full_table_name} SET {q('status')}='pending', {q('reserved_time')}=NULL, "
                f"{q('host')}='', {q('pid')}=0, {q('connection_id')}=0 "
                f"WHERE ({make_condition(jobs, unstarted, set())}) AND {q('status')}='reserved' "
                f"AND {q('host')}=%s AND {q('pid')}=%s",
                args=[self.host, self.pid],
            )
            self.summary.handed_back += cursor.rowcount

    # -- the loop ------------------------------------------------------------------------------

    @property
    def _attempted(self) -> int:
        return self.summary.done + self.summary.failed

    def _pending(self, jobs) -> list[dict]:
        q = jobs.adapter.quote_identifier
        keys = (jobs & f"{q('status')}='pending'" & f"{q('scheduled_time')} <= CURRENT_TIMESTAMP(3)").keys(
            order_by="priority ASC, scheduled_time ASC", limit=self.batch
        )
        random.shuffle(keys)
        return keys

    def _round(self) -> bool:
        """Work on the most upstream table that has pending jobs; return whether any was found."""
        for jobs in self._queues:
            keys = self._pending(jobs)
            if not keys:
                continue
            while keys and not self._stopping():
                n = self._prefetch(jobs)
                if self.max_jobs:
                    n = min(n, self.max_jobs - self._attempted)
                claimed, keys = self._claim(jobs, keys[:n]), keys[n:]
                started = 0
                try:
                    for key in claimed:
                        if self._stopping():
                            break
                        started += 1
                        self._run_one(jobs, key)
                        if self._slow(jobs):
                            break  # the jobs reserved behind a slow make go back to other workers
                finally:
                    self._finish(jobs, claimed[started:])
            return True
        return False

    def _stopping(self) -> bool:
        return self._stop.is_set() or bool(self.max_jobs and self._attempted >= self.max_jobs)

    def _refresh(self) -> int:
        added = 0
        for jobs in self._queues:
            if self._stop.is_set():
                break
            added += queues.refresh(jobs)
        return added

    def _snapshot(self) -> dict:
        import datajoint as dj

        return dict(
            self._state, worker=self.name, host=self.host, pid=self.pid, device=self.device or "",
            jobs_done=self.summary.done, jobs_failed=self.summary.failed,
            connection_id=dj.conn().connection_id,
        )

    def _register(self) -> None:
        from schemas import operations

        row = self._snapshot()
        # skip_duplicates: a start-up retried after a lost connection may find its own row committed.
        operations.Worker.insert1({k: row[k] for k in ("worker", "host", "pid", "device", "connection_id", "state")},
                                  skip_duplicates=True)

    def _start_up(self):
        """Connect, open the job queues and register; a server that is away is waited for, as in the loop."""
        import datajoint as dj

        def start():
            connection = dj.conn()
            make_resilient(connection)
            self._queues = [queues.queue(table) for table in self.tables]
            self._register()
            return connection

        return until_reachable(start, self._stop, "at start", self.start_timeout)

    def _unregister(self) -> None:
        from schemas import operations

        try:
            (operations.Worker & dict(worker=self.name)).delete_quick()
        except Exception as err:
            log.warning("could not remove this worker's heartbeat row (%s); the scheduler will", err)

    def run(self) -> Summary:
        """Work until stopped, out of jobs (``max_jobs``) or idle (``idle_exit``); return the tally."""
        self.device = use_device(self.device)
        from pipeline.device import configure_threads

        self.threads = configure_threads(self.threads)
        handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        heartbeat = None
        registered = False
        try:
            connection = self._start_up()
            registered = True
            heartbeat = Heartbeat(self.name, self.heartbeat_interval, self._snapshot)
            heartbeat.start()
            log.info(
                "worker %s on %s (device %s, %d threads): %s", self.name, connection.conn_info["host"],
                self.device or "default", self.threads,
                ", ".join(t.__name__ for t in self.tables),
            )
            self._loop()
        except StopRequested:
            pass
        finally:
            self._stop.set()
            if heartbeat is not None:
                heartbeat.stop()
            if registered:
                self._unregister()
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            signal.setitimer(signal.ITIMER_REAL, 0)
        log.info(
            "worker %s exits (%s): %d done, %d failed, %d handed back, %d not ready", self.name,
            self.summary.reason or "stopped", self.summary.done, self.summary.failed, self.summary.handed_back,
            self.summary.not_ready,
        )
        return self.summary

    def _loop(self) -> None:
        idle_since = time.monotonic()
        last_refresh = float("-inf")
        while not self._stop.is_set():
            if self.max_jobs and self._attempted >= self.max_jobs:
                self.summary.reason = f"{self.max_jobs} job(s) done"
                return
            try:
                if self._round():
                    idle_since = time.monotonic()
                    continue
                now = time.monotonic()
                idle_over = self.idle_exit is not None and now - idle_since >= self.idle_exit
                # Downstream keys become ready only as jobs finish: look once more before leaving idle.
                if self.refresh and (now - last_refresh >= self.poll or (idle_over and last_refresh < idle_since)):
                    last_refresh = now
                    if self._refresh():
                        continue
            except StopRequested:
                raise
            except Exception as err:
                # Between makes too, a server that went away is waited for, not a reason to exit.
                if not lost_connection(err) and self._connected():
                    raise
                log.warning("lost the database (%s); waiting for it", " ".join(str(err).split()))
                self._reset_connection()
                continue
            if idle_over:
                self.summary.reason = f"idle for {self.idle_exit:g} s"
                return
            wait = self.poll if self.idle_exit is None else min(self.poll, max(self.idle_exit - (now - idle_since), 0.01))
            self._stop.wait(wait)

