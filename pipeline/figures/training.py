"""Training curves of any fitted model (encoders, classifiers)."""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pipeline.figures.common import require_rows


def training_curves(
    curves: pd.DataFrame,
    x: str,
    metrics: Sequence[str],
    labels: Mapping[str, str] | None = None,
    title: str = "Training curves",
) -> Figure:
    """One panel per metric against ``x``, one line per training run.

    curves : long form, one row per run and evaluation, with a ``run`` column (the line's label),
        ``x`` (e.g. ``iteration`` or ``epoch``) and every column of ``metrics``; missing values
        (e.g. the training loss before the first step) leave gaps.
    labels : axis label per column (default: the column name).
    """
    require_rows("training_curves", curves, ["run", x, *metrics])
    labels = dict(labels or {})
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.6), layout="constrained", squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for run, rows in curves.groupby("run", sort=True):
            rows = rows.sort_values(x)
            ax.plot(
                rows[x].to_numpy(dtype=np.float64),
                pd.to_numeric(rows[metric], errors="coerce").to_numpy(),
                marker="o",
                ms=2.5,
                lw=1.2,
                label=str(run),
            )
        ax.set_xlabel(labels.get(x, x))
        ax.set_ylabel(labels.get(metric, metric))
    axes[0][-1].legend(fontsize="x-small")
    fig.suptitle(title, fontsize="medium")
    return fig
