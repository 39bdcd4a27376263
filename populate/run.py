"""Populating the pipeline in the current process, table by table, upstream first."""

from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)


def select_tables(names: list[str] | None = None) -> list:
    """The computed tables in dependency order, restricted to ``names`` (class names) when given."""
    import schemas

    tables = schemas.computed_tables()
    if not names:
        return tables
    by_name = {table.__name__: table for table in tables}
    unknown = sorted(set(names) - set(by_name))
    if unknown:
        raise ValueError(f"unknown table(s) {', '.join(unknown)}; known: {', '.join(by_name)}")
    return [table for table in tables if table.__name__ in names]


def populate_all(tables: list[str] | None = None, progress: bool = True) -> dict[str, int]:
    """Populate each table fully; errors propagate. Returns the number of rows added per table."""
    added = {}
    for table in select_tables(tables):
        before = len(table())
        start = time.monotonic()
        table.populate(display_progress=progress)
        added[table.__name__] = len(table()) - before
        log.info("%s: %d new rows in %.1f s", table.__name__, added[table.__name__], time.monotonic() - start)
    return added
