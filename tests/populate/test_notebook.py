"""notebooks/getting_started.ipynb runs top to bottom against the database of `populate demo --quick`."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

NOTEBOOK = REPO / "notebooks" / "getting_started.ipynb"


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
    report = tmp_path_factory.mktemp("demo") / "report.html"
    for code in (
        "from populate.cli.main import main; raise SystemExit(main(['setup']))",
        f"from populate.cli import demo; demo.main(quick=True, classifier_seeds=(0,), report_path={str(report)!r})",
    ):
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=1200
        )
        assert out.returncode == 0, out.stderr[-3000:]
    yield env
    subprocess.run([sys.executable, "-c", "import schemas; schemas.drop_all()"], cwd=REPO, env=env, timeout=300)


def test_training_curves_are_the_stored_histories(demo_quick):
    out = subprocess.run(
        [sys.executable, "-c", "from tests.notebook_checks import training_curves; training_curves()"],
        cwd=REPO,
        env=demo_quick,
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
    for name, value in demo_quick.items():
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
