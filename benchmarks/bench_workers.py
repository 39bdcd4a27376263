"""Throughput of the populate workers.

1. Overhead: jobs/s of :class:`populate.work.worker.Worker` (job reservation, heartbeat, bookkeeping)
   on a trivial table, against a bare ``populate()`` of the same keys in the same process.
   Goal: ratio >= 0.85.  For context, also against DataJoint's own ``populate(reserve_jobs=True)``,
   which pays for the same job reservations but keeps no worker bookkeeping.
2. Scaling: jobs/s of 1 and of 2 worker processes on a compute-bound table.
3. Reservation throughput: jobs/s of 1, 2, 4, 8 and 16 worker processes on the trivial table (one
   server), with the database server's CPU time per job and per heartbeat, from which
   ``docs/benchmarks.md`` derives how many workers one server sustains.

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
    from populate.work.worker import Worker

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
    return dict(
        keys=keys,
        bare_jobs_per_s=max(bare),
        worker_jobs_per_s=max(worker),
        ratio=max(worker) / max(bare),
        goal=0.85,
        reserve_jobs_populate_jobs_per_s=max(reserving),
        ratio_vs_reserve_jobs_populate=max(worker) / max(reserving),
    )


def _start_workers(n: int, heartbeat: float = 0.2) -> list:
    """``n`` worker processes on the test tables' Square, registered (beating) when this returns."""
    from schemas import operations

    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    command = [
        sys.executable,
        "-m",
        "populate",
        "worker",
        "--schema-module",
        "tests.worker_tables",
        "--tables",
        "Square",
        "--no-refresh",
        "--poll",
        "0.05",
        "--heartbeat",
        str(heartbeat),
        "--threads",
        "1",
    ]
    workers = [
        subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(n)
    ]
    while len(operations.Worker()) < n:
        if any(w.poll() is not None for w in workers):
            raise RuntimeError("a benchmark worker exited while starting")
        time.sleep(0.05)
    return workers


def _stop_workers(workers: list) -> None:
    import signal

    for w in workers:
        w.send_signal(signal.SIGTERM)
    for w in workers:
        w.wait(60)


def _timed_run(wt, workers: list, keys: int, server: ServerCPU | None = None) -> tuple[float, float]:
    """Queue ``keys`` inserted items for the running ``workers``; (seconds until all are computed,
    server CPU seconds meanwhile).

    The queue is filled due in an hour (the workers leave it alone), then made due in one statement
    as the clock starts: filling the queue is the scheduler's work, timed apart.
    """
    jobs = wt.Square.jobs
    jobs.refresh(delay=3600)
    q = jobs.adapter.quote_identifier
    before = server.seconds() if server else 0.0
    start = time.perf_counter()
    jobs.connection.query(f"UPDATE {jobs.full_table_name} SET {q('scheduled_time')}=CURRENT_TIMESTAMP(3)")
    while len(wt.Square()) < keys:
        time.sleep(0.02)
    elapsed = time.perf_counter() - start
    return elapsed, (server.seconds() - before) if server else float("nan")


def scaling(wt, keys: int, spin: int) -> dict:
    """Jobs/s of 1 and 2 worker processes on a compute-bound make (``spin`` iterations each).

    The clock starts once every worker is up and beating (start-up excluded) and the queue is
    filled, and stops when the last result is in.
    """
    from schemas import operations

    result = {"keys": keys, "spin": spin}
    for n in (1, 2):
        _reset(wt)
        operations.Worker.delete_quick()
        wt.Item.insert(dict(item=i, value=float(i), spin=spin) for i in range(keys))
        workers = _start_workers(n)
        try:
            elapsed, _ = _timed_run(wt, workers, keys)
        finally:
            _stop_workers(workers)
        result[f"{n}_worker_jobs_per_s"] = keys / elapsed
    result["speedup"] = result["2_worker_jobs_per_s"] / result["1_worker_jobs_per_s"]
    return result


class ServerCPU:
    """CPU seconds (user + system) used so far by the database server listening on ``port`` and
    its child processes (PostgreSQL's per-connection backends); the server must run on this machine."""

    def __init__(self, port: int):
        import psutil

        listeners = [
            c.pid
            for c in psutil.net_connections("tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid
        ]
        if not listeners:
            raise RuntimeError(f"no local process listens on port {port}")
        self.server = psutil.Process(listeners[0])
        self.finished = 0.0  # CPU of children that have exited since the first look
        self.last: dict[int, float] = {}

    def seconds(self) -> float:
        import psutil

        now = {}
        for process in [self.server, *self.server.children(recursive=True)]:
            try:
                times = process.cpu_times()
                now[process.pid] = times.user + times.system
            except psutil.Error:
                pass
        self.finished += sum(cpu for pid, cpu in self.last.items() if pid not in now)
        self.last = now
        return self.finished + sum(now.values())


def concurrency(wt, keys: int, counts=(1, 2, 4, 8, 16), beats: int = 2000) -> dict:
    """Jobs/s of ``counts`` concurrent worker processes on the trivial make, and the server's CPU
    time per job; then the server's CPU time per heartbeat (``beats`` beats of one worker row)."""
    import datajoint as dj

    from populate.work.heartbeat import Heartbeat
    from schemas import operations

    server = ServerCPU(int(dj.config.database.port))
    result: dict = {"keys": keys, "workers": {}}
    for n in counts:
        _reset(wt)
        operations.Worker.delete_quick()
        wt.Item.insert(dict(item=i, value=float(i)) for i in range(keys))
        workers = _start_workers(n, heartbeat=5.0)  # the production interval
        try:
            elapsed, cpu = _timed_run(wt, workers, keys, server)
        finally:
            _stop_workers(workers)
        result["workers"][str(n)] = dict(jobs_per_s=keys / elapsed, server_cpu_ms_per_job=1000 * cpu / keys)
        print(
            f"  {n:2d} workers: {keys / elapsed:.0f} jobs/s, server CPU {1000 * cpu / keys:.2f} ms per job", flush=True
        )
    operations.Worker.delete_quick()
    row = dict(worker="bench:0:beat", host="bench", pid=0, device="", connection_id=0, state="idle")
    operations.Worker.insert1(row)
    heart = Heartbeat(row["worker"], 5.0, lambda: dict(row, job_table="", job_key="", jobs_done=0, jobs_failed=0))
    heart.beat()  # opens its connection
    before, start = server.seconds(), time.perf_counter()
    for _ in range(beats):
        heart.beat()
    result["beats_per_s_one_connection"] = beats / (time.perf_counter() - start)
    result["server_cpu_ms_per_beat"] = 1000 * (server.seconds() - before) / beats
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=300, help="keys of the trivial table")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each arm of the overhead benchmark (best kept)")
    parser.add_argument("--compute-keys", type=int, default=24, help="keys of the compute-bound table")
    parser.add_argument("--spin", type=int, default=3_000_000, help="busy iterations per compute-bound make")
    parser.add_argument("--concurrent-keys", type=int, default=2000, help="keys per run of the concurrency benchmark")
    parser.add_argument(
        "--only",
        choices=("overhead", "scaling", "concurrency"),
        nargs="+",
        default=["overhead", "scaling", "concurrency"],
        help="run only these parts",
    )
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
        figures = {"backend": db.backend(), "cpus": os.cpu_count()}
        if "overhead" in args.only:
            figures["overhead"] = overhead(wt, args.keys, args.repeats)
        if "scaling" in args.only:
            figures["scaling"] = scaling(wt, args.compute_keys, args.spin)
        if "concurrency" in args.only:
            figures["concurrency"] = concurrency(wt, args.concurrent_keys)
    finally:
        for stage in ("worktest", "operations"):
            name = db.schema_name(stage)
            if name in dj.list_schemas():
                dj.Schema(name, create_schema=False, create_tables=False).drop(prompt=False)
    if "overhead" in figures:
        o = figures["overhead"]
        print(
            f"{figures['backend']}: trivial make, {o['keys']} keys: bare populate {o['bare_jobs_per_s']:.0f} "
            f"jobs/s, worker loop {o['worker_jobs_per_s']:.0f} jobs/s, ratio {o['ratio']:.2f} (goal >= {o['goal']}); "
            f"populate(reserve_jobs=True) {o['reserve_jobs_populate_jobs_per_s']:.0f} jobs/s, "
            f"worker / that {o['ratio_vs_reserve_jobs_populate']:.2f}"
        )
    if "scaling" in figures:
        s = figures["scaling"]
        print(
            f"{figures['backend']}: compute-bound make, {s['keys']} keys: 1 worker {s['1_worker_jobs_per_s']:.2f} "
            f"jobs/s, 2 workers {s['2_worker_jobs_per_s']:.2f} jobs/s, speed-up {s['speedup']:.2f} on "
            f"{figures['cpus']} CPUs"
        )
    if "concurrency" in figures:
        c = figures["concurrency"]
        rates = ", ".join(f"{n}: {r['jobs_per_s']:.0f}" for n, r in c["workers"].items())
        print(
            f"{figures['backend']}: trivial make, {c['keys']} keys, jobs/s by concurrent workers {rates}; "
            f"server CPU per heartbeat {c['server_cpu_ms_per_beat']:.3f} ms"
        )
    suffix = "" if len(args.only) == 3 else "-" + "-".join(args.only)
    out = REPO / "benchmarks" / "results" / f"workers-{figures['backend']}{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2))
    print(f"written to {out.relative_to(REPO)}")
    return figures


if __name__ == "__main__":
    main()
