"""Figures of classifier robustness: accuracy under noise, adversarial perturbation sizes."""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pipeline.figures.common import panel_grid, require_rows


def _mean_sem(values: pd.Series) -> tuple[float, float]:
    """Mean and standard error of the mean (0 for a single value)."""
    values = values.to_numpy(dtype=np.float64)
    sem = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else 0.0
    return float(values.mean()), float(sem)


def label_noise_panel(ax, kind: str) -> None:
    """Axes of one noise type's panel: accuracy in [0, 1] against the noise strength."""
    ax.set_xlabel(f"{kind} noise strength (pixel scale, images in [0, 1])")
    ax.set_ylabel("accuracy (fraction correct)")
    ax.set_ylim(0, 1)
    ax.set_title(f"{kind} noise")


def noise_curves(levels: pd.DataFrame, group: str = "control") -> Figure:
    """Accuracy against noise strength, one panel per noise type and one curve per ``group``.

    levels : long form, one row per classifier and level, with columns ``noise_type``, ``strength``
        (noise scale on [0, 1] images), ``accuracy`` (fraction correct), ``seed`` and ``group``
        (default ``control``: the regularization target).  Curves are the mean over seeds with a
        band of +- one standard error of the mean.
    """
    require_rows("noise_curves", levels, ["noise_type", "strength", "accuracy", "seed", group])
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
        label_noise_panel(ax, kind)
        ax.legend(fontsize="small", title=group)
    fig.suptitle("Robustness to noise (mean ± SEM over seeds)", fontsize="medium")
    return fig


def noise_curves_ci(levels: pd.DataFrame, labels: Mapping[str, str] | None = None) -> Figure:
    """Accuracy against noise strength with 95 % bootstrap CIs over seeds, one panel per noise type.

    levels : long form with columns ``control``, ``seed``, ``noise_type``, ``strength`` (pixel scale
        of [0, 1] images) and ``accuracy`` (fraction correct).  ``labels`` renames controls.
    """
    from pipeline.paired import bootstrap_mean

    fig, panels = panel_grid(
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
        label_noise_panel(ax, kind)
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
    fig, panels = panel_grid(
        "attack_convergence", curves, ["control", "seed", "norm", "steps", "median_distance"], "norm"
    )
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
    require_rows("perturbation_distributions", images, [group, norm])
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


def task_overview(
    clean: Mapping[str, Sequence[float]], noise: pd.DataFrame, history: pd.DataFrame, chance: float
) -> Figure:
    """Whether a classification task is worth using, in three panels: clean test accuracy of the network
    and of shallow baselines, the network's accuracy under each noise type, and its test accuracy after
    every training epoch; chance is a dashed line in each.

    clean : {label: test accuracies (fraction correct), one per seed or a single value}; bars are means,
        points the values.
    noise : long form with columns ``noise_type``, ``strength`` (pixel scale of [0, 1] images), ``seed``
        and ``accuracy``; one line per noise type (mean over seeds).
    history : long form with columns ``seed``, ``epoch`` (from 0) and ``test_accuracy``; one line per seed.
    """
    require_rows("task_overview", noise, ["noise_type", "strength", "seed", "accuracy"])
    require_rows("task_overview", history, ["seed", "epoch", "test_accuracy"])
    fig, (bars, curves, epochs) = plt.subplots(1, 3, figsize=(14, 4), layout="constrained")
    for k, seeds in enumerate(clean.values()):
        values = np.atleast_1d(np.asarray(seeds, dtype=np.float64))
        bars.bar(k, values.mean(), color=f"C{k}", alpha=0.6)
        bars.plot(np.full(len(values), k), values, "k.", ms=4)
        bars.text(k, values.mean(), f"{values.mean():.3f}", ha="center", va="bottom", fontsize="small")
    bars.set_xticks(range(len(clean)), list(clean), rotation=15, fontsize="small")
    bars.set_ylabel("clean test accuracy (fraction correct)")
    bars.set_title("Clean accuracy: network and shallow baselines")
    for kind, rows in noise.groupby("noise_type", sort=True):
        mean = rows.groupby("strength")["accuracy"].mean()
        curves.plot(mean.index, mean.to_numpy(), marker="o", ms=3, label=str(kind))
    curves.set_xlabel("noise strength (pixel scale, images in [0, 1])")
    curves.set_ylabel("test accuracy (fraction correct)")
    curves.set_title("Network under noise (mean over seeds)")
    for seed, rows in history.groupby("seed", sort=True):
        rows = rows.sort_values("epoch")
        epochs.plot(rows["epoch"] + 1, rows["test_accuracy"], marker="o", ms=2.5, label=f"seed {seed}")
    epochs.set_xlabel("epoch")
    epochs.set_ylabel("test accuracy (fraction correct)")
    epochs.set_title("Network test accuracy after each epoch")
    for ax in (bars, curves, epochs):
        ax.axhline(chance, color="k", ls="--", lw=0.8, label="chance")
        ax.set_ylim(0, 1)
    curves.legend(fontsize="small")
    epochs.legend(fontsize="x-small")
    return fig


def dose_response(sweep: pd.DataFrame, references: Mapping[str, float] | None = None) -> Figure:
    """Relative accuracy under noise against the similarity weight alpha, one line per regularized arm (mean
    over seeds, seeds as points); ``references`` {label: value} are horizontal lines (e.g. the baseline).

    sweep : long form with columns ``arm``, ``alpha`` (> 0, log axis), ``seed`` and ``relative_accuracy``
        (accuracy under noise over clean accuracy, same images).
    """
    require_rows("dose_response", sweep, ["arm", "alpha", "seed", "relative_accuracy"])
    fig, ax = plt.subplots(figsize=(5.5, 4), layout="constrained")
    for arm, rows in sweep.groupby("arm", sort=True):
        mean = rows.groupby("alpha")["relative_accuracy"].mean()
        (line,) = ax.plot(mean.index, mean.to_numpy(), marker="o", label=str(arm))
        ax.plot(rows["alpha"], rows["relative_accuracy"], ".", color=line.get_color(), alpha=0.5)
    for k, (label, value) in enumerate((references or {}).items()):
        ax.axhline(value, color=f"C{k + 5}", ls="--", lw=1, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("similarity weight alpha")
    ax.set_ylabel("relative accuracy under noise (noisy / clean)")
    ax.set_title("Dose-response over alpha")
    ax.legend(fontsize="small")
    return fig


def pareto_frontier(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The points of (x, y) that no other point beats in both coordinates (higher is better), by x."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    order = np.lexsort((-y, -x))  # by x, then y, both descending: of equal x only the highest y can stay
    kept, best = [], -np.inf
    for i in order:
        if y[i] > best:
            kept.append(i)
            best = y[i]
    index = np.array(kept[::-1], dtype=int)
    return x[index], y[index]


def accuracy_tradeoff(sweep: pd.DataFrame, baseline: str = "none", tolerance: float | None = None) -> Figure:
    """Robustness against clean validation accuracy: every (arm, alpha, seed) as a point, each arm's mean per
    alpha labelled with alpha, the baseline's seeds with their frontier (the points no other baseline seed
    beats in both), and, with ``tolerance``, the clean-accuracy floor of the alpha rule (baseline mean -
    tolerance).  A point above and right of the frontier is more robust at no cost in clean accuracy.

    sweep : long form with columns ``arm``, ``alpha``, ``seed``, ``validation_accuracy`` and
        ``relative_accuracy``; the ``baseline`` arm's rows are the unregularized classifiers.
    """
    require_rows("accuracy_tradeoff", sweep, ["arm", "alpha", "seed", "validation_accuracy", "relative_accuracy"])
    fig, ax = plt.subplots(figsize=(6, 4.5), layout="constrained")
    base = sweep[sweep["arm"] == baseline]
    for k, (arm, rows) in enumerate(sweep[sweep["arm"] != baseline].groupby("arm", sort=True)):
        ax.plot(rows["validation_accuracy"], rows["relative_accuracy"], ".", color=f"C{k}", alpha=0.4)
        means = rows.groupby("alpha")[["validation_accuracy", "relative_accuracy"]].mean()
        ax.plot(means["validation_accuracy"], means["relative_accuracy"], "o-", color=f"C{k}", label=str(arm))
        for alpha, point in means.iterrows():
            ax.annotate(f"{alpha:g}", tuple(point), fontsize="x-small", xytext=(3, 3), textcoords="offset points")
    if len(base):
        x, y = base["validation_accuracy"].to_numpy(), base["relative_accuracy"].to_numpy()
        ax.plot(x, y, "ks", ms=5, label=f"{baseline} (seeds)")
        ax.plot(*pareto_frontier(x, y), "k--", lw=1, label=f"{baseline} frontier")
        if tolerance is not None:
            ax.axvline(x.mean() - tolerance, color="grey", ls=":", label=f"{baseline} mean - {tolerance:g}")
    ax.set_xlabel("clean validation accuracy (fraction correct)")
    ax.set_ylabel("relative accuracy under noise (noisy / clean)")
    ax.set_title("Robustness against clean accuracy, every alpha")
    ax.legend(fontsize="small")
    return fig
