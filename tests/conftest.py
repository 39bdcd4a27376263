"""Test set-up: a private schema prefix and object store per test run, dropped afterwards.

Tests that take the ``db`` fixture (directly or through another fixture) are marked ``db`` and run
on every backend of ``make test``; the others run once.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

# This run's prefix and store; the environment passes them to the command-line processes tests start.
RUN_ID = uuid.uuid4().hex[:8]
PREFIX = f"test_{RUN_ID}"
os.environ["PIPELINE_PREFIX"] = PREFIX
_STORE = Path(tempfile.mkdtemp(prefix=f"pipeline-store-{RUN_ID}-"))
os.environ["PIPELINE_STORE_DIR"] = str(_STORE)
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

REPO = Path(__file__).resolve().parents[1]


def pytest_report_header(config):
    from tests.isa import describe

    return describe()


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "db" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.db)


@pytest.fixture(scope="session")
def db():
    """A connection to the test server with every schema declared under this run's prefix, the tables
    bound to it."""
    if not os.environ.get("DJ_HOST"):
        message = "no database configured (DJ_HOST unset); `make test` starts one"
        if os.environ.get("CI"):
            pytest.fail(message + ": under CI a database test must run, not skip")
        pytest.skip(message)
    import datajoint as dj

    import schemas

    dj.config.safemode = False
    schemas.declare_all(PREFIX)
    yield dj.conn()
    schemas.drop_all(PREFIX)
    shutil.rmtree(_STORE, ignore_errors=True)


SCAN = "2-1-1"
SCAN_KEY = dict(animal_id=2, session=1, scan_idx=1)
QUICK_TRAINER = dict(max_iterations=30, eval_every=10, patience=2, batch_size=64)


def tiny_model(kind: str) -> dict:
    """A small core of 16 feature maps: 2 features x 8 rotations, or 16 CNN channels."""
    core = dict(kind=kind, layers=2, kernel_sizes=(5, 3), features=2 if kind == "rotation" else 16)
    return dict(core=core)


@pytest.fixture(scope="session")
def trained_models(db):
    """A tiny simulated scan (2-1-1) with one CNN and one rotation-equivariant model trained on it."""
    from populate import ingest
    from populate.work import run
    from schemas.models import TrainingTask

    ingest.simulate("tiny", seed=1, scan=SCAN)
    tasks = {}
    for kind in ("cnn", "rotation"):
        tasks[kind] = TrainingTask.add(
            model=tiny_model(kind),
            dataset=dict(scan=SCAN, image_shape=(18, 32)),
            trainer=QUICK_TRAINER,
            seeds=(0,),
            name=f"test-{kind}",
        )[0]
    run.populate_all(
        tables=["Reliability", "Normalization", "TrainedModel", "OracleFraction", "CellTypes"], progress=False
    )
    return tasks


@pytest.fixture
def row_counts(db):
    """Callable returning {table: row count} over every table of this run's schemas."""
    import datajoint as dj

    from schemas import db as settings

    def counts() -> dict[str, int]:
        result = {}
        for name in dj.list_schemas():
            if not settings.is_prefix_schema(name):
                continue
            schema = dj.Schema(name, create_schema=False, create_tables=False)
            for table in schema.list_tables():
                result[f"{name}.{table}"] = len(dj.FreeTable(dj.conn(), f"{_quote(name)}.{_quote(table)}"))
        return result

    return counts


def _quote(name: str) -> str:
    import datajoint as dj

    return dj.conn().adapter.quote_identifier(name)
