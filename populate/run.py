"""Populating the pipeline in the current process, table by table, upstream first."""

from __future__ import annotations

import logging
import time

from pipeline.progress import on_terminal

log = logging.getLogger(__name__)


def populate_all(tables: list[str] | None = None, progress: bool = True) -> dict[str, int]:
    """Populate each table fully; errors propagate. Returns the number of rows added per table."""
    from pipeline.device import configure_threads

    from .jobs import select_tables

    configure_threads()
    added = {}
    for table in select_tables(tables):
        before = len(table())
        start = time.monotonic()
        table.populate(display_progress=progress and on_terminal())
        added[table.__name__] = len(table()) - before
        log.info("%s: %d new rows in %.1f s", table.__name__, added[table.__name__], time.monotonic() - start)
    return added
