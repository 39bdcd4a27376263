"""Object-store hygiene: files of the pipeline's store that no row refers to any more.

A deleted row, or a make that failed after writing its ``<npy@pipeline>`` files, leaves its
files behind.  :func:`collect` runs DataJoint's :class:`datajoint.gc.GarbageCollector` over the
schemas of this prefix only (every store path embeds its schema, so other prefixes sharing the
store are never touched), as a dry run unless ``delete``.
"""

from __future__ import annotations


def prefix_schemas() -> list:
    """The existing schemas of this prefix, as DataJoint schema objects."""
    import datajoint as dj

    from schemas import db

    db.configure()
    start = db.prefix() + "_"
    return [
        dj.Schema(name, create_schema=False, create_tables=False)
        for name in sorted(dj.list_schemas())
        if name.startswith(start)
    ]


def collect(delete: bool = False) -> dict:
    """Orphaned files of the ``pipeline`` store under this prefix's schemas; removed when ``delete``.

    Returns DataJoint's report (``orphaned_*_paths``, counts, bytes, ``deleted``, ``dry_run``).
    Deletion is refused when any listing failed (a partial listing could look orphaned).
    """
    import datajoint as dj

    from schemas import db

    schemas = prefix_schemas()
    if not schemas:
        raise RuntimeError(f"no schema of prefix {db.prefix()!r} exists; nothing to collect")
    collector = dj.gc.GarbageCollector(*schemas, store=db.STORE)
    report = collector.collect(dry_run=not delete)
    report["schemas"] = [schema.database for schema in schemas]
    return report


def format_report(report: dict, limit: int = 50) -> str:
    orphans = report["orphaned_hash_paths"] + report["orphaned_schema_paths"]
    size = report["hash_paths_orphaned_bytes"] + report["schema_paths_orphaned_bytes"]
    stored = report["hash_paths_stored"] + report["schema_paths_stored"]
    lines = [f"schemas: {', '.join(report['schemas'])}",
             f"{stored} stored file(s), {len(orphans)} orphaned ({size / 1e6:.2f} MB)"]
    shown = orphans if not limit else orphans[:limit]
    lines += [f"  {path}" for path in shown]
    if len(shown) < len(orphans):
        lines.append(f"  ... and {len(orphans) - len(shown)} more")
    if report["scan_errors"]:
        lines.append("scan errors (nothing may be deleted until they are fixed):")
        lines += [f"  {e}" for e in report["scan_errors"]]
    if report["dry_run"]:
        lines.append("dry run: nothing deleted (use --delete to remove the orphans)" if orphans else "nothing to delete")
    else:
        lines.append(f"deleted {report['deleted']} file(s), {report['bytes_freed'] / 1e6:.2f} MB freed, {report['errors']} error(s)")
    return "\n".join(lines)
