"""Database and object-store settings of the pipeline.

Connection settings come only from DataJoint's own sources (``DJ_HOST``/``DJ_PORT``/``DJ_USER``/
``DJ_PASS``/``DJ_BACKEND``, ``datajoint.json``, ``.secrets/``); nothing here holds credentials.
Two settings are the pipeline's own:

``PIPELINE_PREFIX``
    prefix of every schema name (``{prefix}__recordings``, ``{prefix}__models``, ...), so that several
    users and test runs share one server. Default ``v1``.  A prefix is lower-case words of letters and
    digits joined by single underscores; the double underscore after it cannot occur inside a prefix,
    so prefix ``v1`` owns ``v1__*`` and never ``v1_test__*`` (grants, ``gc`` and ``roles`` rely on this).
``PIPELINE_STORE_DIR``
    folder of the default filesystem object store. Default ``.store/`` in the source checkout this
    package is imported from (ignored by git), wherever the process was started; an installed copy has
    no default and refuses to guess.  Where ``datajoint.json`` or ``DJ_STORES`` already configures a
    store named :data:`STORE` (e.g. S3 in docker-compose), that configuration wins.

Each stage module declares an unbound :class:`StageSchema`; :func:`schemas.activate` binds every
stage to ``{prefix}__{stage}`` (:func:`bind_all`).  Tables are created only where that call asks for
it: ``python -m populate setup`` does; workers and notebooks never declare the pipeline's tables
(concurrent declaration races).  Importing or configuring the pipeline changes no global DataJoint
setting that the lab's own schemas depend on (``dj.config.database.create_tables`` keeps its value).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
from pathlib import Path

import datajoint as dj

from schemas import compat

STORE = "pipeline"
"""Name of the object store every store-backed attribute uses (``<npy@pipeline>``, ...)."""

_PREFIX_PATTERN = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)*")
"""A whole prefix (matched with ``fullmatch``: ``$`` would accept a trailing newline)."""
_PREFIX_MAX = 40
SEPARATOR = "__"
"""Between prefix and stage in a schema name; never part of a valid prefix."""


class SettingsError(RuntimeError):
    """The pipeline's database or store settings are unusable."""


def valid_prefix(value: str, source: str = "prefix") -> str:
    """``value`` when it is a valid schema prefix, else :class:`SettingsError` naming ``source``."""
    if not isinstance(value, str) or not _PREFIX_PATTERN.fullmatch(value) or len(value) > _PREFIX_MAX:
        raise SettingsError(
            f"{source}={value!r} is not a valid schema prefix: use lower-case letters, digits and "
            f"single underscores, starting with a letter, not ending with '_', at most {_PREFIX_MAX} characters"
        )
    return value


def default_prefix() -> str:
    """Schema-name prefix from ``PIPELINE_PREFIX`` (default ``v1``): what :func:`schemas.activate` binds
    when given none."""
    return valid_prefix(os.environ.get("PIPELINE_PREFIX", "v1"), "PIPELINE_PREFIX")


def prefix() -> str:
    """The prefix the tables are bound to (:func:`schemas.activate`), or :func:`default_prefix` before."""
    from schemas import binding

    return binding.active_prefix() or default_prefix()


def schema_name(stage: str, of: str | None = None) -> str:
    """``{prefix}__{stage}`` for prefix ``of`` (default: :func:`prefix`)."""
    return f"{of or prefix()}{SEPARATOR}{stage}"


def is_prefix_schema(name: str, of: str | None = None) -> bool:
    """Whether schema ``name`` belongs to prefix ``of`` (default: this prefix), e.g. not ``v1_test__x`` to ``v1``."""
    start = (of or prefix()) + SEPARATOR
    return name.startswith(start) and SEPARATOR not in name[len(start) :] and len(name) > len(start)


def check_connection_settings() -> None:
    """Refuse a ``DJ_PORT`` outside 1-65535 with a one-line reason (DataJoint checks only that it is a number)."""
    port = dj.config.database.port
    if port is not None and not 0 < int(port) < 65536:
        raise SettingsError(f"DJ_PORT={port}: a TCP port is between 1 and 65535")


def project_root() -> Path | None:
    """The source checkout the pipeline is imported from (the folder holding ``pyproject.toml`` beside
    ``schemas/``), whatever the working directory; None for an installed copy."""
    folder = Path(__file__).resolve().parents[1]
    return folder if (folder / "pyproject.toml").is_file() and (folder / "schemas").is_dir() else None


def store_dir() -> Path:
    """Folder of the default filesystem store: ``PIPELINE_STORE_DIR``, else ``.store/`` in :func:`project_root`.

    Never the working directory's: a notebook started elsewhere would silently get an empty store
    and fail on the first stored array.  An installed copy without ``PIPELINE_STORE_DIR`` is refused.
    """
    configured = os.environ.get("PIPELINE_STORE_DIR")
    if configured:
        return Path(configured).expanduser().resolve()
    root = project_root()
    if root is None:
        raise SettingsError(
            f"no object store configured: set PIPELINE_STORE_DIR to the store folder, or configure a store "
            f"named {STORE!r} in datajoint.json or DJ_STORES"
        )
    return root / ".store"


_configured = False


def configure() -> None:
    """Apply the pipeline's store and connection settings to ``dj.config`` (idempotent)."""
    global _configured
    if _configured:
        return
    check_connection_settings()
    if STORE not in dj.config.stores:
        location = store_dir()
        location.mkdir(parents=True, exist_ok=True)
        dj.config.stores[STORE] = {"protocol": "file", "location": str(location)}
    check_store()
    # dj.config.database.create_tables is left alone: the stage schemas are bound with table creation
    # off unless `setup` asks (schemas.activate), and a lab's own schemas keep DataJoint's default.
    # A private loopback server has no certificates; skip the failing TLS attempt and its warning.
    if dj.config.database.host in ("localhost", "127.0.0.1", "::1") and dj.config.database.use_tls is None:
        dj.config.database.use_tls = False
    compat.install_mariadb_json_fix()
    _configured = True


def is_local_store(name: str | None) -> bool:
    """Whether the DataJoint store ``name`` is a filesystem folder (files can be memory-mapped in place)."""
    spec = dj.config.stores.get(name or STORE) or {}
    return spec.get("protocol") == "file"


def check_store(name: str = STORE) -> None:
    """Refuse an object store that its settings cannot reach, with a one-line :class:`SettingsError`.

    For S3 (MinIO, Ceph, AWS) the bucket must exist and accept the keys, so that a wrong key or a
    missing bucket stops a command before it writes anything (rather than failing a job at its insert,
    after the work).  A folder store is created by :func:`configure` and needs no check.
    """
    spec = dj.config.stores.get(name) or {}
    if spec.get("protocol") != "s3":
        return
    from datajoint.hash_registry import get_store_backend

    where = f"object store {name!r} (bucket {spec.get('bucket')!r} at {spec.get('endpoint')})"
    try:
        get_store_backend(name).fs.ls(spec["bucket"], refresh=True)
    except FileNotFoundError:
        raise SettingsError(f"{where}: the bucket does not exist; create it or fix DJ_STORES") from None
    except PermissionError as err:
        raise SettingsError(
            f"{where}: access refused ({' '.join(str(err).split())}); check the secrets "
            f"stores.{name}.access_key and stores.{name}.secret_key"
        ) from None
    except Exception as err:  # botocore's connection errors are not OSErrors
        raise SettingsError(f"{where}: unreachable ({' '.join(str(err).split())})") from None


def backend() -> str:
    """``"postgresql"``, ``"mariadb"`` or ``"mysql"`` for the connected server."""
    connection = dj.conn()
    if connection.adapter.backend == "postgresql":
        return "postgresql"
    return "mariadb" if compat.is_mariadb(connection) else "mysql"


@contextlib.contextmanager
def named_lock(name: str, timeout_s: float = 900.0):
    """Hold a server-wide lock called ``name`` (scoped to this prefix) on this process's connection.

    Serialises runs that would otherwise race to create the same rows or tables (concurrent
    ``setup``, concurrent imports): the second waits, then finds the work done.  Session-level
    advisory locks (PostgreSQL ``pg_advisory_lock``, MySQL ``GET_LOCK``) end with the connection,
    so a killed holder never leaves one behind.
    """
    configure()
    connection = dj.conn()
    full = f"{prefix()}{SEPARATOR}{name}"
    token = hashlib.sha1(full.encode()).hexdigest()
    deadline = time.monotonic() + timeout_s
    if connection.adapter.backend == "postgresql":
        number = int.from_bytes(bytes.fromhex(token[:16]), "big", signed=True)
        while not connection.query("SELECT pg_try_advisory_lock(%s)", args=(number,)).fetchone()[0]:
            if time.monotonic() > deadline:
                raise SettingsError(f"another process has held the lock {full!r} for over {timeout_s:.0f} s")
            time.sleep(0.2)
        release, args = "SELECT pg_advisory_unlock(%s)", (number,)
    else:
        lock = "pipeline:" + token[:40]  # MySQL lock names are at most 64 characters
        if connection.query("SELECT GET_LOCK(%s, %s)", args=(lock, int(timeout_s))).fetchone()[0] != 1:
            raise SettingsError(f"another process has held the lock {full!r} for over {timeout_s:.0f} s")
        release, args = "SELECT RELEASE_LOCK(%s)", (lock,)
    try:
        yield
    finally:
        try:
            connection.query(release, args=args)
        except Exception:  # a lost connection has released it already
            pass
