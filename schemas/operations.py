"""Bookkeeping of the distributed populate workers: heartbeats of live workers and retry counts.

``{prefix}__operations`` holds no science.  :class:`Worker` lets the scheduler tell a live worker
from a dead one (a worker beats from its own connection while its main connection is busy in a
``make``); :class:`JobRetry` keeps, across scheduler restarts, how often a job was put back to
pending automatically, so a job that keeps killing its worker stops being retried.

The job queues themselves are DataJoint's per-table ``~~name`` tables; :func:`declare_job_tables`
creates them during ``setup`` so that workers never declare anything.
"""

from __future__ import annotations

import logging

import datajoint as dj

from schemas.binding import StageSchema

schema = StageSchema("operations")


@schema
class Worker(dj.Manual):
    definition = """
    # a worker process; a fresh heartbeat means it is alive
    worker: varchar(96)                 # host:pid:token, unique per process start
    ---
    host: varchar(255)                  # as recorded in the job tables (platform.node())
    pid: int32                          # as recorded in the job tables
    connection_id: int64                # the worker's main database connection (the one jobs record)
    device = '': varchar(32)            # the device its makes use, e.g. 'cuda:0'
    started = CURRENT_TIMESTAMP(3): datetime(3)     # database-server time
    heartbeat = CURRENT_TIMESTAMP(3): datetime(3)   # database-server time of the latest beat
    state = 'idle': enum('idle', 'busy', 'stopping')
    job_table = '': varchar(255)        # full name of the table whose job it holds
    job_key = '': varchar(1024)         # JSON primary key of that job
    jobs_done = 0: int32                # makes that succeeded
    jobs_failed = 0: int32              # makes that raised
    """


@schema
class JobRetry(dj.Manual):
    definition = """
    # how often the scheduler put a job back to pending by itself (transient error or dead worker)
    job_table: varchar(255)             # full name of the auto-populated table
    key_hash: char(32)                  # md5 of the job key's canonical JSON
    ---
    job_key: varchar(2047)              # canonical JSON of the job key
    retries: int32                      # automatic re-queues so far
    last_reason: varchar(2047)          # why it was re-queued the last time
    last_retry = CURRENT_TIMESTAMP(3): datetime(3)  # database-server time
    """


def declare_job_tables(tables=None) -> list[str]:
    """Create the job queue (``~~name``) of each auto-populated table that lacks one.

    ``tables`` defaults to :func:`schemas.computed_tables`.  Only ``setup`` should call this:
    DataJoint otherwise declares a job table on first use, and workers starting together race.
    Returns the full names of the job tables created.
    """
    from datajoint.jobs import Job

    if tables is None:
        from schemas import computed_tables

        tables = computed_tables()
    created = []
    quiet = _NativeTypeWarnings()
    logging.getLogger("datajoint").addFilter(quiet)
    try:
        for table in tables:
            jobs = Job(table())
            if not jobs.is_declared:
                jobs.declare()
                created.append(jobs.full_table_name)
    finally:
        logging.getLogger("datajoint").removeFilter(quiet)
    return created


class _NativeTypeWarnings(logging.Filter):
    """Drops DataJoint's "Native type ... is used" warnings while it declares job queues.

    On PostgreSQL, DataJoint 2.3 copies a job queue's key from the parent's declared SQL type
    (``integer``) rather than its core type (``int32``) and then warns about its own choice, once
    per key attribute and table: noise a user can do nothing about.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "Native type" not in record.getMessage()
