"""``python -m populate``: the pipeline's command line.

Every command exits 0 on success and non-zero with a one-line reason on any error.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from typing import Callable

log = logging.getLogger("populate")

TABLE_COMMANDS = ("simulate", "import", "export", "run", "results", "report", "demo", "configs")
"""Commands that read or write the pipeline's tables: :func:`main` binds them to ``PIPELINE_PREFIX`` first.
``setup`` binds while it declares; the worker, scheduler and queue commands bind as they select their
tables, within the worker's wait for an unreachable server."""

RECORDING_IMPORTS = ("sensorium", "suite2p", "nwb")
"""``import`` kinds that write the recordings stage only: they bind no later stage, so a hostile file's
import budget is not spent on loading torch."""


def _cmd_setup(args) -> None:
    import datajoint as dj

    import schemas
    from populate.admin import ownership
    from schemas import db

    with db.named_lock("setup"):  # a concurrent setup waits, then finds everything declared
        ownership.check_setup(dj.conn(), db.prefix())  # never declare into another prefix's schema
        names = schemas.declare_all()
    print(f"declared schemas: {', '.join(names)}")


def _cmd_simulate(args) -> None:
    from populate import ingest
    from populate.cli import imaging as imaging_cli

    if imaging_cli.simulate_movie(args):
        return
    key, inserted = ingest.simulate(args.preset, args.seed, args.scan)
    state = "inserted" if inserted else "already present, nothing inserted"
    print(f"scan {ingest.scan_name(key)} ({state})")


def _cmd_import(args) -> None:
    from populate import ingest

    for path in args.paths:
        key, inserted = ingest.import_sensorium(path)
        if inserted:
            print(f"imported scan {ingest.scan_name(key)} from {path}")
        else:
            print(f"scan {ingest.scan_name(key)} from {path} is already in the database; nothing inserted")


def _cmd_import_cifar(args) -> None:
    from populate import ingest

    key, inserted = ingest.import_cifar10(args.path, args.name)
    state = "imported" if inserted else "already in the database; nothing inserted"
    print(f"classification set {key['classification_set']} from {args.path}: {state}")


def _cmd_export(args) -> None:
    from populate import ingest

    out = ingest.export_sensorium(args.scan, args.out)
    print(f"exported scan {args.scan} to {out}")


def _cmd_run(args) -> None:
    from populate.work import run

    run.populate_all(tables=args.tables, progress=not args.quiet, modules=args.schema_module, poll=args.poll)


def _cmd_results(args) -> None:
    from populate.cli import results

    if args.evaluation is not None and args.what != "classifiers":
        raise ValueError("--evaluation: only `results classifiers` has evaluation configs")
    rows = results.classifiers(args.evaluation) if args.what == "classifiers" else results.REPORTS[args.what]()
    results.print_rows(rows, as_json=args.json, columns=results.TEXT_COLUMNS[args.what])


def _cmd_report(args) -> None:
    from pathlib import Path

    from populate.report import page as report

    folder = Path(args.out).expanduser().parent
    if not folder.is_dir():  # a typo in --out should not create a tree of folders
        raise FileNotFoundError(f"--out {args.out}: folder {folder} does not exist")
    print(f"report written to {report.write_report(args.out, force=args.force)}")


def _cmd_demo(args) -> None:
    from populate.cli import demo

    demo.main(quick=args.quick, record=args.record)


def build_parser() -> argparse.ArgumentParser:
    from populate.cli import configs as configs_cli
    from populate.cli import export_model as export_model_cli
    from populate.cli import imaging as imaging_cli
    from populate.cli import operations

    parser = argparse.ArgumentParser(prog="python -m populate", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Callable, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(handler=handler)
        return sub

    command("setup", _cmd_setup, "declare every schema and table (idempotent; the only command that creates tables)")

    sub = command("simulate", _cmd_simulate, "simulate a V1 scan with ground truth and insert it")
    from pipeline.data.simulate import PRESETS

    sub.add_argument(
        "--preset",
        choices=tuple(PRESETS),
        default="demo",
        help="simulation preset; demo-<variant> are the harder ground truths (docs/results.md)",
    )
    sub.add_argument("--seed", type=int, default=0)
    sub.add_argument("--scan", help="scan key animal-session-scan (default: the preset's)")
    imaging_cli.add_simulate_options(sub)

    sub = command("import", _cmd_import, "import data into the database")
    kinds = sub.add_subparsers(dest="kind", required=True, metavar="KIND")
    sensorium = kinds.add_parser("sensorium", help="Sensorium 2022 static dataset folder(s) or .zip file(s)")
    sensorium.add_argument("paths", nargs="+", metavar="PATH")
    sensorium.set_defaults(handler=_cmd_import)
    imaging_cli.add_import_kinds(kinds)
    cifar = kinds.add_parser("cifar10", help="CIFAR-10 'cifar-10-batches-py' folder, converted to grayscale")
    cifar.add_argument("path", metavar="PATH")
    cifar.add_argument("--name", default="cifar10", help="name of the classification set (default cifar10)")
    cifar.set_defaults(handler=_cmd_import_cifar)

    sub = command("export", _cmd_export, "export data from the database")
    kinds = sub.add_subparsers(dest="kind", required=True, metavar="KIND")
    sensorium = kinds.add_parser("sensorium", help="write a scan in the Sensorium layout")
    sensorium.add_argument("scan", metavar="SCAN", help="animal-session-scan, e.g. 11521-7-2")
    sensorium.add_argument("out", metavar="OUT", help="output folder (must not exist or be empty)")
    sensorium.set_defaults(handler=_cmd_export)
    imaging_cli.add_export_kinds(kinds)
    export_model_cli.add_export_kind(kinds)

    sub = command("run", _cmd_run, "populate the computed tables in dependency order, in this process")
    sub.add_argument("--tables", nargs="*", help="only these tables (class names)")
    sub.add_argument("--quiet", action="store_true", help="no progress bars")
    sub.add_argument(
        "--poll", type=float, help="seconds between looks while other processes hold jobs (default: the workers')"
    )
    operations.schema_module_option(sub)

    sub = command("results", _cmd_results, "print results: one JSON object per row with --json")
    sub.add_argument("what", choices=("celltypes", "classifiers", "models"))  # results.REPORTS; parsing skips pandas
    sub.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    sub.add_argument(
        "--evaluation", help="classifiers: only this EvaluationConfig (name or hash); default every one, as a column"
    )

    sub = command("report", _cmd_report, "write one self-contained HTML report of every stage")
    sub.add_argument(
        "--out", default="report.html", help="output .html file, which must not exist yet (default report.html)"
    )
    sub.add_argument(
        "--force", action="store_true", help="replace an existing --out file (a symbolic link itself, not its target)"
    )

    sub = command("demo", _cmd_demo, "run the whole pipeline on the embedded default data and print a summary")
    sub.add_argument("--quick", action="store_true", help="the tiny preset and short trainings (for tests)")
    sub.add_argument(
        "--record",
        metavar="FILE",
        help="write the run's wall time, code version, CPUs and date to this JSON file (a full run from a "
        "database without the demo's data only; `make demo` writes benchmarks/results/demo.json)",
    )

    operations.add_commands(command)
    configs_cli.add_command(command)
    return parser


def _quiet_datajoint() -> None:
    """Route DataJoint's messages through our log format, warnings and errors only.

    Importing datajoint installs its own handler at INFO (every line would print twice) and warns
    about a missing ``datajoint.json`` although the pipeline is configured through the environment;
    its two-line MariaDB warning becomes one debug line (:func:`populate.work.connection.quiet_mariadb_warning`).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No datajoint.json found")
        import datajoint  # noqa: F401

    from populate.work import connection

    connection.quiet_mariadb_warning()

    dj_log = logging.getLogger("datajoint")
    dj_log.handlers.clear()
    dj_log.setLevel(logging.WARNING)


def _never_declare() -> None:
    """Commands other than ``setup`` create no table, also not a lab's own (``--schema-module``): this
    process is the command's, so its DataJoint default may be set; importing the pipeline sets none."""
    import datajoint as dj

    dj.config.database.create_tables = False


def _settings_message(err: Exception) -> str | None:
    """``DJ_PORT='abc': Input should be a valid integer`` for DataJoint's settings validation errors."""
    errors = getattr(err, "errors", None)
    if type(err).__name__ != "ValidationError" or not callable(errors):
        return None
    parts = []
    for item in errors():
        name = ".".join(map(str, item.get("loc", ()))) or "setting"
        parts.append(f"{name}={item.get('input')!r}: {item.get('msg')}")
    return "invalid DataJoint setting " + "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        _quiet_datajoint()  # DataJoint validates DJ_* settings on import
        if args.command != "setup":
            _never_declare()
        if args.command in TABLE_COMMANDS:
            import schemas

            recordings_only = args.command == "import" and args.kind in RECORDING_IMPORTS
            schemas.activate(upto="recordings" if recordings_only else None)
        args.handler(args)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # every failure ends in one line naming it; -v shows the traceback
        if args.verbose:
            log.exception("failed")
        message = _settings_message(err) or " ".join(str(err).split()) or type(err).__name__
        print(f"error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
