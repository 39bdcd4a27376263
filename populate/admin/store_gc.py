"""Object-store hygiene: files of the pipeline's store that no row refers to any more.

A deleted row, or a make that failed after writing its ``<npy@pipeline>`` files, leaves its
files behind.  :func:`collect` runs DataJoint's :class:`datajoint.gc.GarbageCollector` over the
schemas of this prefix only (every store path embeds its schema, and :func:`schemas.db.is_prefix_schema`
keeps ``v1`` from ``v1_test``), as a dry run unless ``delete``.

Safe at any time.  A file no committed row names may still be about to be named: an import or a
make writes its files inside its transaction and the rows become visible only at commit.  So a
file is deleted only when all of these hold:

* it is older than the grace period (``grace_s``, default :data:`DEFAULT_GRACE_S`), which covers
  files written just before their transaction began (DataJoint encodes a row's files before the
  INSERT) and clock differences between the store and this machine;
* it was written before this collection started (a later writer's rows are not in the scan);
* it was written before the oldest transaction open on the server, checked before the
  references are read and again after the files are listed (a transaction open then may commit a
  row naming it at any moment), and before the oldest reserved job of the prefix's queues;
* for hash-addressed files (``<blob@>``), no other transaction is open at all: an insert of
  identical content re-uses an existing file without rewriting it.

Files that fail one of these are reported as kept, not deleted.  ``wait_s`` retries the whole scan
for a while when only open transactions or reserved jobs hold files back.  When the server does not
let this user see other sessions' transactions (PostgreSQL without ``pg_read_all_stats``,
MySQL/MariaDB without ``PROCESS``), nothing is deleted.  Temporary ``*.saving`` files (a write cut
short, e.g. by a full disk) are listed and removed under the same rules.

Residual window: a transaction that starts after the last check and re-uses an old orphaned hash
file (identical content) within the milliseconds of the deletion loses that file.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)

DEFAULT_GRACE_S = 3600.0
"""Files younger than this are never deleted."""
DEFAULT_WAIT_S = 60.0
"""How long ``collect`` waits for open transactions and reserved jobs that hold files back."""
_SLACK_S = 2.0
"""Margin for the clocks of the database server, the store and this machine, and mtime rounding."""
_TEMP_SUFFIX = ".saving"
_REUSE = "open transaction (identical content may re-use it)"
_IN_FLIGHT = ("open transaction", "reserved job", _REUSE)


class CollectError(RuntimeError):
    """The collector cannot decide safely what to delete."""


def prefix_schemas() -> list:
    """The existing schemas of this prefix, as DataJoint schema objects."""
    import datajoint as dj

    from schemas import db

    db.configure()
    return [
        dj.Schema(name, create_schema=False, create_tables=False)
        for name in sorted(dj.list_schemas())
        if db.is_prefix_schema(name)
    ]


# ---------------------------------------------------------------------------------------------
# what is in flight


@dataclass
class Horizon:
    """In-flight work, as ages in seconds on the server's clock (None: nothing of the kind)."""

    oldest_transaction_s: float | None
    transactions: int
    oldest_reservation_s: float | None
    reservations: int


def _open_transactions(connection) -> tuple[float | None, int]:
    """Age of the oldest transaction open on other connections, and their count."""
    if connection.adapter.backend == "postgresql":
        rows = connection.query(
            "SELECT EXTRACT(EPOCH FROM (clock_timestamp() - xact_start)), query = '<insufficient privilege>' "
            "FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND backend_type = 'client backend' "
            "AND (datname = current_database() OR datname IS NULL)"
        ).fetchall()
        if any(hidden for _age, hidden in rows):
            raise CollectError(
                "this user cannot see other sessions' transactions (grant it pg_read_all_stats, e.g. role "
                "{prefix}_admin); nothing deleted"
            )
        ages = [float(age) for age, _hidden in rows if age is not None]
    else:
        try:
            rows = connection.query(
                "SELECT TIMESTAMPDIFF(MICROSECOND, trx_started, NOW(6)) / 1e6 FROM information_schema.innodb_trx "
                "WHERE trx_mysql_thread_id <> CONNECTION_ID()"
            ).fetchall()
        except Exception as err:
            raise CollectError(
                f"cannot list the server's open transactions ({' '.join(str(err).split())}); this needs the "
                "PROCESS privilege (role {prefix}_admin holds it); nothing deleted"
            ) from err
        ages = [float(age) for (age,) in rows if age is not None]
    return (max(ages) if ages else None), len(ages)


def _reserved_jobs(connection, schemas: list) -> tuple[float | None, int]:
    """Age of the oldest reserved job in the prefix's job queues (``~~name`` tables), and their count."""
    q = connection.adapter.quote_identifier
    oldest, count = None, 0
    for schema in schemas:
        queues = [
            row[0]
            for row in connection.query(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", args=(schema.database,)
            ).fetchall()
            if row[0].startswith("~~")
        ]
        for name in queues:
            age, n = connection.query(
                f"SELECT MAX({_age_expr(connection, q('reserved_time'))}), COUNT(*) "
                f"FROM {q(schema.database)}.{q(name)} WHERE {q('status')} = 'reserved'"
            ).fetchone()
            count += int(n)
            if age is not None:
                oldest = max(oldest or 0.0, float(age))
    return oldest, count


def _age_expr(connection, column: str) -> str:
    # Job tables store the server's CURRENT_TIMESTAMP(3); compare on the server, no clock mixing.
    if connection.adapter.backend == "postgresql":
        return f"EXTRACT(EPOCH FROM (LOCALTIMESTAMP - {column}))"
    return f"TIMESTAMPDIFF(MICROSECOND, {column}, NOW(6)) / 1e6"


def horizon(connection, schemas: list) -> Horizon:
    """What is in flight now on the server and in the prefix's queues."""
    age, n = _open_transactions(connection)
    reserved, m = _reserved_jobs(connection, schemas)
    return Horizon(age, n, reserved, m)


# ---------------------------------------------------------------------------------------------
# one scan


def hash_section(collector, schema_name: str) -> str:
    """The store folder, relative to the store's root, that holds one schema's hash-addressed files."""
    from schemas import db

    hp = collector.config.get_store_spec(db.STORE)["hash_prefix"].strip("/")
    return f"{hp}/{schema_name}/" if hp else f"{schema_name}/"


def _temp_files(collector, schema_name: str) -> dict[str, int]:
    """``*.saving`` files of one schema's hash section, which DataJoint's listing skips."""
    from schemas import compat

    backend = collector.backend
    root = compat.store_path(backend, "")
    found = {}
    try:
        for folder, _dirs, files in backend.fs.walk(compat.store_path(backend, hash_section(collector, schema_name))):
            for filename in files:
                if filename.endswith(_TEMP_SUFFIX):
                    path = f"{folder}/{filename}"
                    found[path[len(root) :].lstrip("/")] = backend.fs.size(path)
    except FileNotFoundError:
        pass
    return found


def _mtime(collector, path: str) -> float | None:
    """Modification time (seconds since the epoch) of a store file; None when the store does not say."""
    try:
        from schemas import compat

        modified = collector.backend.fs.modified(compat.store_path(collector.backend, path))
    except Exception:
        return None
    if modified.tzinfo is None:  # fsspec reports UTC
        from datetime import timezone

        modified = modified.replace(tzinfo=timezone.utc)
    return modified.timestamp()


def _scan(collector, schemas: list, grace_s: float) -> dict:
    import datajoint as dj

    connection = dj.conn()
    # An object store's client keeps directory listings (s3fs caches every listing it made): without
    # this, a second scan in one process misses objects written by others since the first.
    collector.backend.fs.invalidate_cache()
    started = time.time()
    before = horizon(connection, schemas)  # before the references are read
    report = collector.collect(dry_run=True)
    after = horizon(connection, schemas)  # after the files are listed
    temps = {}
    for schema in schemas:
        temps.update(_temp_files(collector, schema.database))
    ages = [a for a in (before.oldest_transaction_s, after.oldest_transaction_s) if a is not None]
    checked = time.time()
    cutoffs = {"grace period": started - grace_s, "collection start": started}
    if ages:
        cutoffs["open transaction"] = checked - max(ages) - _SLACK_S
    reservations = [a for a in (before.oldest_reservation_s, after.oldest_reservation_s) if a is not None]
    if reservations:
        cutoffs["reserved job"] = checked - max(reservations) - _SLACK_S
    any_transaction = bool(before.transactions or after.transactions)

    deletable, kept = [], {}
    candidates = [(p, "hash") for p in report["orphaned_hash_paths"]]
    candidates += [(p, "schema") for p in report["orphaned_schema_paths"]]
    candidates += [(p, "temp") for p in sorted(temps)]
    for path, kind in candidates:
        mtime = _mtime(collector, path)
        if mtime is None:
            reason = "modification time unknown"
        else:
            reason = next((name for name, cutoff in cutoffs.items() if mtime >= cutoff), None)
        if reason is None and kind == "hash" and any_transaction:
            reason = _REUSE
        if reason:
            kept[path] = reason
        else:
            deletable.append((path, kind))
    report["temp_paths"] = sorted(temps)
    report["temp_bytes"] = sum(temps.values())
    report["deletable"] = deletable
    report["kept"] = kept
    report["in_flight"] = dict(
        transactions=max(before.transactions, after.transactions),
        reserved_jobs=max(before.reservations, after.reservations),
    )
    return report


def collect(delete: bool = False, grace_s: float = DEFAULT_GRACE_S, wait_s: float = 0.0) -> dict:
    """Orphaned files of the ``pipeline`` store under this prefix's schemas; removed when ``delete``.

    Returns DataJoint's report (``orphaned_*_paths``, counts, bytes, ``dry_run``) with ``temp_paths``,
    ``kept`` (path -> why it stays), ``deleted``, ``bytes_freed``, ``errors`` and ``schemas``.
    Deletion is refused when any listing failed (a partial listing could look orphaned) or the
    server's open transactions cannot be seen.
    """
    import datajoint as dj

    from schemas import db

    if grace_s < 0 or wait_s < 0:
        raise CollectError("grace and wait must not be negative")
    schemas = prefix_schemas()
    if not schemas:
        raise CollectError(f"no schema of prefix {db.prefix()!r} exists; nothing to collect")
    collector = dj.gc.GarbageCollector(*schemas, store=db.STORE)
    deadline = time.monotonic() + wait_s
    while True:
        report = _scan(collector, schemas, grace_s)
        in_flight = [p for p, why in report["kept"].items() if why in _IN_FLIGHT]
        if not (delete and in_flight) or time.monotonic() >= deadline:
            break
        log.info("%d orphan(s) held back by work in flight; scanning again", len(in_flight))
        time.sleep(min(2.0, max(deadline - time.monotonic(), 0.0)))
    report["schemas"] = [schema.database for schema in schemas]
    report["deleted"] = report["bytes_freed"] = report["errors"] = 0
    report["dry_run"] = not delete
    if not delete:
        return report
    if report["scan_errors"]:
        raise CollectError(f"refusing to delete: {len(report['scan_errors'])} scan error(s): {report['scan_errors']}")
    from datajoint.hash_registry import delete_path

    for path, kind in report["deletable"]:
        try:
            size = collector.backend.size(path)
            gone = (
                delete_path(path, db.STORE, config=collector.config)
                if kind == "hash"
                else collector.delete_schema_path(path)
            )
        except Exception as err:
            log.warning("could not delete %s: %s", path, err)
            report["errors"] += 1
            continue
        if gone:
            report["deleted"] += 1
            report["bytes_freed"] += size
    return report


def format_report(report: dict, limit: int = 50) -> str:
    orphans = report["orphaned_hash_paths"] + report["orphaned_schema_paths"] + report["temp_paths"]
    size = report["hash_paths_orphaned_bytes"] + report["schema_paths_orphaned_bytes"] + report["temp_bytes"]
    stored = report["hash_paths_stored"] + report["schema_paths_stored"]
    lines = [
        f"schemas: {', '.join(report['schemas'])}",
        f"{stored} stored file(s), {len(orphans)} orphaned ({size / 1e6:.2f} MB), "
        f"{len(report['temp_paths'])} of them temporary (.saving)",
    ]
    shown = orphans if not limit else orphans[:limit]
    lines += [f"  {path}" for path in shown]
    if len(shown) < len(orphans):
        lines.append(f"  ... and {len(orphans) - len(shown)} more")
    if report["kept"]:
        reasons = {}
        for why in report["kept"].values():
            reasons[why] = reasons.get(why, 0) + 1
        lines.append(
            f"{len(report['kept'])} orphan(s) kept: "
            + ", ".join(f"{n} {why}" for why, n in reasons.items())
            + f" ({report['in_flight']['transactions']} open transaction(s), "
            f"{report['in_flight']['reserved_jobs']} reserved job(s))"
        )
    if report["scan_errors"]:
        lines.append("scan errors (nothing may be deleted until they are fixed):")
        lines += [f"  {e}" for e in report["scan_errors"]]
    if report["dry_run"]:
        lines.append(
            f"dry run: nothing deleted ({len(report['deletable'])} would be; use --delete)"
            if orphans
            else "nothing to delete"
        )
    else:
        lines.append(
            f"deleted {report['deleted']} file(s), {report['bytes_freed'] / 1e6:.2f} MB freed, "
            f"{report['errors']} error(s)"
        )
    return "\n".join(lines)
