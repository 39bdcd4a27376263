"""Stage modules bind nothing on import; ``schemas.activate`` binds them, and rebinds them to another prefix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

_IMPORT_SCRIPT = """
import datajoint.connection

opened = []
datajoint.connection.Connection.connect = lambda self: opened.append(self)

import schemas
from schemas import binding
from schemas.models import TrainedModel

schemas.stage_modules()
assert not opened, "importing the stage modules opened a connection"
assert set(binding.STAGE_SCHEMAS) >= set(schemas.STAGES), binding.STAGE_SCHEMAS
assert all(s.database is None for s in binding.STAGE_SCHEMAS.values()), "a stage is bound"
assert binding.active_prefix() is None
try:
    TrainedModel & {}
except binding.NotActivated as err:
    print(err)
else:
    raise AssertionError("an unbound table answered a query")
"""


def test_importing_the_stage_modules_binds_and_connects_to_nothing():
    """No ``DJ_*`` or ``PIPELINE_*`` setting: the modules import, and a table says how to bind it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJ_", "PIPELINE_"))}
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run(
        [sys.executable, "-c", _IMPORT_SCRIPT], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    message = out.stdout.strip().splitlines()[-1]
    assert "schemas.activate(" in message and "python -m populate setup" in message, message


def test_an_invalid_prefix_is_refused_before_anything_binds():
    import schemas
    from schemas import db

    with pytest.raises(db.SettingsError, match="not a valid schema prefix"):
        schemas.activate("Bad-Prefix")


def test_switching_prefixes_in_one_process_rebinds_every_table(db):
    """Two pipelines on one server: rows of one are invisible under the other, and back again."""
    import schemas
    from schemas import db as settings
    from schemas.models import Seed
    from schemas.recordings import Animal, Scan

    own = settings.prefix()
    first, second = f"{own}_a", f"{own}_b"
    animal = dict(animal_id=9041)  # an id no other test inserts under this run's prefix
    before = len(Animal & animal)
    try:
        schemas.declare_all(first)
        Animal.insert1(animal)
        assert Animal.full_table_name.strip('`"').startswith(f"{first}__recordings")

        schemas.declare_all(second)
        assert settings.prefix() == second
        assert len(Animal()) == 0 and len(Scan.Unit()) == 0
        assert Scan.Unit.full_table_name.strip('`"').startswith(f"{second}__recordings")
        assert len(Seed()) == len(Seed.contents)  # a Lookup's contents are filled in each schema

        assert schemas.activate(first)[0] == f"{first}__recordings"
        assert Animal.to_arrays("animal_id").tolist() == [animal["animal_id"]]
    finally:
        schemas.activate(own)
        schemas.drop_all(first)
        schemas.drop_all(second)
    assert settings.prefix() == own and len(Animal & animal) == before


def test_a_missing_stage_stays_unbound_and_says_to_run_setup(db):
    import schemas
    from schemas import binding
    from schemas import db as settings
    from schemas.recordings import Animal

    own = settings.prefix()
    try:
        assert schemas.activate(f"{own}_none") == []
        with pytest.raises(binding.NotActivated, match="python -m populate setup"):
            len(Animal())
    finally:
        schemas.activate(own)
    assert len(Animal()) >= 0


_UPTO_SCRIPT = """
import sys

import schemas
from schemas.recordings import Animal

names = schemas.activate(upto="recordings")
len(Animal())  # bound: it answers
print(names, sorted(m for m in ("torch", "sklearn", "schemas.models") if m in sys.modules))
"""


def test_activating_up_to_a_stage_binds_it_without_loading_later_stages(db):
    """What ``python -m populate import nwb`` does: the recordings stage alone, no torch or scikit-learn."""
    from schemas import db as settings

    out = subprocess.run(
        [sys.executable, "-c", _UPTO_SCRIPT],
        cwd=REPO,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[-1:] == ["[]"], out.stdout
    assert f"['{settings.prefix()}__recordings']" in out.stdout, out.stdout
    with pytest.raises(ValueError, match="unknown stage 'model'"):
        import schemas

        schemas.activate(upto="model")
