"""Messages that tell the fix, and settings that never depend on the working directory: commands used
before ``setup`` say to run it (as admin); the default store is the checkout's wherever a process
starts, or refused where there is no checkout; a prefix is matched whole."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import PREFIX
from tests.populate.commands import REPO, child_env, cli

SETUP_FIX = "run `python -m populate setup` (as admin)"


@pytest.mark.parametrize(
    "command",
    [("worker", "--idle-exit", "1", "--start-timeout", "5"), ("run", "--quiet"), ("status",)],
    ids=lambda command: command[0],
)
def test_commands_before_setup_say_to_run_setup(db, command):
    import datajoint as dj

    prefix = f"{PREFIX}_nosetup"
    out = cli(*command, env=child_env(PIPELINE_PREFIX=prefix))
    assert out.returncode == 1, out.stdout + out.stderr
    message = error_line(out.stderr)
    assert SETUP_FIX in message and f"{prefix}__" in message and "create_schema" not in message
    assert not [name for name in dj.list_schemas() if name.startswith(prefix)]  # nothing was declared


def error_line(stderr: str) -> str:
    """The one ``error:`` line a failed command ends with (DataJoint's warnings about the server may precede it)."""
    lines = stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), stderr
    assert sum(line.startswith("error") for line in lines) == 1, stderr
    return lines[-1]


def test_the_default_store_is_the_checkouts_wherever_the_process_starts(tmp_path):
    env = child_env()
    env.pop("PIPELINE_STORE_DIR")
    code = "from schemas import db; print(db.store_dir())"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(REPO.resolve() / ".store")
    assert not (tmp_path / ".store").exists()


def test_an_installed_copy_without_a_store_setting_is_refused(tmp_path, monkeypatch):
    from schemas import db

    monkeypatch.delenv("PIPELINE_STORE_DIR")
    monkeypatch.setattr(db, "__file__", str(tmp_path / "site-packages" / "schemas" / "db.py"))
    assert db.project_root() is None
    with pytest.raises(db.SettingsError, match="set PIPELINE_STORE_DIR"):
        db.store_dir()
    monkeypatch.setenv("PIPELINE_STORE_DIR", str(tmp_path / "store"))
    assert db.store_dir() == tmp_path / "store"


@pytest.mark.parametrize("prefix", ["demo\n", "demo\nx", " demo", "demo_"])
def test_a_prefix_is_matched_whole(prefix, monkeypatch):
    from schemas import db

    with pytest.raises(db.SettingsError, match="not a valid schema prefix"):
        db.valid_prefix(prefix)
    monkeypatch.setenv("PIPELINE_PREFIX", prefix)
    with pytest.raises(db.SettingsError, match="PIPELINE_PREFIX"):
        db.default_prefix()
