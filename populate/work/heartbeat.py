"""Liveness of a worker: its row in ``{prefix}__operations.worker``, beaten from a thread of its own.

A background thread beats every ``heartbeat`` seconds through its own connection (the main one is
busy inside a make), with the worker's host, pid, main connection id, device and the job it holds.
The scheduler re-queues a reserved job only when its connection is gone from the server *and* its
worker's heartbeat is stale (see :mod:`populate.work.scheduler`).
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)

ROW = ("worker", "host", "pid", "device", "connection_id", "state")
"""Columns a worker registers with; the heartbeat updates the state and its tallies."""


def register(snapshot: dict) -> None:
    """Insert the worker's row (``snapshot`` holds at least :data:`ROW`)."""
    from schemas import operations

    # skip_duplicates: a start-up retried after a lost connection may find its own row committed.
    operations.Worker.insert1({k: snapshot[k] for k in ROW}, skip_duplicates=True)


def unregister(worker: str) -> None:
    """Remove the worker's row; the scheduler removes it if this fails."""
    from schemas import operations

    try:
        (operations.Worker & dict(worker=worker)).delete_quick()
    except Exception as err:
        log.warning("could not remove this worker's heartbeat row (%s); the scheduler will", err)


def open_connection():
    """A new connection with the configured settings (for the heartbeat thread)."""
    import datajoint as dj

    config = dj.config
    return dj.Connection(
        config["database.host"],
        config["database.user"],
        config["database.password"],
        use_tls=config["database.use_tls"],
    )


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
