"""Declares the worker test tables (``tests.worker_tables``) and their job queues under this run's prefix."""

from __future__ import annotations

import importlib
import sys


def declare():
    """Bind the tables to this run's prefix (``PIPELINE_PREFIX``) with table creation on, import
    ``tests.worker_tables``, declare its job queues; return the module.  The tables stay bound without
    table creation.

    An already imported module is reloaded, so that tables a previous test module dropped are declared again.
    """
    import schemas
    from schemas import operations

    schemas.activate(create_tables=True)
    try:
        name = "tests.worker_tables"
        tables = importlib.reload(sys.modules[name]) if name in sys.modules else importlib.import_module(name)
    finally:
        schemas.activate()
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
