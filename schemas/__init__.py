"""DataJoint 2.x tables of the pipeline, one module per stage.

Importing a stage module binds nothing, connects to nothing and changes no DataJoint setting (a
lab's own schemas declare their tables as DataJoint's configuration says).  :func:`activate` binds every
stage's tables to ``{prefix}__{stage}`` (prefix from ``PIPELINE_PREFIX`` unless given); only
:func:`declare_all` (run by ``python -m populate setup``) creates missing schemas and tables::

    import schemas
    schemas.activate("v1")
    from schemas.models import TrainedModel
"""

from __future__ import annotations

STAGES = ("recordings", "stats", "models", "similarity", "classifiers", "operations", "checkpoints")
"""Stage modules in dependency order."""


def stage_modules(upto: str | None = None) -> dict:
    """``{stage: module}`` of every stage in :data:`STAGES` order, or of those up to ``upto``
    (importing them binds nothing)."""
    import importlib

    from schemas.binding import load_kept_tables

    if upto is not None and upto not in STAGES:
        raise ValueError(f"unknown stage {upto!r}; stages: {', '.join(STAGES)}")
    chosen = STAGES if upto is None else STAGES[: STAGES.index(upto) + 1]
    modules = {stage: importlib.import_module(f"schemas.{stage}") for stage in chosen}
    for module in modules.values():  # the stage's tables kept in modules of their own are declared too
        load_kept_tables(module)
    return modules


def activate(
    prefix: str | None = None, *, create_tables: bool = False, connection=None, upto: str | None = None
) -> list[str]:
    """Bind every stage's tables to ``{prefix}__{stage}``, upstream first; return the schema names bound.

    prefix : lower-case words joined by single underscores; default ``PIPELINE_PREFIX`` or ``v1``.
        Another prefix than the active one rebinds every table to that prefix's schemas.
    create_tables : create missing schemas and tables (``setup`` only: workers and notebooks
        never declare).  Without it a stage whose schema does not exist stays unbound, and using its
        tables says to run ``python -m populate setup``.
    connection : a DataJoint connection; default ``dj.conn()`` (DataJoint's ``DJ_*`` settings).
    upto : bind only the stages up to this one in :data:`STAGES` order (a stage's tables depend on
        upstream stages only).  An importer that needs ``recordings`` alone then never loads the
        model stages' torch and scikit-learn (about 400 MB of a 500 MB import budget).
    """
    import datajoint as dj

    from schemas import binding, db

    prefix = db.default_prefix() if prefix is None else db.valid_prefix(prefix)
    db.configure()
    stage_modules(upto)  # every stage schema exists before any is bound
    chosen = binding.Binding(prefix, bool(create_tables), connection or dj.conn())
    return binding.bind_all(chosen, STAGES)


def declare_all(prefix: str | None = None) -> list[str]:
    """Create every schema and table of ``prefix`` (default: as :func:`activate`) that does not exist
    yet (idempotent); return the schema names.  The tables stay bound to ``prefix``."""
    names = activate(prefix, create_tables=True)
    # Job queues too: DataJoint would otherwise declare them on first use, racing across workers.
    from schemas.operations import declare_job_tables

    declare_job_tables(computed_tables())
    activate(prefix)  # bound as a worker binds: nothing more is created
    return names


def drop_all(prefix: str | None = None) -> list[str]:
    """Drop every schema of ``prefix`` (default: the active one), downstream first; return the names dropped."""
    import datajoint as dj

    from schemas import db

    db.configure()
    dropped = []
    existing = set(dj.list_schemas())
    for stage in reversed(STAGES):
        name = db.schema_name(stage, prefix)
        if name in existing:
            dj.Schema(name, create_schema=False, create_tables=False).drop(prompt=False)
            dropped.append(name)
    return dropped


def module_tables(module, kinds: type | tuple[type, ...] | None = None) -> list:
    """The tables of ``kinds`` (default: auto-populated, Imported or Computed) a module defines, in
    definition order: with a ``schema``, every table that schema decorates (also those of a helper
    module of the stage), else the module's own table classes."""
    import datajoint as dj

    kinds = kinds or (dj.Imported, dj.Computed)
    declared = [cls for cls, _ in getattr(getattr(module, "schema", None), "declare_list", ())]
    found = declared or [
        value for value in vars(module).values() if isinstance(value, type) and value.__module__ == module.__name__
    ]
    return [table for table in found if isinstance(table, type) and issubclass(table, kinds)]


def computed_tables() -> list:
    """Every auto-populated table of the pipeline, upstream first."""
    return [table for module in stage_modules().values() for table in module_tables(module)]
