"""The local one-node SLURM cluster (``populate/deploy/local_slurm.sh``) for the tests of this folder.

Every test here is marked ``cluster`` (``pytestmark``); ``make test`` runs them in its PostgreSQL pass only.  The
session fixture :func:`slurm` starts this checkout's cluster unless it already runs, and stops it
afterwards only if it started it, then checks by pid that none of its daemons is left.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.populate.test_workers import fresh, wt  # noqa: F401  (fixtures: the worker test tables)

SCRIPT = REPO / "populate" / "deploy" / "local_slurm.sh"
STATE = REPO / ".local" / "slurm"
DAEMONS = ("munged", "slurmctld", "slurmd")


def _script(command: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), command], capture_output=True, text=True, timeout=600)


def _alive(pid: int) -> bool:
    """Whether ``pid`` is still one of this checkout's daemons (its command line names .local/slurm)."""
    try:
        return str(STATE) in (Path("/proc") / str(pid) / "cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def daemon_pids() -> dict[str, int]:
    """The pids in .local/slurm/<daemon>.pid."""
    return {name: int((STATE / f"{name}.pid").read_text().split()[0]) for name in DAEMONS}


@pytest.fixture(scope="session")
def slurm() -> dict[str, str]:
    """The environment (``SLURM_CONF``) of this checkout's running local SLURM cluster."""
    installed = subprocess.run(["bash", "-c", "PATH=$PATH:/usr/sbin command -v slurmctld"], capture_output=True)
    if installed.returncode != 0 and os.geteuid() != 0 and not os.environ.get("CI"):
        pytest.skip("slurm-wlm is not installed and installing it needs root (local_slurm.sh installs it as root)")
    started = _script("status").returncode != 0
    out = _script("start")
    assert out.returncode == 0, out.stderr
    exports = dict(
        line.removeprefix("export ").split("=", 1) for line in out.stdout.splitlines() if line.startswith("export ")
    )
    assert exports["SLURM_CONF"] == str(STATE / "slurm.conf"), out.stdout
    pids = daemon_pids()
    yield exports
    if started:
        out = _script("stop")
        assert out.returncode == 0, out.stderr
        left = {name: pid for name, pid in pids.items() if _alive(pid)}
        assert not left, f"local_slurm.sh stop left these running: {left}"
