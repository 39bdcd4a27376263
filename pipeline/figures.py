"""Figures of every pipeline stage, from plain arrays and pandas DataFrames (no database).

Each function returns a :class:`matplotlib.figure.Figure` with labelled axes (units in brackets
where a quantity has units); nothing is shown or saved here.  The Agg backend is selected on import
so that figures render on machines without a display (servers, workers, tests).

Correlations, FEVE and accuracies are unitless fractions; perturbation sizes are in the classifier's
pixel scale ([0, 1] images); orientations in degrees.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

PROGRESS_STATES = ("done", "pending", "error")
PROGRESS_COLORS = {"done": "tab:green", "pending": "tab:gray", "error": "tab:red"}


def _array(name: str, values, ndim: int = 1) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got shape {array.shape}")
    return array


def _require_columns(name: str, frame: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name}: the table lacks column(s) {missing}; it has {list(frame.columns)}")


def _panels(name: str, frame: pd.DataFrame, columns: Sequence[str], by: str) -> tuple[Figure, list]:
    """A figure with one panel per value of ``by`` (sorted): ``(fig, [(ax, value, rows of frame), ...])``;
    refuses a frame that lacks ``columns`` or has no rows."""
    _require_columns(name, frame, columns)
    if frame.empty:
        raise ValueError(f"{name}: no rows")
    values = sorted(frame[by].unique())
    fig, axes = plt.subplots(1, len(values), figsize=(4.8 * len(values), 4), layout="constrained", squeeze=False)
    return fig, [(ax, value, frame[frame[by] == value]) for ax, value in zip(axes[0], values)]


def _identity_line(ax, x: np.ndarray, y: np.ndarray) -> None:
    finite = np.concatenate([x[np.isfinite(x)], y[np.isfinite(y)]])
    lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
    pad = 0.05 * (hi - lo or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="k", lw=0.8, ls="--", label="identity")
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_aspect("equal")


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 3 or np.std(x[keep]) == 0 or np.std(y[keep]) == 0:
        return float("nan")
    return float(np.corrcoef(x[keep], y[keep])[0, 1])


# --------------------------------------------------------------------------------------------------
# Predictive models
# --------------------------------------------------------------------------------------------------


def oracle_vs_correlation(oracle: np.ndarray, correlation: np.ndarray, groups: Sequence[str] | None = None) -> Figure:
    """Per-unit model test correlation against the unit's oracle correlation (its ceiling).

    oracle, correlation : (n,) per unit (one point per unit and model).
    groups : optional (n,) label per point (e.g. core kind), one colour each.
    Points under the identity line are below the noise ceiling.
    """
    oracle = _array("oracle", oracle)
    correlation = _array("correlation", correlation)
    if oracle.shape != correlation.shape:
        raise ValueError(f"oracle_vs_correlation: shapes differ: {oracle.shape} vs {correlation.shape}")
    labels = np.full(len(oracle), "units", dtype=object) if groups is None else np.asarray(groups, dtype=object)
    if labels.shape != oracle.shape:
        raise ValueError(f"oracle_vs_correlation: groups has shape {labels.shape}, expected {oracle.shape}")
    fig, ax = plt.subplots(figsize=(5, 5), layout="constrained")
    for label in dict.fromkeys(labels):
        members = labels == label
        ax.scatter(
            oracle[members],
            correlation[members],
            s=10,
            alpha=0.6,
            label=f"{label} (mean {np.nanmean(correlation[members]):.2f})",
        )
    _identity_line(ax, oracle, correlation)
    ax.set_xlabel("oracle correlation (leave-one-out, repeats)")
    ax.set_ylabel("model test correlation")
    ax.set_title("Per-unit performance vs noise ceiling")
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
    arrays = {label: _array(f"{title}[{label!r}]", v) for label, v in values.items()}
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
    a = _array(label_a, a)
    b = _array(label_b, b)
    if a.shape != b.shape:
        raise ValueError(f"unit_comparison: {label_a} has shape {a.shape}, {label_b} has {b.shape}")
    fig, ax = plt.subplots(figsize=(5, 5), layout="constrained")
    above = np.mean(b > a) if len(a) else float("nan")
    ax.scatter(a, b, s=10, alpha=0.6, label=f"units (n={len(a)}, {100 * above:.0f}% above identity)")
    _identity_line(ax, a, b)
    ax.set_xlabel(f"{label_a} {quantity}")
    ax.set_ylabel(f"{label_b} {quantity}")
    ax.set_title(f"Per-unit {quantity}")
    ax.legend(loc="upper left", fontsize="small")
    return fig


# --------------------------------------------------------------------------------------------------
# Cell types
# --------------------------------------------------------------------------------------------------


def cell_type_gallery(filters: np.ndarray, counts: np.ndarray, orientation_deg: np.ndarray | None = None) -> Figure:
    """The used functional types: each type's first-layer filter, with units per type.

    filters : (n_types, k, k) one image per type (e.g. the rotation core's layer-1 filter of the
        type's feature, turned to the type's typical preferred orientation).
    counts : (n_types,) units of each type; types with no unit are left out of the gallery row but
        kept in the bar chart.
    orientation_deg : optional (n_types,) orientation at which each filter is shown, degrees.
    """
    filters = _array("filters", filters, ndim=3)
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
        half-ensemble ARI), and ``chosen``.  Rows stored before the residual criterion (with
        ``lifetime`` only) are drawn with what they hold.
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


# --------------------------------------------------------------------------------------------------
# Neural similarity
# --------------------------------------------------------------------------------------------------


def similarity_matrix(matrix: np.ndarray, title: str = "Representational similarity") -> Figure:
    """A (n, n) similarity matrix (cosines in [-1, 1]) as an image; rows and columns are images."""
    matrix = _array("matrix", matrix, ndim=2)
    if matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"similarity_matrix: expected a square matrix, got {matrix.shape}")
    fig, ax = plt.subplots(figsize=(5.5, 4.5), layout="constrained")
    image = ax.imshow(matrix, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    ax.set_xlabel("stimulus image")
    ax.set_ylabel("stimulus image")
    ax.set_title(f"{title} ({matrix.shape[0]} images)")
    fig.colorbar(image, ax=ax, label="similarity (cosine)")
    return fig


def similarity_scatter(x: np.ndarray, y: np.ndarray, xlabel: str, ylabel: str, hexbin_above: int = 2000) -> Figure:
    """Pairwise similarities of two sources over the same image pairs (e.g. S_model vs S_neural).

    x, y : (n_pairs,) cosines.  More than ``hexbin_above`` pairs are drawn as a hexbin density.
    The Pearson correlation is printed in the title.
    """
    x = _array(xlabel, x)
    y = _array(ylabel, y)
    if x.shape != y.shape:
        raise ValueError(f"similarity_scatter: shapes differ: {x.shape} vs {y.shape}")
    fig, ax = plt.subplots(figsize=(5, 5), layout="constrained")
    if len(x) > hexbin_above:
        image = ax.hexbin(x, y, gridsize=50, bins="log", cmap="viridis", mincnt=1)
        fig.colorbar(image, ax=ax, label="image pairs")
    else:
        ax.scatter(x, y, s=6, alpha=0.5)
    ax.set_xlabel(f"{xlabel} (cosine)")
    ax.set_ylabel(f"{ylabel} (cosine)")
    ax.set_title(f"r = {_pearson(x, y):.2f} over {len(x)} image pairs")
    return fig


# --------------------------------------------------------------------------------------------------
# Classifiers and robustness
# --------------------------------------------------------------------------------------------------


def _mean_sem(values: pd.Series) -> tuple[float, float]:
    values = values.to_numpy(dtype=np.float64)
    sem = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else 0.0
    return float(values.mean()), float(sem)


def noise_curves(levels: pd.DataFrame, group: str = "control") -> Figure:
    """Accuracy against noise strength, one panel per noise type and one curve per ``group``.

    levels : long form, one row per classifier and level, with columns ``noise_type``, ``strength``
        (noise scale on [0, 1] images), ``accuracy`` (fraction correct), ``seed`` and ``group``
        (default ``control``: the regularization target).  Curves are the mean over seeds with a
        band of +- one standard error of the mean.
    """
    _require_columns("noise_curves", levels, ["noise_type", "strength", "accuracy", "seed", group])
    if levels.empty:
        raise ValueError("noise_curves: no rows")
    kinds = sorted(levels["noise_type"].unique())
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.5 * len(kinds), 4), layout="constrained", squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        rows = levels[levels["noise_type"] == kind]
        for label, curve in rows.groupby(group, sort=True):
            stats = curve.groupby("strength")["accuracy"].apply(_mean_sem)
            strength = stats.index.to_numpy(dtype=np.float64)
            mean = np.array([m for m, _ in stats])
            sem = np.array([s for _, s in stats])
            n_seeds = curve["seed"].nunique()
            (line,) = ax.plot(strength, mean, marker="o", ms=3, label=f"{label} ({n_seeds} seed{'s' * (n_seeds > 1)})")
            ax.fill_between(strength, mean - sem, mean + sem, color=line.get_color(), alpha=0.25)
        ax.set_xlabel(f"{kind} noise strength (pixel scale, images in [0, 1])")
        ax.set_ylabel("accuracy (fraction correct)")
        ax.set_ylim(0, 1)
        ax.set_title(f"{kind} noise")
        ax.legend(fontsize="small", title=group)
    fig.suptitle("Robustness to noise (mean ± SEM over seeds)", fontsize="medium")
    return fig


def noise_curves_ci(levels: pd.DataFrame, labels: Mapping[str, str] | None = None) -> Figure:
    """Accuracy against noise strength with 95 % bootstrap CIs over seeds, one panel per noise type.

    levels : long form with columns ``control``, ``seed``, ``noise_type``, ``strength`` (pixel scale
        of [0, 1] images) and ``accuracy`` (fraction correct).  ``labels`` renames controls.
    """
    from pipeline.paired import bootstrap_mean

    fig, panels = _panels(
        "noise_curves_ci", levels, ["control", "seed", "noise_type", "strength", "accuracy"], "noise_type"
    )
    for ax, kind, panel in panels:
        for control, rows in panel.groupby("control", sort=True):
            strengths = np.sort(rows["strength"].unique())
            cis = [bootstrap_mean(rows[rows["strength"] == s]["accuracy"].to_numpy()) for s in strengths]
            n_seeds = rows["seed"].nunique()
            (line,) = ax.plot(
                strengths,
                [c.estimate for c in cis],
                marker="o",
                ms=3,
                label=f"{(labels or {}).get(control, control)} ({n_seeds} seeds)",
            )
            ax.fill_between(strengths, [c.low for c in cis], [c.high for c in cis], color=line.get_color(), alpha=0.2)
        ax.set_xlabel(f"{kind} noise strength (pixel scale, images in [0, 1])")
        ax.set_ylabel("accuracy (fraction correct)")
        ax.set_ylim(0, 1)
        ax.set_title(f"{kind} noise")
        ax.legend(fontsize="small")
    fig.suptitle("Accuracy under noise: mean and 95 % bootstrap CI over seeds", fontsize="medium")
    return fig


def attack_convergence(
    curves: pd.DataFrame, labels: Mapping[str, str] | None = None, attacks: Mapping[str, str] | None = None
) -> Figure:
    """Median minimal perturbation over the common images against attack steps, one panel per norm.

    curves : long form with columns ``control``, ``seed``, ``norm`` (l2, linf), ``steps`` and
        ``median_distance`` (pixel scale of [0, 1] images).  Thin lines are seeds, thick the mean.
    attacks : optional {norm: attack name} for the step axis, e.g. {"l2": "Carlini-Wagner"}.
    """
    fig, panels = _panels("attack_convergence", curves, ["control", "seed", "norm", "steps", "median_distance"], "norm")
    for ax, norm, panel in panels:
        for control, rows in panel.groupby("control", sort=True):
            color = None
            for _, seed in rows.groupby("seed"):
                seed = seed.sort_values("steps")
                (line,) = ax.plot(seed["steps"], seed["median_distance"], lw=0.6, alpha=0.5, color=color)
                color = line.get_color()
            mean = rows.groupby("steps")["median_distance"].mean()
            ax.plot(
                mean.index,
                mean.to_numpy(),
                lw=2,
                marker="o",
                ms=3,
                color=color,
                label=(labels or {}).get(control, control),
            )
        name = {"l2": "L2", "linf": "L∞"}.get(norm, norm)
        ax.set_xscale("log")
        ax.set_xticks(sorted(panel["steps"].unique()), [str(int(v)) for v in sorted(panel["steps"].unique())])
        ax.minorticks_off()
        attack = (attacks or {}).get(norm)
        ax.set_xlabel(f"attack steps ({attack})" if attack else "attack steps")
        ax.set_ylabel(f"median minimal perturbation, {name} (pixel scale [0, 1])")
        ax.set_title(f"{name} attack convergence on the common images")
        ax.legend(fontsize="small")
    return fig


def perturbation_distributions(images: pd.DataFrame, norm: str = "l2", group: str = "control") -> Figure:
    """Distribution of per-image minimal adversarial perturbations, one box per ``group``.

    images : one row per attacked image, columns ``group`` (default ``control``) and ``norm``
        (``l2`` or ``linf``: size of the smallest perturbation found, pixel scale of [0, 1] images).
    Larger perturbations mean a more robust classifier; the median is printed per box.
    """
    _require_columns("perturbation_distributions", images, [group, norm])
    if images.empty:
        raise ValueError("perturbation_distributions: no rows")
    labels, samples = [], []
    for label, rows in images.groupby(group, sort=True):
        values = rows[norm].to_numpy(dtype=np.float64)
        values = values[np.isfinite(values)]
        if values.size:
            labels.append(str(label))
            samples.append(values)
    if not samples:
        raise ValueError(f"perturbation_distributions: no finite {norm} values")
    fig, ax = plt.subplots(figsize=(1.5 + 1.3 * len(labels), 4), layout="constrained")
    ax.boxplot(samples, tick_labels=labels, showfliers=True)
    for position, values in enumerate(samples, start=1):
        ax.text(position, np.median(values), f" {np.median(values):.3g}", va="bottom", fontsize="small")
    name = {"l2": "L2", "linf": "L∞"}.get(norm, norm)
    ax.set_xlabel(group)
    ax.set_ylabel(f"minimal perturbation, {name} norm (pixel scale [0, 1])")
    ax.set_title(f"Adversarial robustness ({name}), per image")
    return fig


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


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
    _require_columns("training_curves", curves, ["run", x, *metrics])
    if curves.empty:
        raise ValueError("training_curves: no rows")
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


# --------------------------------------------------------------------------------------------------
# Pipeline progress
# --------------------------------------------------------------------------------------------------


def populate_progress(progress: pd.DataFrame) -> Figure:
    """Stacked horizontal bars of done / pending / error keys per computed table.

    progress : one row per table, columns ``table`` and ``done``, ``pending``, ``error`` (key counts).
    """
    _require_columns("populate_progress", progress, ["table", *PROGRESS_STATES])
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
