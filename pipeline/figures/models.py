"""Figures of the predictive models: per-unit single-trial scores against the oracle, score distributions."""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from pipeline.figures.common import as_array, identity_line, same_shape
from pipeline.models.metrics import fraction_of_oracle


def oracle_vs_correlation(oracle: np.ndarray, single_trial: np.ndarray, groups: Sequence[str] | None = None) -> Figure:
    """Per-unit single-trial test correlation of a model against the unit's oracle correlation.

    oracle, single_trial : (n,) per unit (one point per unit and model): the leave-one-out oracle
        correlation and the model's correlation with single test trials, the quantity the oracle
        bounds (the correlation with repeat-averaged responses is not bounded by it).
    groups : optional (n,) label per point (e.g. model), one colour each; its legend gives the
        group's fraction of oracle (:func:`pipeline.models.metrics.fraction_of_oracle`, the slope of
        the least-squares line through the origin, drawn dashed).
    Points under the identity line predict single trials less well than the other repeats do.
    """
    oracle, single_trial = same_shape("oracle_vs_correlation", "oracle", oracle, "single_trial", single_trial)
    labels = np.full(len(oracle), "units", dtype=object) if groups is None else np.asarray(groups, dtype=object)
    if labels.shape != oracle.shape:
        raise ValueError(f"oracle_vs_correlation: groups has shape {labels.shape}, expected {oracle.shape}")
    fig, ax = plt.subplots(figsize=(5, 5), layout="constrained")
    finite = oracle[np.isfinite(oracle)]
    reach = np.array([0.0, max(float(finite.max()), 0.0) if finite.size else 1.0])
    for label in dict.fromkeys(labels):
        members = labels == label
        fraction = fraction_of_oracle(single_trial[members], oracle[members])
        points = ax.scatter(
            oracle[members],
            single_trial[members],
            s=10,
            alpha=0.6,
            label=f"{label} (fraction of oracle {fraction:.2f})",
        )
        if np.isfinite(fraction):
            ax.plot(reach, fraction * reach, "--", color=points.get_facecolor()[0], linewidth=1)
    identity_line(ax, oracle, single_trial)
    ax.set_xlabel("oracle correlation")
    ax.set_ylabel("single-trial test correlation")
    ax.set_title("Per-unit single-trial performance vs oracle")
    ax.legend(loc="upper left", fontsize="small")
    return fig


def score_histograms(
    values: Mapping[str, np.ndarray], xlabel: str, title: str, bins: int = 30, lower: float | None = None
) -> Figure:
    """Overlaid histograms of a per-unit score, one per label (e.g. per model or per scan).

    values : {label: (n_units,) scores}; non-finite values are left out (and counted in the legend).
    lower : values below it are drawn in the lowest bin (and counted in the legend), so that a few
        extreme units (FEVE of unreliable units can be far below 0) do not squash the histogram.
    """
    if not values:
        raise ValueError(f"score_histograms ({title}): nothing to plot")
    arrays = {label: as_array(f"{title}[{label!r}]", v) for label, v in values.items()}
    finite = np.concatenate([a[np.isfinite(a)] for a in arrays.values()])
    lo, hi = (min(finite.min(), 0.0), max(finite.max(), 1.0)) if finite.size else (0.0, 1.0)
    if lower is not None:
        lo = max(lo, lower)
    edges = np.linspace(lo, hi, bins + 1)
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    for label, array in arrays.items():
        kept = array[np.isfinite(array)]
        notes = f", {len(array) - len(kept)} undefined" if len(kept) < len(array) else ""
        below = int((kept < lo).sum())
        notes += f", {below} < {lo:g} in the first bin" if below else ""
        median = f"{np.median(kept):.2f}" if kept.size else "n/a"
        ax.hist(
            np.clip(kept, lo, hi),
            bins=edges.tolist(),
            alpha=0.5,
            label=f"{label} (median {median}, n={len(kept)}{notes})",
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel("units")
    ax.set_title(title)
    ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.15))  # below: labels can be long
    return fig


def feve_distributions(feve: Mapping[str, np.ndarray], bins: int = 30) -> Figure:
    """Histograms of per-unit FEVE (fraction of explainable variance explained), one per model label.

    feve : {label (e.g. 'rotation', 'cnn'): (n_units,) FEVE}.
    """
    return score_histograms(
        feve, "FEVE (fraction of explainable variance explained)", "FEVE per unit", bins, lower=-1.0
    )


def oracle_distributions(oracle: Mapping[str, np.ndarray], bins: int = 30) -> Figure:
    """Histograms of per-unit oracle correlation (leave-one-out over repeats), one per scan."""
    return score_histograms(
        oracle, "oracle correlation (leave-one-out, repeats)", "Response reliability per unit", bins
    )


def unit_comparison(
    a: np.ndarray, b: np.ndarray, label_a: str, label_b: str, quantity: str = "test correlation"
) -> Figure:
    """Per-unit scatter of one score under two models (e.g. rotation vs CNN), with the identity line.

    a, b : (n_units,) the score of the same units, in the same order.
    """
    a, b = same_shape("unit_comparison", label_a, a, label_b, b)
    fig, ax = plt.subplots(figsize=(5, 5), layout="constrained")
    above = np.mean(b > a) if len(a) else float("nan")
    ax.scatter(a, b, s=10, alpha=0.6, label=f"units (n={len(a)}, {100 * above:.0f}% above identity)")
    identity_line(ax, a, b)
    ax.set_xlabel(f"{label_a} {quantity}")
    ax.set_ylabel(f"{label_b} {quantity}")
    ax.set_title(f"Per-unit {quantity}")
    ax.legend(loc="upper left", fontsize="small")
    return fig
