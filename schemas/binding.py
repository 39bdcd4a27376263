"""Stage schemas bound to a database on activation, and rebound to another prefix on request.

Each stage module declares ``schema = StageSchema("models")`` and decorates its tables with it;
importing the module connects to nothing.  :func:`bind_all` (called by :func:`schemas.activate`)
binds every stage schema to ``{prefix}__{stage}``.  Binding the same tables to another prefix in
the same process forgets the first binding and decorates every table again, which DataJoint's own
``Schema.activate`` refuses; the tables then read and write the second prefix's schemas.

Until a table is bound, creating it (which every query, insert and populate does) raises
:class:`NotActivated`, a one-line message naming what to call.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from typing import Callable

import datajoint as dj

from schemas import db


class NotActivated(dj.DataJointError):
    """A table is used before :func:`schemas.activate` bound its stage to a database."""


@dataclasses.dataclass(frozen=True)
class Binding:
    """Where the stage schemas are bound: the prefix, whether missing tables were created, the connection."""

    prefix: str
    create_tables: bool
    connection: object


active: Binding | None = None
"""The current binding, None before :func:`bind_all`."""

STAGE_SCHEMAS: dict[str, StageSchema] = {}
"""Every stage schema by stage name, in declaration order (a reloaded module's schema replaces its own)."""


def active_prefix() -> str | None:
    """The prefix the stage schemas are bound to, None before :func:`schemas.activate`."""
    return active.prefix if active is not None else None


class StageSchema(dj.Schema):
    """The unbound schema of one stage; :func:`bind_all` names its database ``{prefix}__{stage}``.

    A schema created while a binding is active (a module imported after :func:`schemas.activate`)
    is bound at once, with the same settings.
    """

    def __init__(self, stage: str) -> None:
        super().__init__()
        self.stage = stage
        STAGE_SCHEMAS[stage] = self
        if active is not None:
            bind(self, active)

    def __call__(self, cls: type, *, context: dict | None = None) -> type:
        # the declaring module's namespace resolves the definition's foreign keys, as in DataJoint
        context = context or self.context or inspect.currentframe().f_back.f_locals
        for table in (cls, *part_tables(cls)):
            refuse_unbound_use(table, self.stage)
        if self.is_activated():
            # decorated at once below; kept in the list that a later rebinding decorates again
            self.declare_list.append((cls, context))
        return super().__call__(cls, context=context)


def part_tables(cls: type) -> list[type]:
    """The part tables declared in a master table's class body."""
    return [part for part in vars(cls).values() if isinstance(part, type) and issubclass(part, dj.Part)]


def refuse_unbound_use(table: type, stage: str) -> None:
    """Make creating ``table`` before its stage is bound raise :class:`NotActivated`."""
    original = table.__init__
    if getattr(original, "stage", None) is not None:
        return

    name = table.__qualname__

    def __init__(self, *args, **kwargs) -> None:
        if type(self).database is None:
            raise NotActivated(unbound_message(name, stage))
        original(self, *args, **kwargs)

    __init__.stage = stage  # type: ignore[attr-defined]
    table.__init__ = __init__  # type: ignore[method-assign]


def unbound_message(table: str, stage: str) -> str:
    """What to do about ``table`` of ``stage`` being unbound: activate, or (when activation found no
    schema for the stage) run ``setup``, which only an administrator may."""
    if active is None:
        return (
            f"table {table} (stage {stage!r}) is not bound to a database: call schemas.activate(prefix) first "
            "(where its schema does not exist yet, run `python -m populate setup` (as admin))"
        )
    return (
        f"table {table}: schema {db.schema_name(stage, active.prefix)} has not been declared yet: "
        "run `python -m populate setup` (as admin), then start again"
    )


def bind(schema: StageSchema, binding: Binding, existing: set[str] | None = None) -> bool:
    """Bind ``schema`` to ``{binding.prefix}__{stage}``; returns False (and leaves it unbound) when that
    schema is not among ``existing`` (default: the server's) and ``binding`` may not create it."""
    name = db.schema_name(schema.stage, binding.prefix)
    schema.create_schema = schema.create_tables = binding.create_tables
    if schema.database == name and schema.connection is binding.connection and not binding.create_tables:
        return True
    unbind(schema)
    if existing is None and not binding.create_tables:
        existing = set(dj.list_schemas(connection=binding.connection))
    if not binding.create_tables and name not in existing:
        return False
    schema.activate(
        name,
        connection=binding.connection,
        create_schema=binding.create_tables,
        create_tables=binding.create_tables,
    )
    return True


def unbind(schema: StageSchema) -> None:
    """Forget the database of ``schema`` and its tables: using them raises :class:`NotActivated` again."""
    if schema.database is None:
        return
    if schema.connection is not None:
        schema.connection.schemas.pop(schema.database, None)
    schema.database = None
    for cls, _ in schema.declare_list:
        for table in (cls, *part_tables(cls)):
            table.database = None


def bind_all(binding: Binding, stages: tuple[str, ...]) -> list[str]:
    """Bind every stage schema, ``stages`` first in their order; return the schema names bound.

    A stage whose schema does not exist (and may not be created) stays unbound.
    """
    global active
    active = binding
    existing = None if binding.create_tables else set(dj.list_schemas(connection=binding.connection))
    order = [STAGE_SCHEMAS[s] for s in stages if s in STAGE_SCHEMAS]
    order += [s for s in STAGE_SCHEMAS.values() if s not in order]
    return [schema.database for schema in order if bind(schema, binding, existing)]


def tables_kept_in(stage_module: str, kept: dict[str, tuple[str, ...]]) -> Callable[[str], object]:
    """A stage module's ``__getattr__`` for tables of its schema that live in modules of their own.

    kept : ``{module name: names}``.  ``from schemas.classifiers import NoiseEvaluation`` then imports
    ``schemas.classifier_evaluation`` on first use.  The stage module cannot import those modules
    itself: the two would import each other, and whichever a user imported first would find the other
    half-initialised.
    """
    owner = {name: module for module, names in kept.items() for name in names}

    def __getattr__(name: str) -> object:
        if name not in owner:
            raise AttributeError(f"module {stage_module!r} has no attribute {name!r}")
        return getattr(importlib.import_module(owner[name]), name)

    return __getattr__


def load_kept_tables(stage_module) -> None:
    """Import the modules that hold tables of ``stage_module``'s schema and add their tables to its
    namespace, where DataJoint (``dj.Diagram``, foreign keys) looks for the stage's tables by name."""
    for module_name, names in getattr(stage_module, "KEPT_TABLES", {}).items():
        module = importlib.import_module(module_name)
        vars(stage_module).update({name: getattr(module, name) for name in names})
