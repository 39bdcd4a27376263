"""Checkpoints and progress lines of long makes, so that an interrupted job resumes where it stood.

``{prefix}__checkpoints`` holds no science.  A training make (``TrainedModel``, ``TrainedClassifier``)
saves its training state to :class:`Checkpoint` every ``PIPELINE_CHECKPOINT_MINUTES`` (see
:mod:`pipeline.checkpoint`) and its latest progress line to :class:`Progress`; the worker that next
reserves the job (after a SIGTERM hand-back, a time limit or a SIGKILL and the scheduler's requeue)
resumes from the checkpoint.  The make deletes both rows in the transaction that inserts its result.

Rows are keyed by the computed table's full name and the md5 of the job key's canonical JSON, as
``{prefix}__operations.job_retry`` is.  A checkpoint's state is a ``<blob@pipeline>`` in the object
store: a replaced or deleted checkpoint leaves its file to ``python -m populate gc``.  A checkpoint is
used only by a make of the same inputs and code (``inputs_hash``); any other is replaced.

An existing database gains these tables by running ``python -m populate setup`` once; until then
makes train without checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os

import datajoint as dj
import numpy as np

import pipeline
from pipeline.checkpoint import Checkpointer, CheckpointSchedule
from pipeline.training_log import ProgressLog
from schemas.binding import StageSchema

log = logging.getLogger(__name__)

schema = StageSchema("checkpoints")


@schema
class Checkpoint(dj.Manual):
    definition = """
    # the latest saved training state of a running make, from which an interrupted job resumes
    job_table: varchar(255)             # full name of the computed table
    key_hash: char(32)                  # md5 of the job key's canonical JSON
    ---
    job_key: varchar(2047)              # canonical JSON of the job key
    inputs_hash: char(32)               # md5 of the make's inputs and code version
    step: int64                         # training steps taken when it was saved
    state: <blob@pipeline>              # uint8 bytes of the packed state (pipeline.checkpoint.pack)
    saved = CURRENT_TIMESTAMP(3): datetime(3)   # database-server time
    """


@schema
class Progress(dj.Manual):
    definition = """
    # the latest progress line of a running make, shown by `python -m populate status`
    job_table: varchar(255)             # full name of the computed table
    key_hash: char(32)                  # md5 of the job key's canonical JSON
    ---
    job_key: varchar(2047)              # canonical JSON of the job key
    line: varchar(1024)                 # e.g. 'fit: step 1200/20000, loss 0.81, val_correlation 0.23, 45 it/s'
    updated = CURRENT_TIMESTAMP(3): datetime(3)  # database-server time
    """


def key_json(key: dict) -> str:
    """Canonical JSON of a primary key (sorted names, numpy scalars as plain values)."""
    plain = {k: v.item() if isinstance(v, np.generic) else v for k, v in sorted(key.items())}
    return json.dumps(plain, sort_keys=True, default=str)


def key_hash(key: dict) -> str:
    return hashlib.md5(key_json(key).encode()).hexdigest()


def available() -> bool:
    """Whether the checkpoint tables exist on the server (an older database lacks them until ``setup``)."""
    return schema.is_activated() and Checkpoint().is_declared and Progress().is_declared


class JobCheckpoint:
    """The checkpoint and progress rows of one job: the :class:`pipeline.checkpoint.CheckpointStore` a make
    hands to training, and the ``report`` of its progress log.

    table : the computed table (instance or class); key : the job's primary key; inputs : what the
    make fetched (JSON-able), so that a checkpoint of other inputs or code is not resumed from.
    """

    def __init__(self, table, key: dict, inputs) -> None:
        self.row = dict(job_table=table.full_table_name, key_hash=key_hash(key))
        self.job_key = key_json(key)
        text = json.dumps([inputs, pipeline.code_version()], sort_keys=True, default=str)
        self.inputs_hash = hashlib.md5(text.encode()).hexdigest()

    def load(self) -> bytes | None:
        rows = (Checkpoint & self.row).to_dicts()
        if not rows:
            return None
        if rows[0]["inputs_hash"] != self.inputs_hash:
            log.warning("%s: the checkpoint was saved for other inputs or code; starting afresh", self.job_key)
            return None
        return np.asarray(rows[0]["state"], dtype=np.uint8).tobytes()

    def save(self, data: bytes, step: int) -> None:
        row = dict(self.row, job_key=self.job_key, inputs_hash=self.inputs_hash, step=step)
        replace(Checkpoint, dict(row, state=np.frombuffer(data, dtype=np.uint8)))

    def report(self, line: str) -> None:
        """Keep ``line`` as the job's latest progress (a failure to write it only costs the line)."""
        try:
            replace(Progress, dict(self.row, job_key=self.job_key, line=line[:1024]))
        except Exception as err:  # a lost connection surfaces at the next save or at the insert
            log.warning("could not record the progress line (%s)", " ".join(str(err).split()))


def replace(table, row: dict) -> None:
    """Replace the row of ``row``'s primary key in one transaction (a save cut short keeps the old row)."""
    connection = schema.connection
    key = {k: row[k] for k in table.primary_key}
    if connection.in_transaction:
        (table & key).delete_quick()
        table.insert1(row)
        return
    with connection.transaction:
        (table & key).delete_quick()
        table.insert1(row)


def supervision(table, key: dict, inputs, what: str) -> tuple[Checkpointer, ProgressLog]:
    """The checkpointer and progress log of one training make of ``table`` (its progress lines start with
    ``what``), with the settings of the environment (``PIPELINE_CHECKPOINT_MINUTES`` or ``_STEPS``,
    ``PIPELINE_PROGRESS_SECONDS`` or ``_STEPS``).  ``inputs``: see :class:`JobCheckpoint`.

    Without the checkpoint tables (``setup`` not run since they were added) the make trains without
    checkpoints and its progress lines go to the log only.
    """
    schedule = CheckpointSchedule.from_env(os.environ)
    if not available():
        log.warning("no checkpoint tables on this server (run `python -m populate setup`): training without them")
        return Checkpointer(None, schedule), ProgressLog.from_env(what)
    job = JobCheckpoint(table, job_key(table, key), inputs)
    return Checkpointer(job, schedule), ProgressLog.from_env(what, report=job.report)


def job_key(table, key: dict) -> dict:
    """The primary key of ``table`` in ``key``: what the job queue and ``status`` name the job by."""
    return {name: key[name] for name in table.primary_key}


def clear(table, key: dict) -> None:
    """Delete the checkpoint and progress rows of ``table``'s job ``key`` (in the make's transaction, which
    inserts its result); their store files are left to ``gc``."""
    if available():
        row = dict(job_table=table.full_table_name, key_hash=key_hash(job_key(table, key)))
        (Checkpoint & row).delete_quick()
        (Progress & row).delete_quick()
