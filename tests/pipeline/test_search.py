"""Random hyper-parameter search: draws (pipeline.models.search) and the Search / SearchBest tables."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import ConfigError
from pipeline.models import search
from tests.conftest import QUICK_TRAINER, SCAN, tiny_model

BASES = {
    "rotation": dict(core=dict(kind="rotation", features=6, kernel_sizes=(9, 5, 5))),
    "cnn": dict(core=dict(kind="cnn", features=48, kernel_sizes=(9, 5, 5))),
}


def test_every_core_kind_gets_the_same_draws():
    drawn = search.draw_configs(BASES, search.DEFAULT_SPACE, budget=5, seed=3)
    assert [len(c) for c in drawn.values()] == [5, 5]
    for rotation, cnn in zip(drawn["rotation"], drawn["cnn"]):
        assert rotation.core.kind == "rotation" and cnn.core.kind == "cnn"
        assert rotation.core.gamma_laplace == cnn.core.gamma_laplace
        assert rotation.readout.gamma_readout == cnn.readout.gamma_readout
    values = np.array([c.core.gamma_laplace for c in drawn["rotation"]])
    assert len(set(values)) == 5 and values.min() >= 0.005 and values.max() <= 0.1
    again = search.draw_configs(
        dict(reversed(list(BASES.items()))), dict(reversed(list(search.DEFAULT_SPACE.items()))), budget=5, seed=3
    )
    assert [c.hash for c in again["rotation"]] == [c.hash for c in drawn["rotation"]]  # order-free, seeded
    choice = search.draw_configs(
        {"rotation": BASES["rotation"]}, {"core.layer_features": ["choice", [16, 16, 6]]}, budget=1, seed=0
    )
    assert choice["rotation"][0].core.layer_features == (16, 16, 6)


def test_bad_spaces_are_refused():
    for space, message in [
        ({}, "no hyper-parameters"),
        ({"core.gamma_laplace": ["normal", 0, 1]}, "distribution"),
        ({"core.gamma_laplace": ["log_uniform", 0, 1]}, "0 < low <= high"),
        ({"core.gamma_laplace": ["uniform", 2, 1]}, "low <= high"),
        ({"core.gamma_laplace": ["choice"]}, "at least one value"),
    ]:
        with pytest.raises(ConfigError, match=message):
            search.check_space(space)
    with pytest.raises(ConfigError, match="unknown CoreConfig key 'core.gamma_smooth'"):
        search.draw_configs(BASES, {"core.gamma_smooth": ["uniform", 0, 1]}, budget=1, seed=0)
    with pytest.raises(ConfigError, match="budget"):
        search.draw_values(search.DEFAULT_SPACE, 0, 0)


def test_best_candidate_uses_the_highest_finite_score():
    assert search.best_candidate([0.2, np.nan, 0.5, 0.5]) == 2
    with pytest.raises(ValueError, match="no finite"):
        search.best_candidate([np.nan])


def test_search_trains_every_draw_and_picks_on_validation(trained_models):
    from populate.work import run
    from schemas.models import Search, SearchBest, TrainedModel, TrainingTask

    bases = {kind: tiny_model(kind) for kind in ("rotation", "cnn")}
    key = Search.create(
        "test-search", bases, dict(scan=SCAN, image_shape=(18, 32)), budget=2, trainer=QUICK_TRAINER, search_seed=1
    )
    candidates = (Search.Candidate & key).to_dicts()
    assert len(candidates) == 4 and all(TrainingTask & c for c in candidates)
    TrainedModel.populate(candidates[0], display_progress=False)
    assert not SearchBest().key_source & key  # waits for every candidate
    run.populate_all(tables=["TrainedModel", "SearchBest"], progress=False)
    assert SearchBest & key and (SearchBest & key).fetch1("criterion") == "val_correlation"
    for kind in bases:
        rows = ((Search.Candidate & key & dict(core_kind=kind)) * TrainedModel).to_arrays(
            "draw", "val_correlation", "test_correlation", order_by="draw"
        )
        chosen = (SearchBest.Kind & key & dict(core_kind=kind)).fetch1()
        assert chosen["best_draw"] == rows[0][np.argmax(rows[1])] and chosen["n_candidates"] == 2
        assert chosen["val_correlation"] == rows[1].max()
    tasks = SearchBest.best_tasks(key)
    assert set(tasks) == {"rotation", "cnn"} and all(len(TrainedModel & t) == 1 for t in tasks.values())
