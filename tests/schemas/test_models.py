"""Model configs, TrainedModel, load_model, cell types and results on a real database."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from populate.cli.main import main
from tests.conftest import QUICK_TRAINER, REPO, SCAN, SCAN_KEY, tiny_model


@pytest.fixture(scope="module")
def trained(trained_models):
    return trained_models


def test_equivalent_config_spellings_are_one_entry(db, row_counts):
    from schemas.models import ModelConfig

    a = ModelConfig.add(
        dict(
            core=dict(kind="cnn", features=8, kernel_sizes=[5, 3], layers=2, gamma_laplace=0.02),
            readout=dict(gamma_readout=0.5),
        )
    )
    before = row_counts()
    spellings = [
        dict(
            readout=dict(gamma_readout=np.float32(0.5)),
            core=dict(layers=2.0, kernel_sizes=(5, 3), features=np.int64(8), kind="cnn", gamma_laplace=0.02),
        ),
        dict(
            core=dict(
                gamma_laplace=np.float64(0.02),
                kind="cnn",
                features=8.0,
                layers=np.int32(2),
                kernel_sizes=np.array([5, 3]),
            ),
            readout=dict(gamma_readout=0.5),
        ),
    ]
    for config in spellings:
        assert ModelConfig.add(config) == a
    assert row_counts() == before


def test_unknown_or_mistyped_config_key_is_refused(db, row_counts):
    from pipeline.config import ConfigError
    from schemas.models import ModelConfig, TrainerConfig

    before = row_counts()
    with pytest.raises(ConfigError, match="kernel_size"):
        ModelConfig.add(dict(core=dict(kind="cnn", kernel_size=(5, 3))))
    with pytest.raises(ConfigError, match="readout"):
        ModelConfig.add(dict(readuot=dict(kind="gaussian")))
    with pytest.raises(ConfigError, match="lr"):
        TrainerConfig.add(dict(lr="fast"))
    with pytest.raises(ValueError, match="seed"):
        TrainerConfig.add(dict(seed=3))
    assert row_counts() == before


def test_trained_models_store_scores_and_units(trained):
    from schemas.models import TrainedModel
    from schemas.recordings import Scan

    for key in trained.values():
        row = (TrainedModel & key).fetch1()
        assert -1 <= row["test_correlation"] <= 1
        assert row["n_units"] == len(Scan.Unit & SCAN_KEY)
        per_unit = (TrainedModel.Unit & key).to_arrays("test_correlation").astype(float)
        assert len(per_unit) == row["n_units"]
        assert np.isclose(np.nanmean(per_unit), row["test_correlation"])
        assert row["code_version"].startswith("0.1.0")


def test_rotation_model_has_fewer_parameters_for_the_same_feature_maps(trained):
    from schemas.models import ModelConfig, TrainedModel

    sizes = {}
    for kind, key in trained.items():
        assert (ModelConfig & key).fetch1("feature_maps") == 16
        model = TrainedModel.load_model(key, device="cpu")
        sizes[kind] = sum(p.numel() for p in model.core.parameters())
    assert sizes["rotation"] < sizes["cnn"] / 3


def test_load_model_in_a_fresh_process_reproduces_the_test_score(trained):
    """A notebook-like process rebuilds the model from the database alone and scores it again."""
    from schemas.models import TrainedModel

    key = trained["rotation"]
    script = f"""
import json, numpy as np
import schemas
from pipeline.models.experiment import score
from schemas.models import TrainedModel, load_scan_tensors
schemas.activate()
key = json.loads({json.dumps(json.dumps(key))})
model = TrainedModel.load_model(key, device="cpu")
data = load_scan_tensors({SCAN_KEY!r}, (18, 32))
print(json.dumps(float(np.mean(score(model, data).correlation))))
"""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert float(out.stdout.strip().splitlines()[-1]) == (TrainedModel & key).fetch1("test_correlation")


def test_cell_types_for_rotation_models_only(trained):
    from schemas.models import CellTypes, TrainedModel

    assert len(CellTypes & trained["rotation"]) == 1
    assert len(CellTypes & trained["cnn"]) == 0
    row = (CellTypes & trained["rotation"]).fetch1()
    units = (CellTypes.Unit & trained["rotation"]).to_arrays()
    assert len(units) == (TrainedModel & trained["rotation"]).fetch1("n_units")
    assert np.bincount(units["cell_type"], minlength=2).tolist() == list(row["type_counts"])
    assert ((units["preferred_orientation"] >= 0) & (units["preferred_orientation"] < np.pi)).all()
    assert row["ari_types"] is not None  # simulated scan: agreement with ground truth is recorded


def test_ensemble_cell_types_are_the_consensus_of_its_rotation_models(trained):
    from pipeline.celltypes import clustering as celltypes
    from pipeline.celltypes import ensemble
    from populate.work import run
    from schemas.models import CellTypes, Ensemble, EnsembleCellTypes, TrainedModel, TrainingTask

    second = TrainingTask.add(
        model=tiny_model("rotation"),
        dataset=dict(scan=SCAN, image_shape=(18, 32)),
        trainer=QUICK_TRAINER,
        seeds=(1,),
        name="test-rotation-seed1",
    )[0]
    run.populate_all(tables=["TrainedModel", "CellTypes"], progress=False)
    members = [trained["rotation"], second]
    Ensemble.create("test-types", members, n_types=2)  # k fixed at the models' 2 features
    Ensemble.create("test-chosen", members)  # k chosen from the readouts
    Ensemble.create("test-mixed", [trained["rotation"], trained["cnn"]])
    Ensemble.create("test-single", [second])  # one model: no k from the data, its own clusters
    with pytest.raises(ValueError, match="n_types must be a positive integer"):
        Ensemble.create("test-bad", members, n_types=0)
    assert not Ensemble & dict(ensemble_name="test-bad")
    run.populate_all(tables=["EnsembleCellTypes"], progress=False)
    assert not EnsembleCellTypes & dict(ensemble_name="test-mixed")  # a CNN member has no cell types
    # the table stores pipeline.celltypes.ensemble.ensemble_types: averaged band-limited distances (issue 33)
    readouts = {m["seed"]: TrainedModel.load_model(m, device="cpu").feature_weights() for m in members}
    single = (EnsembleCellTypes & dict(ensemble_name="test-single")).fetch1()
    assert single["k_source"] == "fixed" and single["n_models"] == 1
    own = ensemble.ensemble_types([readouts[second["seed"]]], 8, n_types=2)  # one model: k = its features
    single_types = (EnsembleCellTypes.Unit & single).to_arrays("cell_type", order_by="unit_id")
    assert celltypes.adjusted_rand_index(own.labels, single_types) == 1.0
    row = (EnsembleCellTypes & dict(ensemble_name="test-types")).fetch1()
    assert row["n_models"] == 2 and row["ari_clusters"] is not None
    assert row["k_source"] == "fixed" and row["k_curve"] is None
    consensus, agreement = (EnsembleCellTypes.Unit & row).to_arrays("cell_type", "agreement", order_by="unit_id")
    expected = ensemble.ensemble_types([readouts[m["seed"]] for m in members], 8, n_types=2)
    assert celltypes.adjusted_rand_index(expected.labels, consensus) == 1.0
    assert len(consensus) == (CellTypes.Unit & second).to_arrays("cluster").size
    np.testing.assert_allclose(np.sort(agreement), np.sort(expected.agreement))

    chosen = (EnsembleCellTypes & dict(ensemble_name="test-chosen")).fetch1()
    count = ensemble.ensemble_types([readouts[m["seed"]] for m in members], 8)
    assert chosen["k_source"] == "data" and chosen["k_curve"] == count.curve
    assert [r["k"] for r in chosen["k_curve"] if r["chosen"]] == [count.k]
    consensus = (EnsembleCellTypes.Unit & chosen).to_arrays("cell_type", order_by="unit_id")
    assert celltypes.adjusted_rand_index(count.labels, consensus) == 1.0
    assert chosen["n_clusters"] == len(np.unique(count.labels))


def test_results_json(trained, capsys, monkeypatch):
    import datajoint as dj

    from populate import api

    connection, sent = dj.conn(), []
    query = connection.query
    monkeypatch.setattr(
        connection, "query", lambda sql, *args, **kwargs: sent.append(sql) or query(sql, *args, **kwargs)
    )
    assert main(["results", "models", "--json"]) == 0
    assert sent and not [sql for sql in sent if "weights" in sql or "history" in sql], "a listing fetched weights"
    monkeypatch.undo()
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    mine = [r for r in rows if r["model_hash"] in {k["model_hash"] for k in trained.values()}]
    assert {r["core_kind"] for r in mine} == {"cnn", "rotation"}
    listing = api.models()
    for r in mine:  # the notebook API's columns, and nothing heavy
        assert set(r) == set(listing.columns)
        assert not set(r) & {"weights", "history"}
    key = ["model_hash", "dataset_hash", "trainer_hash", "seed"]
    scores = {tuple(r[k] for k in key): r["test_correlation"] for r in rows}
    assert scores == pytest.approx(
        {tuple(r[k] for k in key): r["test_correlation"] for r in listing.to_dict("records")}
    )
    from populate.work import run
    from schemas.models import Ensemble

    if not Ensemble & dict(ensemble_name="test-json"):
        Ensemble.create("test-json", [trained["rotation"]], n_types=2)
    run.populate_all(tables=["CellTypes", "EnsembleCellTypes"], progress=False)
    assert main(["results", "celltypes", "--json"]) == 0
    units = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert units and all(u["true_type"] is not None for u in units if u["scan"] == SCAN)
    # every row names the table it comes from: per-model types, then the ensembles' consensus
    assert {u["source"] for u in units} == {"CellTypes", "EnsembleCellTypes"}
    consensus = [u for u in units if u["source"] == "EnsembleCellTypes"]
    expected = api.ensemble_cell_types()
    assert len(consensus) == len(expected) and len(units) - len(consensus) == len(api.cell_types())
    mine = {(u["unit_id"], u["cell_type"], u["agreement"]) for u in consensus if u["ensemble_name"] == "test-json"}
    stored = expected[expected["ensemble_name"] == "test-json"]
    assert mine == set(zip(stored["unit_id"], stored["cell_type"], stored["agreement"])) and len(mine) > 0


def test_oracle_fraction_of_each_trained_model_is_its_single_trial_slope_on_the_oracle(trained, capsys):
    """OracleFraction holds, per trained model, the fraction of oracle of its stored per-unit
    single-trial test correlations against the scan's stored oracle; the listings show it and call
    the oracle ``oracle``, not a ceiling."""
    from pipeline.models import metrics
    from populate import api
    from schemas.models import OracleFraction, TrainedModel
    from schemas.stats import Reliability

    for task in trained.values():
        row = (OracleFraction & task).fetch1()
        single_of = dict(zip(*(TrainedModel.Unit & task).to_arrays("unit_id", "test_single_trial")))
        oracle_of = dict(zip(*(Reliability.Unit & SCAN_KEY).to_arrays("unit_id", "oracle")))
        assert set(single_of) == set(oracle_of)
        units = sorted(single_of)
        single = np.array([single_of[u] for u in units], dtype=np.float64)
        oracle = np.array([oracle_of[u] for u in units], dtype=np.float64)
        assert row["fraction_oracle"] == pytest.approx(metrics.fraction_of_oracle(single, oracle))
        assert row["units_scored"] == int((np.isfinite(single) & np.isfinite(oracle)).sum()) > 0

    listing = api.models()
    assert "oracle_ceiling" not in listing.columns
    for task in trained.values():
        model = api.models(task).iloc[0]
        assert model["fraction_oracle"] == pytest.approx((OracleFraction & task).fetch1("fraction_oracle"))
        assert model["oracle"] == pytest.approx((Reliability & SCAN_KEY).fetch1("mean_oracle"))
    assert main(["results", "models", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows and all({"oracle", "fraction_oracle"} <= set(r) and "oracle_ceiling" not in r for r in rows)
    assert main(["results", "models"]) == 0
    header = capsys.readouterr().out.splitlines()[0].split()
    assert {"oracle", "fraction_oracle", "test_single_trial"} <= set(header) and "oracle_ceiling" not in header
