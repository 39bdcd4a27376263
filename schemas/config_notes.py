"""Names, descriptions and owners of stored configs, one table for every config table.

A config is stored once per content (its key is the content hash, :mod:`schemas.configs`), so the
same content added under a second name gets a second :class:`ConfigNote` row: an alias that resolves
to the same hash.  Each row records who added the config under that name, when, and why
(``description``).  None of it enters the hash, and no config table's definition changes: a database
made before this table existed is read as before, and ``python -m populate setup`` declares the table.

A table of the ``recordings`` schema (the stage every other stage depends on), kept in a module of
its own; :mod:`schemas.configs` imports it, so every stage with a config table declares it.
"""

from __future__ import annotations

import datajoint as dj

from schemas.recordings import schema

DESCRIPTION_MAX = 1000
"""Characters of a description (the column's width)."""


@schema
class ConfigNote(dj.Manual):
    definition = """
    # a name a config was added under, with its description and who added it (not part of the hash)
    config_table: varchar(64)           # class name of the config table, e.g. 'ModelConfig'
    config_hash: char(32)               # the config's key in that table
    config_name: varchar(64)            # the name it was added under ('' for none)
    ---
    description = '': varchar(1000)     # why it was added (optional)
    added_by: varchar(255)              # database account that added it, user@host
    added_at = CURRENT_TIMESTAMP: datetime  # database-server time
    """


def require_declared() -> ConfigNote:
    """The table, or a one-line error saying how to declare it (a database set up before it existed)."""
    notes = ConfigNote()
    if not notes.is_declared:
        raise dj.DataJointError(
            f"table ConfigNote ({notes.full_table_name}) does not exist yet: run `python -m populate setup` "
            "(as admin) once to declare it"
        )
    return notes


def record(table: str, config_hash: str, name: str, description: str) -> None:
    """Note that ``config_hash`` of ``table`` was added under ``name`` (kept once per name: the first
    description and owner stay)."""
    if len(description) > DESCRIPTION_MAX:
        raise ValueError(f"description: {len(description)} characters, at most {DESCRIPTION_MAX}")
    notes = require_declared()
    key = dict(config_table=table, config_hash=config_hash, config_name=name)
    if not (notes & key):
        notes.insert1(dict(key, description=description, added_by=notes.connection.get_user()))


def names(table: str, config_hash: str) -> list[str]:
    """The names ``config_hash`` of ``table`` was added under, first first ('' left out; none in a
    database set up before this table existed)."""
    if not ConfigNote().is_declared:
        return []
    query = ConfigNote & dict(config_table=table, config_hash=config_hash) & "config_name != ''"
    return [str(name) for name in query.to_arrays("config_name", order_by="added_at")]
