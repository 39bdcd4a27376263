"""When a computed table's key is ready: every row its ``make`` reads is in place.

DataJoint fills a table's job queue from its ``key_source``, by default the join of the tables its
primary key references.  A ``make`` that also reads rows outside those references (a scan's
normalisation, every member of an ensemble, a classifier's similarity target) would otherwise be
reserved as soon as its references exist, and fail when a worker gets to it before another worker
has committed the rest.  A table with such inputs mixes in :class:`Readiness`:

``candidates``
    the keys the table is meant to compute once their inputs land (default: DataJoint's key
    source);
``inputs()``
    ``{name: query}``, one query per input, restricting candidates to those whose input is in
    place (for "every member" inputs, an antijoin: no member lacks it);
``key_source``
    the candidates every input query admits.  Only these keys ever enter the job queue.

Candidates that are not in the key source and not computed are *waiting*; :func:`waiting` names
the inputs each lacks, for ``python -m populate status``.  A ``make`` that still finds an input
missing (deleted after its job was queued) raises :class:`MissingInput`; the worker puts the job
back to pending instead of recording an error.
"""

from __future__ import annotations

import json


class MissingInput(LookupError):
    """A ``make`` found an input it reads absent: the job is not ready, its computation is not wrong."""

    def __init__(self, table: str, key: dict) -> None:
        self.table, self.key = table, dict(key)
        text = json.dumps(self.key, sort_keys=True, default=lambda v: v.item() if hasattr(v, "item") else str(v))
        super().__init__(f"input not ready: {table} {text}")


def require(query, key: dict):
    """``query & key``, or :class:`MissingInput` naming the table and key when that holds no row."""
    query = query() if isinstance(query, type) else query
    rows = query & key
    if not rows:
        raise MissingInput(_name(query), _restriction(query, key))
    return rows


def _name(query) -> str:
    name = type(query).__name__
    master = getattr(type(query), "master", None)  # a Part table names its master
    return f"{master.__name__}.{name}" if master is not None else name


def _restriction(query, key: dict) -> dict:
    """The part of ``key`` that names a row of ``query`` (its primary-key attributes present in ``key``)."""
    if not isinstance(key, dict):
        return {}
    names = [k for k in query.primary_key if k in key] or list(key)
    return {k: key[k] for k in names}


class Readiness:
    """Mixin (before ``dj.Computed``) for a table whose ``make`` reads inputs beyond its primary key's
    references; see the module docstring."""

    @property
    def candidates(self):
        """Keys this table is meant to compute, ready or not."""
        return super().key_source

    def inputs(self) -> dict:
        """``{input name: query of the keys whose input is in place}``, each restricting candidates."""
        return {}

    @property
    def key_source(self):
        source = self.candidates
        for ready in self.inputs().values():
            source = source & ready
        return source


def candidates(table):
    """The keys ``table`` (class or instance) is meant to compute; its key source without readiness."""
    table = table() if isinstance(table, type) else table
    return table.candidates if isinstance(table, Readiness) else table.key_source


def waiting(table, limit: int | None = None) -> tuple[int, list[tuple[dict, list[str]]]]:
    """Keys of ``table`` not computed whose inputs are not all in place.

    Returns (how many, up to ``limit`` of them as ``(key, names of the inputs missing)``).
    """
    table = table() if isinstance(table, type) else table
    if not isinstance(table, Readiness):
        return 0, []
    todo = table.candidates - table.proj()
    blocked = todo - table.key_source.proj()
    count = len(blocked)
    if not count or limit == 0:
        return count, []
    keys = blocked.keys(limit=limit) if limit else blocked.keys()
    missing = {_frozen(k): [] for k in keys}
    shown = blocked & keys
    for name, ready in table.inputs().items():
        for key in (shown - ready.proj()).keys():
            if _frozen(key) in missing:
                missing[_frozen(key)].append(name)
    return count, [(key, missing[_frozen(key)]) for key in keys]


def _frozen(key: dict) -> tuple:
    return tuple(sorted((k, str(v)) for k, v in key.items()))
