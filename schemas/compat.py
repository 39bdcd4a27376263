"""Every use of DataJoint's private names, in one place, checked against the tested versions.

The workers, the scheduler, the store collector and the MariaDB fix need a few things DataJoint
2.3 keeps private (see ``docs/datajoint_compat.md`` for what an upstream change would let us drop):

- :func:`populate_one`: ``AutoPopulate._populate1``, the make of one key in its transaction
  without DataJoint's per-key reservation (the worker reserves ahead, in batches);
- :func:`job_version` and :func:`keep_completed`: ``datajoint.jobs._get_job_version`` and the
  connection's ``_config``, so that the worker's batch reservation writes what ``Job.reserve``
  writes and completes as ``Job.complete`` does;
- :func:`forget_transaction`: ``Connection._in_transaction``, reset after a reconnect (the server
  rolled the transaction back when the old connection closed);
- :func:`make_resilient`: wraps ``Connection.connect``/``get_user`` and reads ``Connection._conn``
  to keep ``connection_id`` true across reconnects, and patches the PostgreSQL adapter's
  ``translate_error`` so that a closed connection counts as lost;
- :func:`install_mariadb_json_fix`: wraps ``Heading._init_from_database`` and edits
  ``Heading._attributes`` (DataJoint issue #1451, store-backed attributes on MariaDB);
- :func:`store_path`: ``StorageBackend._full_path`` for walking a store section.

One public but undocumented behaviour is checked too: :mod:`schemas.binding` rebinds a schema's
tables to another database through ``Schema.declare_list``, the tables ``Schema.activate`` decorates.

Importing this module checks the installed DataJoint against :data:`TESTED_VERSIONS` and that
every internal above is where it is expected (:func:`check_internals`); either failing raises
:class:`CompatError` naming the version or the moved name, instead of a worker misbehaving later.
``PIPELINE_UNTESTED_DATAJOINT=1`` turns the version check into a warning (internals are still
checked), for trying a new DataJoint release.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import re

import datajoint as dj
from datajoint import autopopulate, codecs, heading, jobs, storage
from datajoint.adapters import postgres
from datajoint.connection import Connection

log = logging.getLogger(__name__)

TESTED_VERSIONS = ("2.3.5",)
"""DataJoint releases the pipeline's tests ran against; ``pyproject.toml`` pins the same minor range."""

TESTED_RANGE = ((2, 3, 5), (2, 4, 0))
"""[lowest, first untested) release accepted at import."""

ALLOW_UNTESTED = "PIPELINE_UNTESTED_DATAJOINT"


class CompatError(ImportError):
    """The installed DataJoint is not one this pipeline was tested with, or an internal moved."""


def _release(version: str) -> tuple[int, int, int]:
    numbers = [int(n) for n in re.findall(r"\d+", version)[:3]]
    return tuple(numbers + [0] * (3 - len(numbers)))  # type: ignore[return-value]


def check_version(version: str | None = None) -> None:
    """Refuse a DataJoint outside :data:`TESTED_RANGE` (a warning with ``PIPELINE_UNTESTED_DATAJOINT=1``)."""
    version = version or dj.__version__
    low, high = TESTED_RANGE
    if low <= _release(version) < high:
        return
    message = (
        f"DataJoint {version} is installed; this pipeline is tested with DataJoint {', '.join(TESTED_VERSIONS)} "
        f"and uses internals that may differ in other releases (schemas/compat.py): install "
        f"datajoint>={'.'.join(map(str, low))},<{'.'.join(map(str, high))}, or set {ALLOW_UNTESTED}=1 to try it"
    )
    if os.environ.get(ALLOW_UNTESTED) == "1":
        log.warning(message)
        return
    raise CompatError(message)


# (owner, private name, what we rely on): checked at import; instance attributes set in __init__
# are checked by the tests on a live connection (tests/schemas/test_compat.py).
_CLASS_INTERNALS = (
    (autopopulate.AutoPopulate, "_populate1", ("key", "jobs", "suppress_errors", "return_exception_objects")),
    (heading.Heading, "_init_from_database", ()),
    (storage.StorageBackend, "_full_path", ("path",)),
)
_MODULE_INTERNALS = ((jobs, "_get_job_version", ("config",)),)
CONNECTION_ATTRIBUTES = ("_conn", "_config", "_in_transaction")
"""Instance attributes of a connected :class:`datajoint.connection.Connection` that we read or reset."""


def check_internals() -> None:
    """Raise :class:`CompatError` naming the first internal that is missing or changed its signature."""
    for owner, name, parameters in (*_CLASS_INTERNALS, *_MODULE_INTERNALS):
        where = f"{getattr(owner, '__module__', '')}.{getattr(owner, '__qualname__', owner.__name__)}.{name}"
        target = getattr(owner, name, None)
        if getattr(target, "_pipeline_original", None) is not None:
            target = target._pipeline_original
        if not callable(target):
            raise CompatError(f"DataJoint {dj.__version__} has no {where}; schemas/compat.py must be updated")
        missing = [p for p in parameters if p not in inspect.signature(target).parameters]
        if missing:
            raise CompatError(
                f"DataJoint {dj.__version__}: {where} no longer takes {', '.join(missing)}; "
                "schemas/compat.py must be updated"
            )
    if not hasattr(postgres.PostgreSQLAdapter, "translate_error"):
        raise CompatError(f"DataJoint {dj.__version__}: PostgreSQLAdapter.translate_error is gone")
    if not isinstance(getattr(dj.Schema(), "declare_list", None), list):
        raise CompatError(f"DataJoint {dj.__version__}: an unbound Schema has no declare_list; schemas/binding.py")


def check_connection(connection: Connection) -> None:
    """Raise :class:`CompatError` when a live connection lacks an attribute of :data:`CONNECTION_ATTRIBUTES`."""
    missing = [name for name in CONNECTION_ATTRIBUTES if not hasattr(connection, name)]
    if missing:
        raise CompatError(
            f"DataJoint {dj.__version__}: Connection has no {', '.join(missing)}; schemas/compat.py must be updated"
        )


# ---------------------------------------------------------------------------------------------
# populate and the job queues


def populate_one(table, key: dict):
    """Run ``table``'s make for one key in DataJoint's direct mode (its transaction, its ``key in
    table`` check), without a job reservation.

    Returns True (computed), False (already in the table) or ``(key, exception)`` for a failed make.
    """
    return table._populate1(key, None, suppress_errors=True, return_exception_objects=True)


def job_version(connection: Connection) -> str:
    """The ``version`` DataJoint's ``Job.reserve`` records for this connection's settings."""
    return jobs._get_job_version(connection._config)


def keep_completed(connection: Connection) -> bool:
    """Whether finished jobs stay as ``success`` rows (``jobs.keep_completed`` of this connection)."""
    return bool(connection._config.jobs.keep_completed)


def forget_transaction(connection: Connection) -> None:
    """After a reconnect: the old connection's transaction is gone (the server rolled it back)."""
    connection._in_transaction = False


# ---------------------------------------------------------------------------------------------
# connections that survive the server going away


def make_resilient(connection: Connection) -> None:
    """Keep ``connection.connection_id`` true across reconnects, and reconnect on PostgreSQL too.

    Also caches the connection's user name, which DataJoint queries for every reservation.

    DataJoint reconnects a lost MySQL connection inside ``query`` but keeps the old
    ``connection_id``, which job reservations then record; the scheduler would take the worker
    for dead.  On PostgreSQL a connection closed by the server is not recognised as lost at all.
    """
    if getattr(connection, "_pipeline_resilient", False):
        return
    reconnect = connection.connect

    def connect() -> None:
        reconnect()
        connection.connection_id = connection.adapter.get_connection_id(connection._conn)

    connection.connect = connect  # type: ignore[method-assign]
    # Every reservation records the user; it cannot change over the connection's life, so ask once.
    user = connection.get_user()
    connection.get_user = lambda: user  # type: ignore[method-assign]
    if connection.adapter.backend == "postgresql":
        _recognise_lost_postgresql_connections(type(connection.adapter))
    connection._pipeline_resilient = True  # type: ignore[attr-defined]


def _recognise_lost_postgresql_connections(adapter_class) -> None:
    original = adapter_class.translate_error
    if getattr(original, "_pipeline_original", None) is not None:
        return

    def translate_error(self, error, query=""):
        import psycopg2
        from datajoint.errors import LostConnectionError

        # A closed connection carries no SQLSTATE; DataJoint would pass it through unrecognised.
        if isinstance(error, (psycopg2.OperationalError, psycopg2.InterfaceError)) and not getattr(
            error, "pgcode", None
        ):
            return LostConnectionError("Server connection lost: " + " ".join(str(error).split()))
        return original(self, error, query)

    translate_error._pipeline_original = original  # type: ignore[attr-defined]
    adapter_class.translate_error = translate_error


# ---------------------------------------------------------------------------------------------
# store-backed attributes on MariaDB (DataJoint issue #1451)
#
# Store-backed codecs (``<npy@store>``, ``<blob@store>``, ...) keep a JSON descriptor in a ``json``
# column.  MariaDB implements ``json`` as ``longtext`` and reports that type back, so DataJoint 2.3
# reads the column as plain text: inserts hand a dict to the driver ("dict can not be used as
# parameter") and fetches return the unparsed string.  The fix flags, on MariaDB only, an attribute
# whose codec resolves to the ``json`` type as JSON again.  MySQL 8 and PostgreSQL report ``json``
# themselves and are left untouched.

_JSON = heading.TYPE_PATTERN["JSON"]


def is_mariadb(connection: Connection) -> bool:
    """True when ``connection`` talks to a MariaDB server (cached per connection)."""
    cached = getattr(connection, "_pipeline_is_mariadb", None)
    if cached is None:
        cached = (
            connection.adapter.backend == "mysql"
            and "mariadb" in str(connection.query("SELECT @@version").fetchone()[0]).lower()
        )
        connection._pipeline_is_mariadb = cached  # type: ignore[attr-defined]
    return cached


def _storage_type(codec, is_store: bool) -> str:
    """Column type at the end of a codec chain, e.g. ``<blob@s>`` -> ``<hash>`` -> ``json``."""
    dtype = codec.get_dtype(is_store=is_store)
    for _ in range(8):
        if not (dtype.startswith("<") and dtype.endswith(">")):
            break
        name, _store = codecs.parse_type_spec(dtype)
        dtype = codecs.get_codec(name).get_dtype(is_store=is_store)
    return dtype


def _restore_json_flags(table_heading) -> None:
    for name, attribute in list(table_heading._attributes.items()):
        codec = attribute.codec
        if codec is None or attribute.json:
            continue
        try:
            dtype = _storage_type(codec, attribute.store is not None)
        except Exception:  # an unregistered codec reports itself on first use
            continue
        if _JSON.match(dtype):
            table_heading._attributes[name] = attribute._replace(json=True)


def install_mariadb_json_fix() -> None:
    """Patch DataJoint's heading loader once per process; a no-op when already installed."""
    original = heading.Heading._init_from_database
    if getattr(original, "_pipeline_original", None) is not None:
        return

    @functools.wraps(original)
    def init_from_database(self) -> None:
        original(self)
        if is_mariadb(self.table_info["conn"]):
            _restore_json_flags(self)

    init_from_database._pipeline_original = original  # type: ignore[attr-defined]
    heading.Heading._init_from_database = init_from_database  # type: ignore[method-assign]


def uninstall_mariadb_json_fix() -> None:
    """Remove the patch (tests use this to show the fix is needed)."""
    current = heading.Heading._init_from_database
    original = getattr(current, "_pipeline_original", None)
    if original is not None:
        heading.Heading._init_from_database = original  # type: ignore[method-assign]


# ---------------------------------------------------------------------------------------------
# object stores


def store_path(backend, path: str) -> str:
    """The full fsspec path of ``path`` in a store (its location or bucket prefixed), for walking it."""
    return backend._full_path(path)


check_version()
check_internals()
