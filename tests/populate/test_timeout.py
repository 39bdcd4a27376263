"""A hanging test ends within the suite's timeout, with the stack of every thread.

`test_deliberate_hang` is kept out of the default run (marker ``hang``); the second test runs it in
its own pytest process with a short timeout and reads what that process printed.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _wait_forever() -> None:
    threading.Event().wait()  # never set: to Python, a deadlocked CPU kernel looks the same


@pytest.mark.hang
def test_deliberate_hang():
    _wait_forever()


def test_a_hanging_test_fails_with_its_stack():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            f"{Path(__file__).resolve().relative_to(REPO / 'tests')}::test_deliberate_hang",
            "-m",
            "hang",
            "-o",
            "timeout=5",
            "-p",
            "no:cacheprovider",
            "-q",
        ],
        cwd=REPO / "tests",
        capture_output=True,
        text=True,
        timeout=120,
    )
    text = out.stdout + out.stderr
    assert out.returncode != 0, text[-2000:]
    assert "Timeout" in text and "_wait_forever" in text and "test_deliberate_hang" in text, text[-2000:]
