"""Running ``python -m populate`` from the tests: in this process (:func:`run_cli`) or as a child
process with this checkout on its path (:func:`cli`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def child_env(**extra) -> dict:
    """This process's environment with the checkout on ``PYTHONPATH``, updated by ``extra``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def cli(*args, env=None, timeout=180) -> subprocess.CompletedProcess:
    """``python -m populate ARGS`` in a child process (seconds ``timeout``), its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "populate", *args],
        cwd=REPO,
        env=env or child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """Exit code (argparse's where it rejects the command line), stdout and stderr of the command in this process."""
    from populate.cli.main import main

    try:
        code = main(list(argv))
    except SystemExit as exit:  # argparse
        code = exit.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# Every stage in which the quick demo computes something.
QUICK_DEMO_STAGES = (
    "Reliability",
    "Normalization",
    "TrainedModel",
    "CellTypes",
    "PredictedResponses",
    "Similarity",
    "TrainedClassifier",
    "NoiseEvaluation",
    "AdversarialEvaluation",
)


def assert_quick_demo_complete(report: dict) -> dict:
    """Check a ``status`` report (``populate.work.status.status`` or ``status --json``) of a drained
    quick-demo task list: no errors, every table complete with nothing queued, and every stage of
    :data:`QUICK_DEMO_STAGES` computed something.  Returns the rows by table name."""
    assert report["errors"] == [], report["errors"]
    rows = {row["table"]: row for row in report["tables"]}
    for row in rows.values():
        assert row["done"] == row["keys"], row
        assert row["waiting"] == row["pending"] == row["reserved"] == row["error"] == row["ignore"] == 0, row
    assert all(rows[name]["done"] > 0 for name in QUICK_DEMO_STAGES), rows
    return rows
