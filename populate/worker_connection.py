"""A worker's database connection: waiting for a server that went away, and telling when it is gone."""

from __future__ import annotations

import logging
import threading

from schemas import compat

from . import jobs as queues

log = logging.getLogger(__name__)

RECONNECT_MAX_WAIT_S = 30.0


class StopRequested(SystemExit):
    """Raised inside a running make when the worker has been told to stop."""


def reconnect(stop: threading.Event):
    """A fresh connection; while the server is unreachable, wait for it (backing off to
    ``RECONNECT_MAX_WAIT_S``) unless ``stop`` is set, then raise :class:`StopRequested`."""
    import datajoint as dj

    connection = dj.conn()
    try:
        connection.close()  # the server rolls back whatever the interrupted make left open
    except Exception:
        pass
    delay = 1.0
    while True:
        try:
            connection.connect()
            break
        except Exception as err:
            if stop.is_set():
                raise StopRequested(f"stopping while the database is unreachable ({err})") from None
            log.warning("database unreachable (%s); reconnecting in %.0f s", " ".join(str(err).split()), delay)
            stop.wait(delay)
            delay = min(delay * 2, RECONNECT_MAX_WAIT_S)
    compat.forget_transaction(connection)
    return connection


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
