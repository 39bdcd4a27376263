"""Input checks and axes helpers shared by the figure modules."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure


def as_array(name: str, values, ndim: int = 1) -> np.ndarray:
    """``values`` as a float64 array, refusing one that is not ``ndim``-dimensional."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got shape {array.shape}")
    return array


def same_shape(name: str, label_a: str, a, label_b: str, b) -> tuple[np.ndarray, np.ndarray]:
    """``a`` and ``b`` as 1-D float64 arrays, refusing two of different shapes (the values of the same items)."""
    a, b = as_array(label_a, a), as_array(label_b, b)
    if a.shape != b.shape:
        raise ValueError(f"{name}: shapes differ: {label_a} {a.shape} vs {label_b} {b.shape}")
    return a, b


def require_columns(name: str, frame: pd.DataFrame, columns: Sequence[str]) -> None:
    """Refuse a ``frame`` that lacks any of ``columns``; ``name`` (the figure) leads the message."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name}: the table lacks column(s) {missing}; it has {list(frame.columns)}")


def require_rows(name: str, frame: pd.DataFrame, columns: Sequence[str]) -> None:
    """Refuse a ``frame`` that lacks any of ``columns`` or has no rows."""
    require_columns(name, frame, columns)
    if frame.empty:
        raise ValueError(f"{name}: no rows")


def panel_grid(name: str, frame: pd.DataFrame, columns: Sequence[str], by: str) -> tuple[Figure, list]:
    """A figure with one panel per value of ``by`` (sorted): ``(fig, [(ax, value, rows of frame), ...])``;
    refuses a frame that lacks ``columns`` or has no rows."""
    require_rows(name, frame, columns)
    values = sorted(frame[by].unique())
    fig, axes = plt.subplots(1, len(values), figsize=(4.8 * len(values), 4), layout="constrained", squeeze=False)
    return fig, [(ax, value, frame[frame[by] == value]) for ax, value in zip(axes[0], values)]


def identity_line(ax, x: np.ndarray, y: np.ndarray) -> None:
    """The dashed line y = x over the finite range of ``x`` and ``y``, on equal square axes."""
    finite = np.concatenate([x[np.isfinite(x)], y[np.isfinite(y)]])
    lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
    pad = 0.05 * (hi - lo or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="k", lw=0.8, ls="--", label="identity")
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_aspect("equal")


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r over the finite pairs; NaN for fewer than 3 or a constant side."""
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 3 or np.std(x[keep]) == 0 or np.std(y[keep]) == 0:
        return float("nan")
    return float(np.corrcoef(x[keep], y[keep])[0, 1])
