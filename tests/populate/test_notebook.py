"""notebooks/getting_started.ipynb runs top to bottom against the database of `populate demo --quick`,
and that demo's printout shows every model's fraction of oracle and marks its toy-sized results."""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from populate.report import provenance
from tests.conftest import REPO

NOTEBOOK = REPO / "notebooks" / "getting_started.ipynb"
# the demo_quick database's lab schema (the notebook's MyAnalysis), dropped before the pipeline's
DROP = (
    "import datajoint as dj, schemas; from schemas import db; lab = f'{db.prefix()}_lab'; "
    "lab in dj.list_schemas() and dj.Schema(lab, create_schema=False, create_tables=False).drop(prompt=False); "
    "schemas.drop_all()"
)


@dataclasses.dataclass
class Demo:
    """The environment of the demo's database, what the demo printed, and the --record file it was given."""

    env: dict
    stdout: str
    stderr: str
    record: Path


@pytest.fixture(scope="module")
def demo_quick(db, tmp_path_factory):
    """The environment of a database that `populate demo --quick` alone filled: every stage, at toy
    sizes (one classifier seed, to stay within the suite's time), under a prefix of its own so that
    the other tests' rows do not show in the notebook.  It runs on PostgreSQL, the first backend of
    `make test`: a second demo on MariaDB would add minutes; the report tests read the same API on
    both."""
    from schemas import db as settings

    if settings.backend() != "postgresql":
        pytest.skip("the demo --quick database is built once per suite, on PostgreSQL (suite time)")
    prefix = f"{settings.prefix()}_nb"
    env = dict(
        os.environ,
        PIPELINE_PREFIX=prefix,
        PIPELINE_STORE_DIR=str(tmp_path_factory.mktemp("store")),
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        MPLBACKEND="Agg",
    )
    folder = tmp_path_factory.mktemp("demo")
    report, record = folder / "report.html", folder / "demo.json"
    for code in (
        "from populate.cli.main import main; raise SystemExit(main(['setup']))",
        "import schemas; schemas.activate(); from populate.cli import demo; "
        f"demo.main(quick=True, classifier_seeds=(0,), report_path={str(report)!r}, record={str(record)!r})",
    ):
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=1200
        )
        assert out.returncode == 0, out.stderr[-3000:]
    yield Demo(env, out.stdout, out.stderr, record)
    subprocess.run([sys.executable, "-c", DROP], cwd=REPO, env=env, timeout=300)


def table(stdout: str, title: str, first: str) -> tuple[list[str], list[dict[str, str]]]:
    """The text table printed under the line ``title``: its column names and its rows (the lines below
    its header that start with ``first``, up to the first that does not), each cell cut at its column's
    start in the header."""
    lines = stdout.splitlines()
    header = lines[lines.index(title) + 1]
    names, starts, at = header.split(), [], 0
    for name in names:
        at = header.index(name, at)
        starts.append(at)
        at += len(name)
    rows = list(itertools.takewhile(lambda line: line.startswith(first), lines[lines.index(title) + 2 :]))
    ends = [*starts[1:], None]
    return names, [{n: row[a:b].strip() for n, a, b in zip(names, starts, ends)} for row in rows]


def test_the_demo_printout_shows_fraction_of_oracle_and_marks_toy_results(demo_quick):
    out = demo_quick.stdout
    names, rows = table(out, "== Predictive models (test tier)", "demo-")
    assert "fraction_oracle" in names and provenance.TOY in names, names
    assert len(rows) == 2, rows  # one seed of each core
    for row in rows:
        assert math.isfinite(float(row["fraction_oracle"])), row
        # the tiny preset's scan has 500 trials and 40 units: toy-sized by the report's rule
        assert row[provenance.TOY] == "yes", row
    assert provenance.RULE in out
    lines = out.splitlines()
    marked = [line for line in lines if re.match(r"model |consensus of ensemble |demo-neural: \d+ images", line)]
    assert len(marked) == 3 and all(line.endswith(" [toy]") for line in marked), marked
    assert "3 of 3 classifiers are toy-sized [toy]" in out  # 8 steps each
    # no common attack image in the quick demo: its empty median curves warn no more
    assert "Mean of empty slice" not in demo_quick.stderr + out and "RuntimeWarning" not in demo_quick.stderr
    assert f"wall time not recorded in {demo_quick.record}: a --quick run" in out
    assert not demo_quick.record.exists()


def test_declaring_the_demo_again_finds_its_scan(demo_quick):
    """`demo --record` records only a run that inserted the demo's scan: a second one skipped the stages."""
    code = (
        "import schemas; schemas.activate(); from populate.cli import demo; print(demo.declare_tasks(True, None, (0,)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=demo_quick.env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "scan 1-1-1: simulated 'tiny' preset (already present)" in out.stdout
    assert out.stdout.splitlines()[-1] == "False"


def test_training_curves_are_the_stored_histories(demo_quick):
    out = subprocess.run(
        [sys.executable, "-c", "from tests.notebook_checks import training_curves; training_curves()"],
        cwd=REPO,
        env=demo_quick.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]


def test_getting_started_notebook_runs(demo_quick, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")

    # the kernel inherits this environment: DJ_*, and the demo's own PIPELINE_PREFIX and store
    for name, value in demo_quick.env.items():
        monkeypatch.setenv(name, value)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), (
        "the notebook is stored with outputs; clear them before committing"
    )
    client = nbclient.NotebookClient(
        notebook, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}
    )
    client.execute()

    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    text += "".join(o.get("data", {}).get("text/plain", "") for o in outputs)
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    svgs = [o["data"]["image/svg+xml"] for o in outputs if "image/svg+xml" in o.get("data", {})]
    # the schema diagram: one drawing with tables of every stage
    assert svgs and all(
        name in svgs[0] for name in ("Scan", "Reliability", "TrainedModel", "Similarity", "TrainedClassifier")
    )
    # a table that a later stage re-exports is labelled by the module that declares it
    assert "<title>models.Seed</title>" in svgs[0] and "<title>recordings.GroundTruth</title>" in svgs[0]
    assert "classifiers.Seed" not in svgs[0] and "models.GroundTruth" not in svgs[0]
    # describe(): the table's definition
    assert "best mean single-trial correlation on the validation tier" in text and "\n-> " in text
    # restriction by key, by condition and by query; a join across stages
    assert "scan key: {'animal_id': 1, 'session': 1, 'scan_idx': 1}" in text
    assert "units of the scan have an oracle correlation above 0.3" in text
    assert "1 of 2 trained models have a rotation-equivariant core" in text
    assert "predicted" in text and "units for 8 test images" in text
    # TrainedClassifier.load_model reproduces the stored clean accuracy
    line = next(x for x in text.splitlines() if x.startswith("neural-regularized classifier"))
    measured, stored = line.split("accuracy ")[1].split()[0], line.split("stored: ")[1].rstrip(")")
    assert measured == stored, line
    # reliability, training curves (models, classifiers), oracle-vs-correlation, cell types, noise curves
    assert len(images) >= 7
    assert "cell_type" in text
    # the consensus of the demo's rotation-equivariant ensemble (EnsembleCellTypes)
    assert "consensus of demo-rotation: mean agreement" in text
    # a lab's own table, declared and populated in the notebook's kernel beside the pipeline
    assert "MyAnalysis: 2 rows, one per trained model (2)" in text
    assert "n_well_predicted" in text
