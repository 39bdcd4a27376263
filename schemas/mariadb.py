"""Fix for store-backed attributes on MariaDB (DataJoint issue #1451).

Store-backed codecs (``<npy@store>``, ``<blob@store>``, ``<object@store>``, ``<attach@store>``) keep
a JSON descriptor in a ``json`` column.  MariaDB implements ``json`` as ``longtext`` and reports that
type back, so DataJoint 2.3 reads the column as plain text: inserts hand a dict to the driver
("dict can not be used as parameter") and fetches return the unparsed string.

:func:`install` wraps :meth:`datajoint.heading.Heading._init_from_database` so that, on MariaDB
only, an attribute whose codec resolves to the ``json`` type is flagged as JSON again.  MySQL 8 and
PostgreSQL report ``json`` themselves and are left untouched.
"""

from __future__ import annotations

import functools

from datajoint import codecs as _codecs
from datajoint import heading as _heading

_JSON = _heading.TYPE_PATTERN["JSON"]


def is_mariadb(connection) -> bool:
    """True when ``connection`` talks to a MariaDB server (cached per connection)."""
    cached = getattr(connection, "_pipeline_is_mariadb", None)
    if cached is None:
        cached = connection.adapter.backend == "mysql" and "mariadb" in str(
            connection.query("SELECT @@version").fetchone()[0]
        ).lower()
        connection._pipeline_is_mariadb = cached
    return cached


def _storage_type(codec, is_store: bool) -> str:
    """Column type at the end of a codec chain, e.g. ``<blob@s>`` -> ``<hash>`` -> ``json``."""
    dtype = codec.get_dtype(is_store=is_store)
    for _ in range(8):
        if not (dtype.startswith("<") and dtype.endswith(">")):
            break
        name, _store = _codecs.parse_type_spec(dtype)
        dtype = _codecs.get_codec(name).get_dtype(is_store=is_store)
    return dtype


def _restore_json_flags(heading) -> None:
    for name, attribute in list(heading._attributes.items()):
        codec = attribute.codec
        if codec is None or attribute.json:
            continue
        try:
            dtype = _storage_type(codec, attribute.store is not None)
        except Exception:  # an unregistered codec reports itself on first use
            continue
        if _JSON.match(dtype):
            heading._attributes[name] = attribute._replace(json=True)


def install() -> None:
    """Patch DataJoint's heading loader once per process; a no-op when already installed."""
    original = _heading.Heading._init_from_database
    if getattr(original, "_pipeline_mariadb_fix", False):
        return

    @functools.wraps(original)
    def init_from_database(self) -> None:
        original(self)
        if is_mariadb(self.table_info["conn"]):
            _restore_json_flags(self)

    init_from_database._pipeline_mariadb_fix = True
    init_from_database._original = original
    _heading.Heading._init_from_database = init_from_database


def uninstall() -> None:
    """Remove the patch (tests use this to show the fix is needed)."""
    current = _heading.Heading._init_from_database
    if getattr(current, "_pipeline_mariadb_fix", False):
        _heading.Heading._init_from_database = current._original
