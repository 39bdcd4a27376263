"""DataJoint 2.x tables of the pipeline, one module per stage.

Importing a stage module binds its tables to ``{PIPELINE_PREFIX}_{stage}``; only
:func:`declare_all` (run by ``python -m populate setup``) creates missing tables.
"""

from __future__ import annotations

import importlib

STAGES = ("recordings", "stats", "models", "similarity", "classifiers", "operations")
"""Stage modules in dependency order."""


def declare_all() -> list[str]:
    """Create every schema and table that does not exist yet (idempotent); return the schema names."""
    import datajoint as dj

    from schemas import db

    db.configure()
    previous = dj.config.database.create_tables
    dj.config.database.create_tables = True
    try:
        modules = [importlib.import_module(f"{__name__}.{stage}") for stage in STAGES]
        # Job queues too: DataJoint would otherwise declare them on first use, racing across workers.
        from schemas.operations import declare_job_tables

        declare_job_tables(computed_tables())
    finally:
        dj.config.database.create_tables = previous
    return [module.schema.database for module in modules]


def drop_all() -> list[str]:
    """Drop every schema of the current prefix, downstream first; return the names dropped."""
    import datajoint as dj

    from schemas import db

    db.configure()
    dropped = []
    existing = set(dj.list_schemas())
    for stage in reversed(STAGES):
        name = db.schema_name(stage)
        if name in existing:
            dj.Schema(name, create_schema=False, create_tables=False).drop(prompt=False)
            dropped.append(name)
    return dropped


def module_tables(module, kinds: type | tuple[type, ...] | None = None) -> list:
    """The tables of ``kinds`` (default: auto-populated, Imported or Computed) a module defines, in
    definition order."""
    import datajoint as dj

    kinds = kinds or (dj.Imported, dj.Computed)
    return [
        value
        for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, kinds) and value.__module__ == module.__name__
    ]


def computed_tables() -> list:
    """Every auto-populated table of the pipeline, upstream first."""
    return [table for stage in STAGES for table in module_tables(importlib.import_module(f"{__name__}.{stage}"))]
