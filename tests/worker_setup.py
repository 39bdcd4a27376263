"""Declares the worker test tables (``tests.worker_tables``) and their job queues under this run's prefix."""

from __future__ import annotations

import importlib
import sys


def declare():
    """Import ``tests.worker_tables`` with table creation on, declare its job queues; return the module.

    An already imported module is reloaded, so that tables a previous test module dropped are declared again.
    """
    import datajoint as dj

    previous = dj.config.database.create_tables
    dj.config.database.create_tables = True
    try:
        operations = importlib.import_module("schemas.operations")
        name = "tests.worker_tables"
        tables = importlib.reload(sys.modules[name]) if name in sys.modules else importlib.import_module(name)
    finally:
        dj.config.database.create_tables = previous
    operations.declare_job_tables([tables.Square, tables.Cube])
    return tables


def clear(tables) -> None:
    """Empty the worker test tables, their job queues and the workers' registry and retry counts
    (``tables``: the module :func:`declare` returned)."""
    from schemas import operations

    for table in (tables.Square, tables.Cube):
        table.jobs.delete_quick()
        table.Piece.delete_quick()
        table.delete_quick()
    tables.Item.delete_quick()
    operations.Worker.delete_quick()
    operations.JobRetry.delete_quick()
