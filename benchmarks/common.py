"""Shared helpers of the benchmarks: timing, a private database prefix, result files and their tables.

Every benchmark reports ratios measured in one run on one machine (ours vs a bare baseline), so the
figures are comparable across machines; absolute times are printed for context only.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import time
import uuid
from pathlib import Path
from typing import Callable

RESULTS = Path(__file__).resolve().parent / "results"


def wall_times(fn: Callable[[], object], repeats: int) -> list[float]:
    """Wall time of each of ``repeats`` calls of ``fn``, seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def best_of(fn: Callable[[], object], repeats: int = 3) -> float:
    """Shortest wall time of ``repeats`` calls, seconds (the least disturbed run)."""
    return min(wall_times(fn, repeats))


def median_of(fn: Callable[[], object], repeats: int = 5) -> float:
    return statistics.median(wall_times(fn, repeats))


@contextlib.contextmanager
def private_database(tag: str):
    """Declare the pipeline under a throw-away schema prefix and object store; drop both afterwards."""
    import shutil
    import tempfile

    if not os.environ.get("DJ_HOST"):
        raise SystemExit("benchmarks need a database: run them through `make benchmarks`")
    os.environ["PIPELINE_PREFIX"] = f"bench_{tag}_{uuid.uuid4().hex[:6]}"
    store = Path(tempfile.mkdtemp(prefix="pipeline-bench-store-"))
    os.environ["PIPELINE_STORE_DIR"] = str(store)
    import datajoint as dj

    import schemas

    dj.config.safemode = False
    schemas.declare_all()
    try:
        yield
    finally:
        schemas.drop_all()
        shutil.rmtree(store, ignore_errors=True)


def save(name: str, figures: dict) -> Path:
    """Write ``figures`` with the machine's description to ``benchmarks/results/{name}.json``; print them."""
    RESULTS.mkdir(exist_ok=True)
    record = dict(benchmark=name, machine=dict(cpu_count=os.cpu_count(), platform=platform.platform()), **figures)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(record, indent=2, default=float))
    print(f"== {name}")
    for key, value in figures.items():
        print(f"  {key}: {value:.4g}" if isinstance(value, float) else f"  {key}: {value}")
    return path


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table's lines, then an empty line."""
    return [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---" for _ in header) + " |",
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
    ]


def print_tables(markdown: Callable[[dict], str], description: str, argv=None) -> None:
    """Command line ``python -m benchmarks.<module> RESULTS.json``: print ``markdown`` of the results file."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("results", type=Path)
    args = parser.parse_args(argv)
    print(markdown(json.loads(args.results.read_text())))
