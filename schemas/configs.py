"""Config tables keyed by the canonical content hash of a typed config.

A config is validated by its :class:`pipeline.config.Config` class before anything is inserted, so
unknown or mistyped keys are refused with a message naming the key, and equivalent spellings
(key order, ``1`` vs ``1.0``, numpy scalars, tuples vs lists) land on one entry.  Its names,
description and owner are kept apart (:mod:`schemas.config_notes`), so they never change the hash.
"""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar, Mapping

from pipeline.config import Config
from schemas import config_notes

NAME_MAX = 64
"""Characters of a config name (the ``config_name`` columns' width)."""

COMMENT_COLUMN = 36
"""Width an attribute line is padded to before its ``# comment``, so comments line up."""

Attribute = str | tuple[str, str]
"""One attribute line of a definition: ``"method: varchar(16)"`` or ``("signal: varchar(16)", "comment")``."""


def config_definition(key: Attribute, *attributes: Attribute, comment: str = "", name_comment: str = "") -> str:
    """The DataJoint definition of a config table: an optional table ``comment`` line, the primary key
    ``{key}: char(32)`` (the name of the hash attribute, or ``(name, comment)``), the ``config_name``
    label, ``attributes`` in order (secondary attributes derived from the config, or foreign keys) and
    the ``config: json`` itself.

    Comments become column comments in the database, so each table's text is fixed once declared.
    """
    name, note = (key, "") if isinstance(key, str) else key
    lines = [
        *([f"# {comment}"] if comment else []),
        definition_line((f"{name}: char(32)", note)),
        "---",
        definition_line(("config_name = '': varchar(64)", name_comment)),
        *map(definition_line, attributes),
        "config: json",
    ]
    return "".join(f"\n    {text}" for text in lines) + "\n    "


def definition_line(attribute: Attribute) -> str:
    """One attribute line, its comment (if any) at :data:`COMMENT_COLUMN`."""
    text, note = (attribute, "") if isinstance(attribute, str) else attribute
    return f"{text:<{COMMENT_COLUMN - 1}} # {note}" if note else text


def key_attribute(definition: str) -> str:
    """The name of the single primary-key attribute of a definition (the line before ``---``)."""
    key_lines = [line.strip() for line in definition.split("---")[0].splitlines()]
    return [line for line in key_lines if line and not line.startswith("#")][-1].split(":")[0].strip()


class ConfigTable:
    """Mixin for a ``dj.Lookup``/``dj.Manual`` whose key is ``{hash_attribute}: char(32)`` and that
    stores the full config (defaults filled in) in a ``config: json`` attribute."""

    config_class: ClassVar[type[Config]]
    hash_attribute: ClassVar[str]
    """The primary key, read from the table's definition."""
    config_columns: ClassVar[tuple[str, ...]] = ()
    """Config fields that are also secondary attributes of their own name (for queries)."""
    seeded_by_table: ClassVar[str] = ""
    """Where set (e.g. ``"trainer"``), the config's ``seed`` must keep its default: seeds come from the
    ``Seed`` table, one task per seed, and the name says whose config refused one."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.hash_attribute = key_attribute(cls.definition)

    @classmethod
    def validated(cls, config: Config | Mapping[str, Any] | None = None, **values) -> Config:
        if values or not isinstance(config, cls.config_class):
            base = config.to_dict() if isinstance(config, Config) else dict(config or {})
            config = cls.config_class.from_dict({**base, **values})
        if cls.seeded_by_table and config.seed != cls.config_class.__dataclass_fields__["seed"].default:
            raise ValueError(f"{cls.seeded_by_table} config key 'seed' is not allowed: seeds come from the Seed table")
        return config

    @classmethod
    def config_attributes(cls, config: Config) -> dict[str, Any]:
        """Further secondary attributes derived from the config (for queries): by default the :attr:`config_columns`.

        Not named ``describe``: that is DataJoint's own table method (the table definition), which
        ``dj.Diagram`` and users call.
        """
        return {name: getattr(config, name) for name in cls.config_columns}

    @classmethod
    def add(
        cls, config: Config | Mapping[str, Any] | None = None, name: str = "", description: str = "", **values
    ) -> dict[str, str]:
        """Validate ``config`` (plus keyword overrides), store it unless present, return its key.

        ``name`` and ``description`` are noted with the database account that added them
        (:class:`~schemas.config_notes.ConfigNote`).  Content already stored under another name gains
        ``name`` as an alias: both names resolve to the one hash, and the ``config_name`` column keeps
        the first.  Everything is inserted in one transaction, or nothing.
        """
        config = cls.validated(config, **values)
        if not isinstance(name, str) or len(name) > NAME_MAX:
            raise ValueError(f"{cls.__name__} name {name!r}: a string of at most {NAME_MAX} characters")
        key = {cls.hash_attribute: config.hash}
        row = dict(key, config_name=name, config=config.to_dict(), **cls.config_attributes(config))
        config_notes.require_declared()
        with atomic(cls().connection):
            if not (cls() & key):
                cls().insert1(row)
            config_notes.record(cls.__name__, config.hash, name, description)
        return key

    @classmethod
    def names(cls, key) -> list[str]:
        """Every name the config of ``key`` was added under, the ``config_name`` column's first."""
        config_hash, first = (cls() & key).fetch1(cls.hash_attribute, "config_name")
        aliases = config_notes.names(cls.__name__, config_hash)
        return list(dict.fromkeys([first, *aliases] if first else aliases))

    @classmethod
    def load(cls, key) -> Config:
        """The typed config of one entry."""
        return cls.config_class.from_dict((cls() & key).fetch1("config"))


@contextlib.contextmanager
def atomic(connection):
    """One transaction around the block, or the caller's if one is open (DataJoint does not nest them)."""
    if connection.in_transaction:
        yield
        return
    with connection.transaction:
        yield
