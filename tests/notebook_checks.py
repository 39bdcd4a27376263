"""Checks run inside the notebook test's own demo database (its PIPELINE_PREFIX), in a process of their own."""

from __future__ import annotations

import pytest


def training_curves() -> None:
    """The API's training curves are the stored histories of the demo's models and classifiers."""
    from populate import api
    from schemas.classifiers import TrainedClassifier
    from schemas.models import TrainedModel

    api.connect()
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
