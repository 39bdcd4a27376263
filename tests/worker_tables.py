"""A test-only schema that exercises the populate workers with real processes.

Served by ``python -m populate worker --schema-module tests.worker_tables``; tests declare it through
:func:`tests.worker_setup.declare` (bound with table creation on, as ``setup`` binds the pipeline).  Each :class:`Item`
says how its makes behave: how long they take (``seconds``, interruptible sleep), how much CPU
they burn (``spin``), and whether they raise (``fail``).  Every make appends one line
``table item pid`` to ``$WORKER_TABLES_LOG/makes.log`` (when set), so a test can count how often
each key was computed, including attempts that rolled back.

* :class:`Square` has a classic ``make``: one transaction that writes the master row, waits,
  then writes the parts, so a worker killed mid-make would leave a half-written entry if the
  transaction did not roll back.
* :class:`Cube` has a tripartite make: the slow ``make_compute`` runs outside any transaction.
* :class:`Payload` keeps files in the object store (for ``populate gc``).
"""

from __future__ import annotations

import os
import time

import datajoint as dj

from schemas.binding import StageSchema

schema = StageSchema("worktest")

PIECES = 3
"""Part rows per computed entry."""


@schema
class Item(dj.Manual):
    definition = """
    item: int32
    ---
    value: float64
    seconds = 0: float64                # wall time each make of this item takes
    spin = 0: int64                     # iterations of busy arithmetic each make performs
    fail = 0: bool                      # makes of this item raise while set
    """


def _record(table: str, key: dict) -> None:
    folder = os.environ.get("WORKER_TABLES_LOG")
    if folder:
        # O_APPEND writes of one short line are atomic, so concurrent workers never interleave.
        fd = os.open(os.path.join(folder, "makes.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{table} {key['item']} {os.getpid()}\n".encode())
        finally:
            os.close(fd)


def _work(seconds: float, spin: int) -> float:
    """Sleep ``seconds`` in short slices (signals act promptly) and burn ``spin`` iterations."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(0.05, left))
    total = 0.0
    for i in range(spin):
        total += (i % 7) * 0.5
    return total


def _check(item: int, fail: bool) -> None:
    if fail:
        raise ValueError(f"item {item} is marked to fail")


@schema
class Square(dj.Computed):
    definition = """
    -> Item
    ---
    square: float64
    """

    class Piece(dj.Part):
        definition = """
        -> master
        piece: int32
        ---
        share: float64                  # square / PIECES
        """

    def make(self, key):
        value, seconds, spin, fail = (Item & key).fetch1("value", "seconds", "spin", "fail")
        _record("Square", key)
        self.insert1(dict(key, square=value**2))
        # The master row is written and its parts are not: a kill here must leave neither.
        _work(seconds, spin)
        _check(key["item"], fail)
        self.Piece.insert(dict(key, piece=p, share=value**2 / PIECES) for p in range(PIECES))


@schema
class Cube(dj.Computed):
    definition = """
    -> Item
    ---
    cube: float64
    """

    class Piece(dj.Part):
        definition = """
        -> master
        piece: int32
        ---
        share: float64                  # cube / PIECES
        """

    def make_fetch(self, key):
        return ((Item & key).fetch1("value", "seconds", "spin", "fail"),)

    def make_compute(self, key, item):
        value, seconds, spin, fail = item
        _record("Cube", key)
        _work(seconds, spin)
        _check(key["item"], fail)
        return (value**3,)

    def make_insert(self, key, cube):
        self.insert1(dict(key, cube=cube))
        self.Piece.insert(dict(key, piece=p, share=cube / PIECES) for p in range(PIECES))


@schema
class Payload(dj.Manual):
    definition = """
    # rows with a file in the object store, for store garbage collection
    payload: int32
    ---
    data: <npy@pipeline>                # (n,) float64
    """
