"""notebooks/getting_started.ipynb runs top to bottom against the database of `populate demo --quick`."""

from __future__ import annotations

import os

import pytest

from tests.conftest import REPO

NOTEBOOK = REPO / "notebooks" / "getting_started.ipynb"


@pytest.fixture(scope="module")
def demo_quick(db, tmp_path_factory):
    """The database `python -m populate demo --quick` leaves: every stage, at toy sizes (one classifier
    seed, to stay within the suite's time).  It runs on PostgreSQL, the first backend of `make test`:
    a second demo on MariaDB would add minutes; the report tests read the same API on both."""
    from populate import demo
    from schemas import db as settings

    if settings.backend() != "postgresql":
        pytest.skip("the demo --quick database is built once per suite, on PostgreSQL (suite time)")

    demo.main(quick=True, classifier_seeds=(0,), report_path=str(tmp_path_factory.mktemp("demo") / "report.html"))


def test_training_curves_are_the_stored_histories(demo_quick):
    from populate import api
    from schemas.classifiers import TrainedClassifier
    from schemas.models import TrainedModel

    curves = api.training_curves()
    models = api.models()
    assert len(models) == 2 and curves["run"].nunique() == 2
    for _, model in models.iterrows():
        mine = curves[(curves["model_hash"] == model["model_hash"]) & (curves["seed"] == model["seed"])]
        key = {k: model[k] for k in TrainedModel.primary_key}
        history, best_iteration, iterations = (TrainedModel & key).fetch1("history", "best_iteration", "iterations")
        assert len(mine) == len(history) and mine["iteration"].tolist() == [h["iteration"] for h in history]
        assert mine["iteration"].iloc[0] == 0 and mine["train_loss"].isna().iloc[0]
        assert mine["iteration"].iloc[-1] == iterations
        # the stored weights are those of the best validation score
        best = mine.loc[mine["val_correlation"].idxmax()]
        assert best["iteration"] == best_iteration
        assert best["val_correlation"] == pytest.approx(model["val_correlation"])

    epochs = api.classifier_curves()
    trained = api.classifiers()
    assert len(trained) == 3 and epochs["run"].nunique() == 3
    for _, classifier in trained.iterrows():
        mine = epochs[(epochs["control"] == classifier["control"]) & (epochs["seed"] == classifier["seed"])]
        assert mine["epoch"].tolist() == list(range(len(mine))) and len(mine) >= 1
        assert mine["validation_accuracy"].iloc[-1] == pytest.approx(classifier["validation_accuracy"])
        assert mine["similarity_loss"].isna().all() == (classifier["control"] == "none")
    assert len(TrainedClassifier()) == 3


def test_getting_started_notebook_runs(demo_quick, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")

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
    text += "".join(o.get("data", {}).get("text/plain", "") for o in outputs)
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    svgs = [o["data"]["image/svg+xml"] for o in outputs if "image/svg+xml" in o.get("data", {})]
    # the schema diagram: one drawing with tables of every stage
    assert svgs and all(name in svgs[0] for name in ("Scan", "Reliability", "TrainedModel", "Similarity",
                                                      "TrainedClassifier"))
    # describe(): the table's definition
    assert "best mean single-trial correlation on the validation tier" in text and "\n-> " in text
    # restriction by key, by condition and by query; a join across stages
    assert "scan key: {'animal_id': 1, 'session': 1, 'scan_idx': 1}" in text
    assert "units of the scan have an oracle correlation above 0.3" in text
    assert "1 of 2 trained models have a rotation-equivariant core" in text
    assert "predicted" in text and "units for 8 test images" in text
    # TrainedClassifier.load_model reproduces the stored clean accuracy
    line = next(l for l in text.splitlines() if l.startswith("neural-regularized classifier"))
    measured, stored = line.split("accuracy ")[1].split()[0], line.split("stored: ")[1].rstrip(")")
    assert measured == stored, line
    # reliability, training curves (models, classifiers), oracle-vs-correlation, cell types, noise curves
    assert len(images) >= 7
    assert "cell_type" in text
