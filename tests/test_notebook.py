"""notebooks/getting_started.ipynb runs top to bottom against the test database."""

from __future__ import annotations

import os

import pytest

from tests.conftest import REPO
from tests.test_report import make_demo_models

NOTEBOOK = REPO / "notebooks" / "getting_started.ipynb"


def test_getting_started_notebook_runs(db, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")

    make_demo_models()
    # the kernel inherits this environment: DJ_*, PIPELINE_PREFIX and PIPELINE_STORE_DIR of the test run
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), \
        "the notebook is stored with outputs; clear them before committing"
    client = nbclient.NotebookClient(notebook, timeout=240, kernel_name="python3",
                                     resources={"metadata": {"path": str(REPO)}})
    client.execute()

    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    # reliability histogram, oracle-vs-correlation, cell-type gallery and confusion matrix at least
    assert len(images) >= 4
    assert "predicted" in text and "units for 8 test images" in text
    assert "cell_type" in text
