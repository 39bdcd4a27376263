"""Reading the pipeline's tables into pandas DataFrames: stages, scan names, keys, long-form curves.

The helpers behind :mod:`populate.api` and ``python -m populate results``.  A frame has one row per
entry with the primary key as ordinary columns, plus a ``scan`` column ``"animal-session-scan"``
where a scan is involved.
"""

from __future__ import annotations

from typing import Any, Mapping

import pandas as pd

import schemas
from populate import ingest
from populate.ingest import scan_name
from populate.plain import plain

STAGES = tuple(name for name in schemas.STAGES if name not in ("operations", "checkpoints"))
"""The pipeline's result stages (``schemas.<stage>``), upstream first."""

SCAN_KEY = ("animal_id", "session", "scan_idx")


class StageNotComputed(LookupError):
    """A stage's schema or some of its tables are not declared on the server."""


# --------------------------------------------------------------------------------------------------
# Connection and stages
# --------------------------------------------------------------------------------------------------


def connect(prefix: str | None = None) -> dict[str, str]:
    """Connect with the environment's settings and bind the tables to ``prefix`` (default
    ``PIPELINE_PREFIX``; another prefix switches to that pipeline); returns where: host, backend,
    schema prefix, store."""
    import datajoint as dj

    from schemas import db

    schemas.activate(prefix)
    store = dj.config.stores.get(db.STORE, {})
    return dict(
        host=f"{dj.config.database.host}:{dj.config.database.port}",
        backend=db.backend(),
        user=str(dj.config.database.user),
        prefix=db.prefix(),
        store=str(store.get("location", store)),
    )


def stage(name: str):
    """The ``schemas.<name>`` module, its tables bound (to ``PIPELINE_PREFIX`` when :func:`connect` was
    not called); :class:`StageNotComputed` when it cannot be used yet."""
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    import datajoint as dj

    from schemas import binding, db

    if binding.active_prefix() is None:
        connect()
    module = schemas.stage_modules()[name]
    if not module.schema.is_activated():
        raise StageNotComputed(
            f"stage {name!r} is not set up on this server (no schema {db.schema_name(name)}); "
            "run `python -m populate setup`"
        )
    missing = [table.__name__ for table in schemas.module_tables(module, dj.Table) if not table().is_declared]
    if missing:
        raise StageNotComputed(
            f"stage {name!r}: table(s) {', '.join(missing)} of this code are not declared on this server; "
            "run `python -m populate setup`"
        )
    return module


def stage_available(name: str) -> bool:
    """Whether ``name``'s tables can be read (declared on the server); they may still be empty."""
    try:
        stage(name)
    except StageNotComputed:
        return False
    return True


def parse_scan(scan: str | Mapping[str, Any]) -> dict[str, int]:
    """``"1-1-1"`` or any mapping holding the scan key -> ``{"animal_id": 1, "session": 1, "scan_idx": 1}``."""
    if isinstance(scan, str):
        return ingest.parse_scan(scan)
    missing = [k for k in SCAN_KEY if k not in scan]
    if missing:
        raise ValueError(f"scan key lacks {missing}: give 'animal-session-scan' or a mapping with {list(SCAN_KEY)}")
    return {k: int(scan[k]) for k in SCAN_KEY}


def with_scan(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with a ``scan`` column ``"animal-session-scan"`` first, when it holds the scan key."""
    if set(SCAN_KEY) <= set(frame.columns):
        frame.insert(0, "scan", [scan_name(r) for r in frame[list(SCAN_KEY)].to_dict("records")])
    return frame


def to_frame(query, order_by=None) -> pd.DataFrame:
    """The query's rows with the primary key as columns, and a ``scan`` column when it has one."""
    frame = query.to_pandas(order_by=order_by)
    if frame.empty:  # keep the columns, so that empty results can still be filtered and merged
        frame = pd.DataFrame(columns=list(query.heading.names))
    elif frame.index.names != [None]:
        frame = frame.reset_index()
    return with_scan(frame)


def one_key(table, key) -> dict:
    """The primary key of the one entry of ``table`` that ``key`` (dict, DataFrame row, query) selects."""
    if isinstance(key, pd.Series):
        key = key.to_dict()
    if isinstance(key, Mapping):
        key = {k: plain(v) for k, v in key.items() if k in table.primary_key}
    keys = (table & key).keys()
    if len(keys) != 1:
        raise LookupError(f"{table.__name__}: {len(keys)} entries match {key!r}; exactly one is needed")
    return keys[0]


def restrict(query, restriction):
    """``query & restriction``; a DataFrame row restricts by its primary-key values only (its scores
    are floats, not selection criteria)."""
    if restriction is None:
        return query
    if isinstance(restriction, pd.Series):
        restriction = {k: plain(v) for k, v in restriction.items() if k in query.primary_key}
    elif isinstance(restriction, Mapping):
        restriction = {k: plain(v) for k, v in restriction.items()}
    return query & restriction


def curves(query, order_by, label, columns) -> pd.DataFrame:
    """Long form of the ``history`` blobs of ``query``: one row per entry and stored evaluation, the
    entry's other attributes repeated, a ``run`` label per entry, and the history's scalar ``columns``."""
    rows = []
    for entry in query.to_dicts(order_by=order_by):
        history = entry.pop("history") or []
        for point in history:
            rows.append({**entry, "run": label(entry), **{c: point.get(c) for c in columns}})
    names = [n for n in query.heading.names if n != "history"]
    frame = pd.DataFrame(rows, columns=[*names, "run", *columns])
    for column in columns:  # None (e.g. no training loss before the first step) becomes NaN
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return with_scan(frame)
