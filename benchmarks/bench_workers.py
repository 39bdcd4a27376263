"""Throughput of the populate workers.

1. Overhead: jobs/s of :class:`populate.worker.Worker` (job reservation, heartbeat, bookkeeping)
   on a trivial table, against a bare ``populate()`` of the same keys in the same process.
   Goal: ratio >= 0.8.  For context, also against DataJoint's own ``populate(reserve_jobs=True)``,
   which pays for the same job reservations but keeps no worker bookkeeping.
2. Scaling: jobs/s of 1 and of 2 worker processes on a compute-bound table.

Runs against the configured server (``DJ_*``) under a throw-away prefix, dropped afterwards:

    eval "$(populate/deploy/local_db.sh postgresql)"
    python -m benchmarks.bench_workers [--keys 300] [--spin 3000000]

Prints the figures and writes them to ``benchmarks/results/workers-<backend>.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _declare():
    from tests.worker_setup import declare

    return declare()


def _reset(wt) -> None:
    from tests.worker_setup import clear

    clear(wt)


def overhead(wt, keys: int, repeats: int = 5) -> dict:
    """Best-of-``repeats`` jobs/s of a bare populate() and of the worker loop on a trivial make."""
    from populate.worker import Worker

    bare, reserving, worker = [], [], []
    for _ in range(repeats):
        _reset(wt)
        wt.Item.insert(dict(item=i, value=float(i)) for i in range(keys))
        start = time.perf_counter()
        wt.Square.populate()
        bare.append(keys / (time.perf_counter() - start))

        # DataJoint's own distributed mode: the same reservations, no worker bookkeeping
        _reset(wt)
        wt.Item.insert(dict(item=i, value=float(i)) for i in range(keys))
        wt.Square.jobs.refresh(delay=-1)
        start = time.perf_counter()
        wt.Square.populate(reserve_jobs=True, refresh=False)
        reserving.append(keys / (time.perf_counter() - start))

        _reset(wt)
        wt.Item.insert(dict(item=i, value=float(i)) for i in range(keys))
        wt.Square.jobs.refresh(delay=-1)  # queue filling is the scheduler's work, timed apart
        start = time.perf_counter()
        summary = Worker([wt.Square], max_jobs=keys, refresh=False, batch=32).run()
        worker.append(summary.done / (time.perf_counter() - start))
        assert summary.done == keys == len(wt.Square()), summary
    return dict(keys=keys, bare_jobs_per_s=max(bare), worker_jobs_per_s=max(worker),
                ratio=max(worker) / max(bare), goal=0.8, reserve_jobs_populate_jobs_per_s=max(reserving),
                ratio_vs_reserve_jobs_populate=max(worker) / max(reserving))


def scaling(wt, keys: int, spin: int) -> dict:
    """Jobs/s of 1 and 2 worker processes on a compute-bound make (``spin`` iterations each).

    The clock starts once every worker is up and beating (start-up excluded) and the queue is
    filled, and stops when the last result is in.
    """
    import signal

    from schemas import operations

    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = {"keys": keys, "spin": spin}
    for n in (1, 2):
        _reset(wt)
        operations.Worker.delete_quick()
        wt.Item.insert(dict(item=i, value=float(i), spin=spin) for i in range(keys))
        command = [sys.executable, "-m", "populate", "worker", "--schema-module", "tests.worker_tables",
                   "--tables", "Square", "--no-refresh", "--poll", "0.05", "--heartbeat", "0.2"]
        workers = [subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                   for _ in range(n)]
        while len(operations.Worker()) < n:
            time.sleep(0.05)
        start = time.perf_counter()
        wt.Square.jobs.refresh(delay=-1)
        while len(wt.Square()) < keys:
            time.sleep(0.02)
        elapsed = time.perf_counter() - start
        for w in workers:
            w.send_signal(signal.SIGTERM)
            w.wait(60)
        result[f"{n}_worker_jobs_per_s"] = keys / elapsed
    result["speedup"] = result["2_worker_jobs_per_s"] / result["1_worker_jobs_per_s"]
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=300, help="keys of the trivial table")
    parser.add_argument("--compute-keys", type=int, default=24, help="keys of the compute-bound table")
    parser.add_argument("--spin", type=int, default=3_000_000, help="busy iterations per compute-bound make")
    args = parser.parse_args(argv)
    os.environ["PIPELINE_PREFIX"] = f"bench_{uuid.uuid4().hex[:8]}"
    os.environ.setdefault("PIPELINE_STORE_DIR", str(REPO / ".store"))
    sys.path.insert(0, str(REPO))
    logging.basicConfig(level=logging.WARNING)
    import datajoint as dj

    from schemas import db

    db.configure()
    dj.config.safemode = False
    wt = _declare()
    try:
        figures = {"backend": db.backend(), "cpus": os.cpu_count(),
                   "overhead": overhead(wt, args.keys), "scaling": scaling(wt, args.compute_keys, args.spin)}
    finally:
        for stage in ("worktest", "operations"):
            name = db.schema_name(stage)
            if name in dj.list_schemas():
                dj.Schema(name, create_schema=False, create_tables=False).drop(prompt=False)
    o, s = figures["overhead"], figures["scaling"]
    print(f"{figures['backend']}: trivial make, {o['keys']} keys: bare populate {o['bare_jobs_per_s']:.0f} jobs/s, "
          f"worker loop {o['worker_jobs_per_s']:.0f} jobs/s, ratio {o['ratio']:.2f} (goal >= {o['goal']}); "
          f"populate(reserve_jobs=True) {o['reserve_jobs_populate_jobs_per_s']:.0f} jobs/s, "
          f"worker / that {o['ratio_vs_reserve_jobs_populate']:.2f}")
    print(f"{figures['backend']}: compute-bound make, {s['keys']} keys: 1 worker {s['1_worker_jobs_per_s']:.2f} jobs/s, "
          f"2 workers {s['2_worker_jobs_per_s']:.2f} jobs/s, speed-up {s['speedup']:.2f} on {figures['cpus']} CPUs")
    out = REPO / "benchmarks" / "results" / f"workers-{figures['backend']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2))
    print(f"written to {out.relative_to(REPO)}")
    return figures


if __name__ == "__main__":
    main()
