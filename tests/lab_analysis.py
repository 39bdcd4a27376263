"""A lab's own downstream table beside the pipeline, as docs/api.md ("Extending the pipeline with your own
tables") shows it: a schema of the lab's (not a pipeline stage), one ``dj.Computed`` over the pipeline's
``TrainedModel.Unit``.

Import it after :func:`schemas.activate` (its foreign key needs ``TrainedModel`` bound).  The schema is
``$LAB_SCHEMA``, default ``{PIPELINE_PREFIX}_lab`` (one word after the prefix, so no pipeline prefix
owns it).  Served by ``python -m populate worker --schema-module tests.lab_analysis``.
"""

from __future__ import annotations

import os

import datajoint as dj
import numpy as np

from schemas.models import TrainedModel

schema = dj.Schema(os.environ.get("LAB_SCHEMA") or f"{os.environ.get('PIPELINE_PREFIX', 'v1')}_lab")


@schema
class MyAnalysis(dj.Computed):
    definition = """
    # per trained model: how many of its units it predicts well
    -> TrainedModel
    ---
    n_units: int32
    n_well_predicted: int32             # units with a test correlation of at least 0.2
    median_correlation = null: float64  # over units with a defined correlation
    """

    def make(self, key):
        correlations = (TrainedModel.Unit & key).to_arrays("test_correlation").astype(float)
        defined = correlations[np.isfinite(correlations)]
        self.insert1(
            dict(
                key,
                n_units=len(correlations),
                n_well_predicted=int((defined >= 0.2).sum()),
                median_correlation=float(np.median(defined)) if len(defined) else None,
            )
        )
