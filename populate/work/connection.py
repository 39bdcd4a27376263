"""A worker's database connection: waiting for a server that went away, telling when it is gone, and
settling the job a make was running when it went (done, handed back, or recorded as failed)."""

from __future__ import annotations

import logging
import threading
import time
import warnings

from populate.work import jobs as queues
from populate.work import reservation

log = logging.getLogger(__name__)

RECONNECT_MAX_WAIT_S = 30.0

MARIADB_WARNING = "MariaDB is not officially supported by DataJoint"
"""The start of DataJoint's warning on every MariaDB connection (docs/design.md: best-effort support)."""


def quiet_mariadb_warning() -> None:
    """Log DataJoint's MariaDB warning as one debug line of this module instead of printing it.

    Python prints a warning as two lines (the message, then the source line that raised it), so a
    one-line error on MariaDB became three.  Other warnings are shown as before.  Idempotent.
    """
    shown = warnings.showwarning
    if getattr(shown, "quiets_mariadb", False):
        return

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if MARIADB_WARNING in str(message):
            log.debug("%s", " ".join(str(message).split()))
            return
        shown(message, category, filename, lineno, file, line)

    showwarning.quiets_mariadb = True  # type: ignore[attr-defined]
    warnings.showwarning = showwarning


class StopRequested(SystemExit):
    """Raised inside a running make when the worker has been told to stop."""


def lost_connection(error: BaseException) -> bool:
    """Whether ``error`` says the server went away (or is refusing this login), not that a query is wrong."""
    return queues.transient_reason(f"{type(error).__name__}: {error}") == "lost connection"


def reconnect(stop: threading.Event, deadline: float | None = None):
    """A fresh connection; while the server is unreachable, wait for it (backing off to
    ``RECONNECT_MAX_WAIT_S``) unless ``stop`` is set, then raise :class:`StopRequested`, or
    ``deadline`` (``time.monotonic()``) passed, then raise the last error."""
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
    from schemas import compat

    compat.forget_transaction(connection)
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
            if not lost_connection(err) and connected():
                raise
            if deadline is not None and time.monotonic() >= deadline:
                raise
            log.warning("lost the database %s (%s); waiting for it", what, " ".join(str(err).split()))
            reconnect(stop, deadline)


def connected() -> bool:
    """Whether this process's connection is up now."""
    import datajoint as dj

    try:
        return bool(dj.conn().is_connected)
    except Exception:
        return False


def mark_unreachable(message: str) -> str:
    """A make's error message, marked as a lost connection when the server is unreachable now.

    Whatever the driver said (refused, reset, login failed while reconnecting), a make that
    failed while the database was gone was cut short: the scheduler re-queues it.
    """
    if connected() or queues.transient_reason(message):
        return message
    return f"LostConnectionError: the database was unreachable during the make ({message})"


def settle(jobs, key: dict, *, host: str, pid: int) -> bool:
    """After an interrupted make: mark the job done if its result committed; return whether it did."""
    if key not in jobs.target:
        return False
    reservation.complete(jobs, [(key, None)], host=host, pid=pid)
    return True


def hand_back(jobs, key: dict, *, host: str, pid: int, stop: threading.Event) -> bool:
    """Reconnect and put the job whose make was interrupted back to pending (or mark it done if its
    result committed); return whether it went back to pending."""
    reconnect(stop)
    if settle(jobs, key, host=host, pid=pid):
        return False
    if reservation.hand_back_interrupted(jobs, key, host=host, pid=pid, stop_error=StopRequested.__name__):
        log.info("handed %s %s back to pending", jobs.target.__class__.__name__, queues.key_json(key))
        return True
    return False


def record_failure(
    jobs, key: dict, error: BaseException, stack: str, *, host: str, pid: int, stop: threading.Event
) -> bool:
    """Record a make's failure once the server answers again (the connection broke while DataJoint
    recorded it); return whether it was recorded (not when the result committed after all, or the
    job changed hands meanwhile)."""
    name = jobs.target.__class__.__name__
    message = mark_unreachable(f"{type(error).__name__}: {' '.join(str(error).split())}")
    log.error("%s %s: %s", name, queues.key_json(key), message)
    while True:
        reconnect(stop)
        try:
            if settle(jobs, key, host=host, pid=pid):
                return False
            q = jobs.adapter.quote_identifier
            if not jobs & key & {"host": host, "pid": pid} & f"{q('status')}='reserved'":
                log.warning(
                    "%s %s changed hands meanwhile; its failure here is not recorded", name, queues.key_json(key)
                )
                return False
            jobs.error(key, error_message=message, error_stack=stack)
            return True
        except Exception as again:
            if not queues.transient_reason(f"{type(again).__name__}: {again}"):
                raise
            log.warning("connection lost again while recording the failure (%s); retrying", again)
