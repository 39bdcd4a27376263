"""Fixtures the schema tests share: the similarity targets over the tiny scan's images."""

from __future__ import annotations

import pytest

from tests.conftest import SCAN_KEY


@pytest.fixture(scope="session")
def similarity(trained_models):
    """An ensemble of both tiny models, the scan's image set, model-based and pixel similarity."""
    from populate.work import run
    from schemas.models import Ensemble
    from schemas.similarity import ImageSet, SimilarityTask

    Ensemble.create("test", list(trained_models.values()))
    ImageSet.from_scans("test", [SCAN_KEY])
    SimilarityTask.add(
        "test-neural", dict(method="model", block_rows=37, dtype="float32"), image_set="test", ensembles=["test"]
    )
    SimilarityTask.add("test-single", dict(method="single_trial", block_rows=37), image_set="test", ensembles=["test"])
    SimilarityTask.add("test-pixel", dict(method="pixel"), image_set="test")
    SimilarityTask.add("test-lowpass", dict(method="lowpass", lowpass_sigma=3.0), image_set="test")
    run.populate_all(tables=["PredictedResponses", "Similarity"], progress=False)
    return "test-neural"
