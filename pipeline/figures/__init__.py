"""Figures of every pipeline stage, from plain arrays and pandas DataFrames (no database).

Each function returns a :class:`matplotlib.figure.Figure` with labelled axes (units in brackets
where a quantity has units); nothing is shown or saved here.  The Agg backend is selected on import
of this package, before any module of it imports pyplot, so that figures render on machines without
a display (servers, workers, tests).

Correlations, FEVE and accuracies are unitless fractions; perturbation sizes are in the classifier's
pixel scale ([0, 1] images); orientations in degrees.

Modules by domain: ``models`` (predictive models), ``celltypes``, ``similarity``, ``robustness``
(classifiers), ``training`` (training curves), ``progress`` (populate progress); ``common`` holds
the input checks they share.
"""

import matplotlib

matplotlib.use("Agg")

from pipeline.figures.celltypes import (  # noqa: E402  (after the backend is chosen)
    cell_type_confusion,
    cell_type_gallery,
    consensus_curve,
    type_count_curve,
)
from pipeline.figures.models import (  # noqa: E402
    feve_distributions,
    oracle_distributions,
    oracle_vs_correlation,
    score_histograms,
    unit_comparison,
)
from pipeline.figures.progress import PROGRESS_COLORS, PROGRESS_STATES, populate_progress  # noqa: E402
from pipeline.figures.robustness import (  # noqa: E402
    accuracy_tradeoff,
    attack_convergence,
    dose_response,
    noise_curves,
    noise_curves_ci,
    perturbation_distributions,
    task_overview,
)
from pipeline.figures.similarity import similarity_matrix, similarity_scatter  # noqa: E402
from pipeline.figures.training import training_curves  # noqa: E402

__all__ = [
    "PROGRESS_COLORS",
    "PROGRESS_STATES",
    "accuracy_tradeoff",
    "attack_convergence",
    "cell_type_confusion",
    "cell_type_gallery",
    "consensus_curve",
    "dose_response",
    "feve_distributions",
    "noise_curves",
    "noise_curves_ci",
    "oracle_distributions",
    "oracle_vs_correlation",
    "perturbation_distributions",
    "populate_progress",
    "score_histograms",
    "similarity_matrix",
    "similarity_scatter",
    "task_overview",
    "training_curves",
    "type_count_curve",
    "unit_comparison",
]
