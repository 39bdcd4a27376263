"""Config tables keyed by the canonical content hash of a typed config.

A config is validated by its :class:`pipeline.config.Config` class before anything is inserted, so
unknown or mistyped keys are refused with a message naming the key, and equivalent spellings
(key order, ``1`` vs ``1.0``, numpy scalars, tuples vs lists) land on one entry.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

from pipeline.config import Config


class ConfigTable:
    """Mixin for a ``dj.Lookup``/``dj.Manual`` whose key is ``{hash_attribute}: char(32)`` and that
    stores the full config (defaults filled in) in a ``config: json`` attribute."""

    config_class: ClassVar[type[Config]]
    hash_attribute: ClassVar[str]
    seeded_by_table: ClassVar[str] = ""
    """Where set (e.g. ``"trainer"``), the config's ``seed`` must keep its default: seeds come from the
    ``Seed`` table, one task per seed, and the name says whose config refused one."""

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
        """Further secondary attributes derived from the config (for queries); none by default.

        Not named ``describe``: that is DataJoint's own table method (the table definition), which
        ``dj.Diagram`` and users call.
        """
        return {}

    @classmethod
    def add(cls, config: Config | Mapping[str, Any] | None = None, name: str = "", **values) -> dict[str, str]:
        """Validate ``config`` (plus keyword overrides), insert it unless present, return its key."""
        config = cls.validated(config, **values)
        key = {cls.hash_attribute: config.hash}
        if not (cls() & key):
            cls().insert1(dict(key, config_name=name, config=config.to_dict(), **cls.config_attributes(config)))
        return key

    @classmethod
    def load(cls, key) -> Config:
        """The typed config of one entry."""
        return cls.config_class.from_dict((cls() & key).fetch1("config"))
