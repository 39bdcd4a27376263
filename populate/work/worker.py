"""A populate worker: one process computing one job at a time from DataJoint's job queues.

``python -m populate worker`` runs :class:`Worker`.  It walks the computed tables upstream first,
reserves pending jobs (an atomic ``UPDATE ... WHERE status='pending'``, as DataJoint's
``Job.reserve``), runs the table's ``make`` in this process (no multiprocessing, so nothing forks
once CUDA is up), one job at a time, and records a failing make as an ``error`` job instead of
dying.  It never declares a table: a missing job table is an error telling the operator to run
``setup``.

Reserving ahead (:mod:`populate.work.reservation`): jobs of a table whose recent makes all took under
``reservation.PREFETCH_HORIZON_S`` are reserved several at once, the others one at a time.  Liveness: a
heartbeat thread (:mod:`populate.work.heartbeat`).  Device and threads: :mod:`populate.work.settings`.

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

import collections
import logging
import os
import platform
import random
import secrets
import signal
import threading
import time
import traceback
from dataclasses import dataclass

from populate.work import jobs as queues
from populate.work import reservation
from populate.work.connection import (
    StopRequested,
    connected,
    hand_back,
    lost_connection,
    mark_unreachable,
    reconnect,
    record_failure,
    until_reachable,
)
from populate.work.heartbeat import Heartbeat, register, unregister
from populate.work.settings import (
    DEFAULT_BATCH,
    DEFAULT_HEARTBEAT_S,
    DEFAULT_POLL_S,
    DEFAULT_START_TIMEOUT_S,
    DEFAULT_STOP_TIMEOUT_S,
    WorkerError,
    check_settings,
    use_device,
)
from schemas import compat
from schemas.readiness import MissingInput

log = logging.getLogger(__name__)


@dataclass
class Summary:
    done: int = 0
    failed: int = 0
    handed_back: int = 0
    not_ready: int = 0  # jobs handed back because their make found an input missing
    reason: str = ""


def check_training_settings() -> None:
    """Refuse, before any job is reserved, checkpoint and progress settings that every training make
    would refuse (``PIPELINE_CHECKPOINT_MINUTES``, ``PIPELINE_PROGRESS_SECONDS``, ...)."""
    from pipeline.checkpoint import CheckpointSchedule
    from pipeline.config import ConfigError
    from pipeline.training_log import ProgressLog

    try:
        CheckpointSchedule.from_env(os.environ)
        ProgressLog.from_env("check")
    except ConfigError as error:
        raise WorkerError(str(error)) from None


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
        check_settings(
            WorkerError,
            at_least_one=dict(max_jobs=max_jobs, batch=batch),
            positive=dict(poll=poll, heartbeat=heartbeat, stop_timeout=stop_timeout),
            non_negative=dict(idle_exit=idle_exit, start_timeout=start_timeout),
        )
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
        self.make_seconds: dict[str, collections.deque] = {}  # recent makes' durations, per table
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

    _connected = staticmethod(connected)

    def _hand_back(self, jobs, key: dict) -> None:
        """Put the job this worker was running back to pending (its make was interrupted)."""
        if hand_back(jobs, key, host=self.host, pid=self.pid, stop=self._stop):
            self.summary.handed_back += 1

    def _record_escaped(self, jobs, key: dict, error: BaseException, stack: str | None = None) -> None:
        """An exception escaped DataJoint's own handling (the connection broke while it recorded the error)."""
        if record_failure(
            jobs, key, error, stack or traceback.format_exc(), host=self.host, pid=self.pid, stop=self._stop
        ):
            self.summary.failed += 1

    def _run_one(self, jobs, key: dict) -> str:
        """Compute one job this worker holds; return ``success``, ``error`` or ``skipped`` (already computed).

        The make runs in DataJoint's direct mode (its transaction, its ``key in table`` check);
        the reservation and completion around it are this worker's (see :meth:`claim`).
        """
        table = jobs.target
        name = table.__class__.__name__
        self._state.update(state="busy", job_table=table.full_table_name, job_key=queues.key_json(key))
        started = time.monotonic()
        try:
            self._in_make = True
            result = compat.populate_one(table, key)
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
        self.make_seconds.setdefault(table.full_table_name, collections.deque(maxlen=self.batch)).append(seconds)
        if isinstance(result, tuple) and isinstance(result[1], MissingInput):  # schemas.readiness
            # Not ready, not wrong: the job goes back to pending; the refresh drops it while the
            # input stays out of the key source and queues it again once the input lands.
            message = str(result[1])
            log.warning("%s %s handed back: %s", name, queues.key_json(key), message)
            if reservation.hand_back_unready(jobs, key, message, host=self.host, pid=self.pid, delay=self.poll):
                self.summary.not_ready += 1
            return "not ready"
        if isinstance(result, tuple):
            error = result[1]
            message = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            message = mark_unreachable(message)
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

    def claim(self, jobs, keys: list[dict]) -> list[dict]:
        """Reserve those of ``keys`` still pending and due; return the ones this worker now holds."""
        return reservation.claim(jobs, keys, host=self.host, pid=self.pid)

    def finish(self, jobs, unstarted: list[dict]) -> None:
        """Complete the computed jobs and hand unstarted reservations back to pending."""
        done, self._done = self._done, []
        if done:
            reservation.complete(jobs, done, host=self.host, pid=self.pid)
        if unstarted:
            self.summary.handed_back += reservation.release(jobs, unstarted, host=self.host, pid=self.pid)

    # -- the loop ------------------------------------------------------------------------------

    @property
    def _attempted(self) -> int:
        return self.summary.done + self.summary.failed

    def _pending(self, jobs) -> list[dict]:
        keys = queues.due(jobs, self.batch)
        random.shuffle(keys)
        return keys

    def _round(self) -> bool:
        """Work on the most upstream table that has pending jobs; return whether any was found."""
        for jobs in self._queues:
            keys = self._pending(jobs)
            if not keys:
                continue
            while keys and not self._stopping():
                recent = self.make_seconds.get(jobs.target.full_table_name)
                n = reservation.prefetch(recent, self.batch)
                if self.max_jobs:
                    n = min(n, self.max_jobs - self._attempted)
                claimed, keys = self.claim(jobs, keys[:n]), keys[n:]
                started = 0
                try:
                    for key in claimed:
                        if self._stopping():
                            break
                        started += 1
                        self._run_one(jobs, key)
                        if reservation.slow(self.make_seconds.get(jobs.target.full_table_name)):
                            break  # the jobs reserved behind a slow make go back to other workers
                finally:
                    self.finish(jobs, claimed[started:])
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
            self._state,
            worker=self.name,
            host=self.host,
            pid=self.pid,
            device=self.device or "",
            jobs_done=self.summary.done,
            jobs_failed=self.summary.failed,
            connection_id=dj.conn().connection_id,
        )

    def _start_up(self):
        """Connect, open the job queues and register; a server that is away is waited for, as in the loop."""
        import datajoint as dj

        def start():
            connection = dj.conn()
            compat.make_resilient(connection)
            self._queues = [queues.queue(table) for table in self.tables]
            register(self._snapshot())
            return connection

        return until_reachable(start, self._stop, "at start", self.start_timeout)

    def run(self) -> Summary:
        """Work until stopped, out of jobs (``max_jobs``) or idle (``idle_exit``); return the tally."""
        self.device = use_device(self.device)
        check_training_settings()
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
                "worker %s on %s (device %s, %d threads): %s",
                self.name,
                connection.conn_info["host"],
                self.device or "default",
                self.threads,
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
                unregister(self.name)
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            signal.setitimer(signal.ITIMER_REAL, 0)
        log.info(
            "worker %s exits (%s): %d done, %d failed, %d handed back, %d not ready",
            self.name,
            self.summary.reason or "stopped",
            self.summary.done,
            self.summary.failed,
            self.summary.handed_back,
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
            wait = (
                self.poll if self.idle_exit is None else min(self.poll, max(self.idle_exit - (now - idle_since), 0.01))
            )
            self._stop.wait(wait)
