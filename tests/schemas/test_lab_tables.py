"""A lab's own downstream table lives beside the pipeline (docs/api.md, "Extending the pipeline with your
own tables"): importing every pipeline schema leaves DataJoint's settings alone, so the lab's
``MyAnalysis`` (tests/lab_analysis.py) is declared and populated in a fresh process with no
``DJ_CREATE_TABLES`` set, and workers given ``--schema-module`` populate it but never declare it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import PREFIX
from tests.populate.commands import REPO, child_env, cli
from tests.populate.test_messages import error_line

LAB_SCHEMA = f"{PREFIX}_lab"
UNDECLARED = f"{PREFIX}_labnone"

NOTEBOOK = """
import importlib
import datajoint as dj
import schemas

schemas.activate()
for stage in schemas.STAGES:  # every pipeline schema, and the tables kept in modules of their own
    importlib.import_module(f"schemas.{stage}")
schemas.stage_modules()
assert dj.config.database.create_tables, "importing the pipeline switched table creation off"

from tests.lab_analysis import MyAnalysis
MyAnalysis.populate()
print("rows", len(MyAnalysis()))
"""


def lab_env(schema: str) -> dict:
    env = child_env(LAB_SCHEMA=schema)
    env.pop("DJ_CREATE_TABLES", None)
    return env


@pytest.fixture
def lab_schemas(trained_models):
    """The trained models of the session; the lab's schemas are dropped afterwards."""
    import datajoint as dj

    yield trained_models
    for name in (LAB_SCHEMA, UNDECLARED):
        if name in dj.list_schemas():
            dj.Schema(name, create_schema=False, create_tables=False).drop(prompt=False)


def test_a_lab_table_is_declared_and_populated_beside_the_pipeline(lab_schemas, tmp_path):
    import datajoint as dj

    from schemas.models import TrainedModel

    # a notebook's kernel, started outside the repository
    out = subprocess.run(
        [sys.executable, "-c", NOTEBOOK], cwd=tmp_path, env=lab_env(LAB_SCHEMA), capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-3000:]
    n_models = len(TrainedModel())
    assert f"rows {n_models}" in out.stdout
    lab = dj.Schema(LAB_SCHEMA, create_schema=False, create_tables=False)
    assert lab.list_tables() == ["__my_analysis"]

    # workers serve it once its job queue is declared (by the lab, like setup declares the pipeline's)
    analysis = dj.FreeTable(dj.conn(), f"{quote(LAB_SCHEMA)}.{quote('__my_analysis')}")
    assert len(analysis) == n_models
    analysis.delete_quick()
    declare_queue = NOTEBOOK.split("from tests.lab_analysis")[0] + (
        "from tests.lab_analysis import MyAnalysis\nfrom schemas.operations import declare_job_tables\n"
        "declare_job_tables([MyAnalysis])\n"
    )
    prepared = subprocess.run([sys.executable, "-c", declare_queue], env=lab_env(LAB_SCHEMA), cwd=tmp_path)
    assert prepared.returncode == 0
    worker = cli(
        "worker", "--schema-module", "tests.lab_analysis", "--idle-exit", "1", "--poll", "0.2", env=lab_env(LAB_SCHEMA)
    )
    assert worker.returncode == 0, worker.stderr[-3000:]
    assert len(analysis) == n_models


def test_a_worker_never_declares_a_lab_table(lab_schemas):
    import datajoint as dj

    out = cli("run", "--schema-module", "tests.lab_analysis", "--quiet", env=lab_env(UNDECLARED))
    assert out.returncode != 0
    assert "__my_analysis" in error_line(out.stderr)
    if UNDECLARED in dj.list_schemas():  # DataJoint creates the (empty) schema itself, never the table
        assert dj.Schema(UNDECLARED, create_schema=False, create_tables=False).list_tables() == []


def quote(name: str) -> str:
    import datajoint as dj

    return dj.conn().adapter.quote_identifier(name)


def test_the_docs_show_the_tested_lab_table():
    text = (REPO / "docs" / "api.md").read_text()
    section = text.split("## Extending the pipeline with your own tables")[1].split("\n## ")[0]
    shown = section.split("@schema\n")[1].split("\n\n\nMyAnalysis.populate()")[0]
    tested = (REPO / "tests" / "lab_analysis.py").read_text().split("@schema\n")[1]
    assert shown.strip() == tested.strip()
    assert "--schema-module lab.analysis" in section and "declare_job_tables([MyAnalysis])" in section
