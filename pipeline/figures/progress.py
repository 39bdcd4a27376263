"""Populate progress of the computed tables."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pipeline.figures.common import require_columns

PROGRESS_STATES = ("done", "pending", "error")
PROGRESS_COLORS = {"done": "tab:green", "pending": "tab:gray", "error": "tab:red"}


def populate_progress(progress: pd.DataFrame) -> Figure:
    """Stacked horizontal bars of done / pending / error keys per computed table.

    progress : one row per table, columns ``table`` and ``done``, ``pending``, ``error`` (key counts).
    """
    require_columns("populate_progress", progress, ["table", *PROGRESS_STATES])
    if progress.empty:
        raise ValueError("populate_progress: no tables")
    names = progress["table"].astype(str).tolist()
    position = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(7, 0.9 + 0.45 * len(names)), layout="constrained")
    left = np.zeros(len(names))
    for state in PROGRESS_STATES:
        values = progress[state].to_numpy(dtype=np.float64)
        ax.barh(position, values, left=left, color=PROGRESS_COLORS[state], label=state)
        left += values
    ax.set_yticks(position, names)
    ax.invert_yaxis()  # upstream tables on top
    ax.set_xlabel("keys (jobs)")
    ax.set_title("Populate progress per table")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    return fig
