"""Figures of the functional cell types: type gallery, agreement with the truth, number of types."""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pipeline.figures.common import as_array


def cell_type_gallery(filters: np.ndarray, counts: np.ndarray, orientation_deg: np.ndarray | None = None) -> Figure:
    """The used functional types: each type's first-layer filter, with units per type.

    filters : (n_types, k, k) one image per type (e.g. the rotation core's layer-1 filter of the
        type's feature, turned to the type's typical preferred orientation).
    counts : (n_types,) units of each type; types with no unit are left out of the gallery row but
        kept in the bar chart.
    orientation_deg : optional (n_types,) orientation at which each filter is shown, degrees.
    """
    filters = as_array("filters", filters, ndim=3)
    counts = np.asarray(counts)
    if counts.shape != (len(filters),):
        raise ValueError(f"cell_type_gallery: counts has shape {counts.shape}, expected ({len(filters)},)")
    used = np.flatnonzero(counts > 0)
    if not used.size:
        raise ValueError("cell_type_gallery: no type has any unit")
    columns = max(len(used), 2)
    fig = plt.figure(figsize=(max(6.0, 1.3 * columns), 5), layout="constrained")
    grid = fig.add_gridspec(2, columns, height_ratios=[1, 1.3])
    for slot, t in enumerate(used):
        ax = fig.add_subplot(grid[0, slot])
        image = filters[t]
        limit = np.abs(image).max() or 1.0
        ax.imshow(image, cmap="RdBu_r", vmin=-limit, vmax=limit)
        title = f"type {t}\nn={int(counts[t])}"
        if orientation_deg is not None:
            title += f", {float(orientation_deg[t]):.0f}°"
        ax.set_title(title, fontsize="small")
        ax.set_xticks([])
        ax.set_yticks([])
    bar = fig.add_subplot(grid[1, :])
    bar.bar(np.arange(len(counts)), counts, color=["tab:blue" if c > 0 else "lightgray" for c in counts])
    bar.set_xticks(np.arange(len(counts)))
    bar.set_xlabel("functional type (main feature of the readout)")
    bar.set_ylabel("units")
    fig.suptitle(
        "Cell types: layer-1 filter of each used type (blue: excitatory, red: inhibitory weights)", fontsize="medium"
    )
    return fig


def cell_type_confusion(true_types: Sequence, learned_types: Sequence, learned_label: str = "learned type") -> Figure:
    """Confusion matrix of simulated (true) types against learned types, counts of units.

    true_types, learned_types : (n_units,) labels of the same units.
    learned_label : x-axis label (e.g. "cluster" for clusters instead of argmax types).
    """
    true = np.asarray(true_types).astype(str)
    learned = np.asarray(learned_types)
    if true.shape != learned.shape or true.ndim != 1:
        raise ValueError(f"cell_type_confusion: shapes differ: {true.shape} vs {learned.shape}")
    rows = sorted(set(true))
    cols = sorted(set(learned.tolist()))
    table = pd.crosstab(pd.Categorical(true, rows), pd.Categorical(learned, cols), dropna=False)
    matrix = table.to_numpy()
    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * len(cols) + 2, 1.2 + 0.5 * len(rows) + 1), layout="constrained")
    image = ax.imshow(matrix, cmap="Blues", aspect="auto")
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(
            j,
            i,
            str(value),
            ha="center",
            va="center",
            color="white" if value > matrix.max() / 2 else "black",
            fontsize="small",
        )
    ax.set_xticks(np.arange(len(cols)), [str(c) for c in cols])
    ax.set_yticks(np.arange(len(rows)), rows)
    ax.set_xlabel(learned_label)
    ax.set_ylabel("simulated (true) type")
    ax.set_title("Agreement with ground truth")
    fig.colorbar(image, ax=ax, label="units")
    return fig


def consensus_curve(rows: Sequence[Mapping], goal: float | None = 0.8) -> Figure:
    """Agreement of the consensus cell types with the ground truth against the number of models.

    rows : one mapping per ensemble size with ``models`` and ``ari`` (the ARI of every subset of that
        size), as :func:`pipeline.celltypes.clustering.consensus_by_ensemble_size` returns them.
    goal : a horizontal reference line (None: none).
    """
    if not rows:
        raise ValueError("consensus_curve: no rows")
    sizes = np.array([int(r["models"]) for r in rows])
    values = [np.asarray(r["ari"], dtype=float) for r in rows]
    fig, ax = plt.subplots(figsize=(5, 3.5), layout="constrained")
    for size, ari in zip(sizes, values):
        jitter = np.random.default_rng(size).uniform(-0.15, 0.15, len(ari))
        ax.scatter(size + jitter, ari, s=8, color="0.6", alpha=0.6, linewidths=0)
    ax.plot(sizes, [v.mean() for v in values], "o-", color="C0", label="mean over subsets")
    if goal is not None:
        ax.axhline(goal, color="C3", linestyle="--", linewidth=1, label=f"goal {goal:g}")
    ax.set_xticks(sizes)
    ax.set_xlabel("models in the ensemble")
    ax.set_ylabel("ARI with simulated types")
    ax.set_title("Consensus cell types vs ensemble size")
    ax.legend(loc="lower right", fontsize="small")
    return fig


def type_count_curve(rows: Sequence[Mapping]) -> Figure:
    """The evidence for an ensemble's number of cell types, as :func:`pipeline.celltypes.type_count` stores it.

    rows : one mapping per candidate k with ``k``, ``residual`` and ``residual_se`` (held-out template
        residual of unit-length readouts, the criterion), ``stability`` and ``sd`` (mean and sd of the
        half-ensemble ARI), and ``chosen``.  Rows that hold ``lifetime`` instead of ``residual`` are
        drawn with what they hold.
    """
    if not rows:
        raise ValueError("type_count_curve: no rows")
    k = np.array([int(r["k"]) for r in rows])

    def curve(axis, name: str, error: str, fmt: str, color: str, label: str) -> None:
        values = [float(r[name]) for r in rows]
        axis.errorbar(
            k, values, yerr=[float(r.get(error, 0.0)) for r in rows], fmt=fmt, color=color, capsize=2, label=label
        )

    fig, ax = plt.subplots(figsize=(5, 3.5), layout="constrained")
    if all("residual" in r for r in rows):
        curve(ax, "residual", "residual_se", "o-", "C0", "held-out residual (criterion)")
        ax.set_ylabel("held-out residual (unit-length readouts)")
        right = ax.twinx()
    else:
        right = ax
    if all("lifetime" in r for r in rows) and right is ax:
        ax.plot(k, [float(r["lifetime"]) for r in rows], "o-", color="C0", label="lifetime")
    if all("stability" in r for r in rows):
        curve(right, "stability", "sd", "s--", "C1", "half-ensemble ARI")
        right.set_ylabel("half-ensemble ARI", color="C1")
    for value in (int(r["k"]) for r in rows if r.get("chosen")):
        ax.axvline(value, color="C3", linestyle=":", linewidth=1.5, label=f"chosen k = {value}")
    ax.set_xticks(k)
    ax.set_xlabel("number of types k")
    ax.set_title("Number of consensus cell types")
    handles = [h for axis in dict.fromkeys((ax, right)) for h in axis.get_legend_handles_labels()[0]]
    ax.legend(handles=handles, loc="best", fontsize="small")
    return fig
