"""Operating the pipeline at scale: workers, the scheduler, job status, roles and store hygiene.

Adds the sub-commands ``worker``, ``scheduler``, ``status``, ``retry``, ``ignore``, ``roles`` and
``gc`` to ``python -m populate`` (see "Running at scale" in the README).
"""

from __future__ import annotations

import argparse
import json
import os
import threading

exit_without_teardown = False
"""Set by long-running commands once finished: ``python -m populate`` then ends at once (see ``__main__``)."""


def _number(kind, rule: str, ok):
    """argparse type: a ``kind`` number for which ``ok(value)`` holds, else the error ``rule``."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{rule}, got {text}")
        return value

    return parse


def _positive(kind):
    return _number(kind, "must be positive", lambda value: value > 0)


def _non_negative(kind):
    return _number(kind, "must not be negative", lambda value: value >= 0)


def _tables(args, names=None):
    import schemas
    from populate.work import jobs

    schemas.activate()
    return jobs.select_tables(names, args.schema_module)


def schema_module_option(sub) -> None:
    sub.add_argument(
        "--schema-module",
        action="append",
        metavar="MODULE",
        help="serve the computed tables of this module instead of the pipeline's (extensions, tests); repeatable",
    )


# ---------------------------------------------------------------------------------------------
# handlers


def _cmd_worker(args) -> None:
    from populate.work.connection import until_reachable
    from populate.work.worker import Worker

    # Importing the table modules queries the server: a worker started while it is away waits for it.
    tables = until_reachable(lambda: _tables(args, args.tables), threading.Event(), "at start", args.start_timeout)
    # Worker's keyword arguments that are options of the same name
    names = ("device", "max_jobs", "idle_exit", "poll", "heartbeat", "stop_timeout", "batch", "threads")
    options = {name: getattr(args, name) for name in (*names, "start_timeout")}
    worker = Worker(tables, refresh=not args.no_refresh, **options)
    summary = worker.run()
    print(
        f"worker {worker.name}: {summary.done} done, {summary.failed} failed, {summary.handed_back} handed back "
        f"({summary.reason or 'stopped'})"
    )
    _done_for_good()


def _done_for_good() -> None:
    global exit_without_teardown
    exit_without_teardown = True


def _cmd_scheduler(args) -> None:
    from populate.work.scheduler import Scheduler

    scheduler = Scheduler(
        _tables(args),
        max_retries=args.max_retries,
        stale_after=args.stale_after,
        lost_after=args.lost_after,
        backoff=args.backoff,
    )
    report = scheduler.run(interval=args.interval, once=args.once)
    if args.once:
        print(f"scheduler pass: {report}")
    _done_for_good()


def _cmd_status(args) -> None:
    from populate.work import status

    report = status.status(_tables(args), max_errors=args.max_errors)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(status.format_status(report, tracebacks=not args.no_traceback, traceback_lines=args.traceback_lines))


def _selection(args):
    from populate.work import jobs

    tables = _tables(args, [args.table] if args.table else None)
    key = jobs.parse_key(args.key, tables[0] if args.table else None)
    return tables, key


def _cmd_retry(args) -> None:

    tables, key = _selection(args)
    from populate.work.reservation import retry

    done = retry(tables, key, include_ignored=args.ignored)
    print("re-queued: " + (", ".join(f"{name} {n}" for name, n in done.items() if n) or "nothing"))


def _cmd_ignore(args) -> None:
    from populate.work import jobs

    tables, key = _selection(args)
    done = jobs.ignore(tables, key)
    print("ignored: " + (", ".join(f"{name} {n}" for name, n in done.items() if n) or "nothing"))


def _cmd_roles_create(args) -> None:
    from populate.admin import roles

    for line in roles.create(dry_run=args.dry_run):
        print(line)


def _cmd_roles_drop(args) -> None:
    from populate.admin import roles

    for line in roles.drop(dry_run=args.dry_run):
        print(line)


def _cmd_roles_user(args) -> None:
    from populate.admin import roles

    password = None
    if args.password_env:
        password = os.environ.get(args.password_env)
        if not password:
            raise roles.RolesError(f"--password-env {args.password_env}: that environment variable is unset or empty")
    for line in roles.create_user(args.name, args.role, password=password, host=args.host, dry_run=args.dry_run):
        print(line)


def _cmd_roles_drop_user(args) -> None:
    from populate.admin import roles

    for line in roles.drop_user(args.name, host=args.host, dry_run=args.dry_run):
        print(line)


def _cmd_gc(args) -> None:
    from populate.admin import store_gc

    report = store_gc.collect(delete=args.delete, grace_s=args.grace, wait_s=args.wait)
    print(store_gc.format_report(report, limit=args.limit))


# ---------------------------------------------------------------------------------------------
# registration


def _with_defaults(sub, command: str) -> None:
    """The options of ``command`` that have a default, which their help names."""
    from populate.work.scheduler import (
        DEFAULT_BACKOFF_S,
        DEFAULT_INTERVAL_S,
        DEFAULT_LOST_AFTER_S,
        DEFAULT_MAX_RETRIES,
        DEFAULT_STALE_AFTER_S,
    )
    from populate.work.settings import (
        DEFAULT_BATCH,
        DEFAULT_HEARTBEAT_S,
        DEFAULT_POLL_S,
        DEFAULT_START_TIMEOUT_S,
        DEFAULT_STOP_TIMEOUT_S,
    )

    options = {  # flag: (type, default, metavar, help)
        "worker": {
            "--poll": (_positive(float), DEFAULT_POLL_S, "SECONDS", "wait between looks at empty queues"),
            "--heartbeat": (_positive(float), DEFAULT_HEARTBEAT_S, "SECONDS", "interval of the liveness beat"),
            "--stop-timeout": (
                _positive(float),
                DEFAULT_STOP_TIMEOUT_S,
                "SECONDS",
                "after SIGTERM, exit by force after this long",
            ),
            "--batch": (
                _positive(int),
                DEFAULT_BATCH,
                "N",
                "pending keys fetched per look, and the most reserved ahead when makes are fast",
            ),
            "--start-timeout": (
                _non_negative(float),
                DEFAULT_START_TIMEOUT_S,
                "SECONDS",
                "at start, wait this long for a database that does not answer yet, then exit 1 "
                "(once started, a worker waits for it without limit)",
            ),
        },
        "scheduler": {
            "--interval": (_positive(float), DEFAULT_INTERVAL_S, "S", "seconds between passes"),
            "--max-retries": (_non_negative(int), DEFAULT_MAX_RETRIES, "N", "automatic re-queues per job"),
            "--stale-after": (
                _positive(float),
                DEFAULT_STALE_AFTER_S,
                "S",
                "heartbeat age after which a worker without a connection is dead",
            ),
            "--lost-after": (
                _non_negative(float),
                DEFAULT_LOST_AFTER_S,
                "S",
                "heartbeat age after which a worker "
                "is presumed lost even while the server lists its connection; 0: never",
            ),
            "--backoff": (
                _non_negative(float),
                DEFAULT_BACKOFF_S,
                "S",
                "delay before the first retry of a transient error, doubled each time",
            ),
        },
    }
    for flag, (kind, default, metavar, text) in options[command].items():
        sub.add_argument(flag, type=kind, default=default, metavar=metavar, help=f"{text} (default {default:g})")


def add_commands(command) -> None:
    """Register this module's sub-commands through ``command(name, handler, help) -> subparser``."""
    for add in (_add_worker, _add_scheduler, _add_status, _add_job_actions, _add_roles, _add_gc):
        add(command)


def _add_worker(command) -> None:
    from populate.work.settings import device_spec

    sub = command(
        "worker",
        _cmd_worker,
        "compute jobs one at a time from the job queues until stopped (SIGTERM hands the running job back)",
    )
    sub.add_argument("--tables", nargs="+", metavar="T", help="only these tables (class names)")
    sub.add_argument(
        "--device",
        type=device_spec,
        help="cpu, auto, cuda or cuda:N for the makes (exported as PIPELINE_DEVICE; default: leave it as set)",
    )
    sub.add_argument(
        "--threads",
        type=_positive(int),
        metavar="N",
        help="torch threads for the makes (default: "
        "$PIPELINE_THREADS, else the CPUs this process may use: affinity mask and cgroup quota)",
    )
    sub.add_argument("--max-jobs", type=_positive(int), metavar="N", help="exit after N makes")
    sub.add_argument(
        "--idle-exit", type=_non_negative(float), metavar="SECONDS", help="exit after this long without work"
    )
    _with_defaults(sub, "worker")
    sub.add_argument("--no-refresh", action="store_true", help="leave filling the queues to the scheduler")
    schema_module_option(sub)


def _add_scheduler(command) -> None:
    sub = command(
        "scheduler",
        _cmd_scheduler,
        "refresh the job queues and re-queue jobs of dead workers and transient failures, on a timer",
    )
    sub.add_argument("--once", action="store_true", help="one pass, then exit")
    _with_defaults(sub, "scheduler")
    schema_module_option(sub)


def _add_status(command) -> None:
    sub = command("status", _cmd_status, "job counts per table, errors with tracebacks, running jobs and workers")
    sub.add_argument("--json", action="store_true", help="machine-readable output")
    sub.add_argument("--max-errors", type=_positive(int), default=50, metavar="N", help="errors listed per table")
    sub.add_argument("--no-traceback", action="store_true", help="messages only")
    sub.add_argument(
        "--traceback-lines",
        type=_non_negative(int),
        default=12,
        metavar="N",
        help="last lines of each traceback shown; 0: all (default 12)",
    )
    schema_module_option(sub)


def _add_job_actions(command) -> None:
    for name, handler, text in (
        ("retry", _cmd_retry, "put failed jobs back to pending (their automatic-retry count starts afresh)"),
        ("ignore", _cmd_ignore, "mark failed jobs, or the job of --key, to be skipped"),
    ):
        sub = command(name, handler, text)
        sub.add_argument("--table", metavar="T", help="only this table (class name)")
        sub.add_argument("--key", metavar="JSON", help="only this key, e.g. '{\"item\": 3}'")
        if name == "retry":
            sub.add_argument("--ignored", action="store_true", help="ignored jobs too")
        schema_module_option(sub)


def _add_roles(command) -> None:
    sub = command("roles", None, "database roles scoped to the schema prefix: admin, worker, member")
    actions = sub.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser(
        "create", help="create or update the roles and their grants (idempotent; rerun after setup)"
    )
    create.add_argument("--dry-run", action="store_true", help="print the SQL only")
    create.set_defaults(handler=_cmd_roles_create)
    drop = actions.add_parser("drop", help="drop the roles")
    drop.add_argument("--dry-run", action="store_true", help="print the SQL only")
    drop.set_defaults(handler=_cmd_roles_drop)
    user = actions.add_parser("user", help="create a login user holding one role")
    user.add_argument("name")
    user.add_argument("--role", required=True, choices=("admin", "worker", "member"))
    user.add_argument(
        "--password-env",
        metavar="VAR",
        help="environment variable holding the password (default: generate one and print it)",
    )
    user.add_argument("--host", default="%", help="MySQL/MariaDB account host (default %%)")
    user.add_argument("--dry-run", action="store_true", help="print the SQL only (password masked)")
    user.set_defaults(handler=_cmd_roles_user)
    drop_user = actions.add_parser("drop-user", help="drop a login user")
    drop_user.add_argument("name")
    drop_user.add_argument("--host", default="%", help="MySQL/MariaDB account host (default %%)")
    drop_user.add_argument("--dry-run", action="store_true", help="print the SQL only")
    drop_user.set_defaults(handler=_cmd_roles_drop_user)


def _add_gc(command) -> None:
    from populate.admin.store_gc import DEFAULT_GRACE_S, DEFAULT_WAIT_S

    sub = command(
        "gc",
        _cmd_gc,
        "list object-store files no row of this prefix's schemas refers to (dry run); --delete removes them",
    )
    sub.add_argument(
        "--delete",
        action="store_true",
        help="delete the orphans (safe while anything runs: files "
        "younger than --grace, than the oldest open transaction or reserved job are kept)",
    )
    sub.add_argument(
        "--grace",
        type=_non_negative(float),
        default=DEFAULT_GRACE_S,
        metavar="SECONDS",
        help=f"never delete files younger than this (default {DEFAULT_GRACE_S:g})",
    )
    sub.add_argument(
        "--wait",
        type=_non_negative(float),
        default=DEFAULT_WAIT_S,
        metavar="SECONDS",
        help="with --delete, rescan for up to this long while work in flight holds orphans back "
        f"(default {DEFAULT_WAIT_S:g})",
    )
    sub.add_argument("--limit", type=_non_negative(int), default=50, metavar="N", help="paths listed (0: all)")
