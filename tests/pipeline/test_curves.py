"""The training-curve figure: one panel per metric, one line per run, gaps where a value is missing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline import figures


def test_training_curves_draw_one_line_per_run_with_its_points():
    curves = pd.DataFrame(
        [
            dict(run="a", iteration=0, val_correlation=0.1, train_loss=None),
            dict(run="a", iteration=10, val_correlation=0.3, train_loss=1.2),
            dict(run="a", iteration=20, val_correlation=0.4, train_loss=1.0),
            dict(run="b", iteration=20, val_correlation=0.5, train_loss=0.9),  # out of order: sorted by x
            dict(run="b", iteration=0, val_correlation=0.2, train_loss=None),
        ]
    )
    fig = figures.training_curves(
        curves, "iteration", ["val_correlation", "train_loss"], dict(iteration="iteration (steps)")
    )
    correlation, loss = fig.axes
    assert correlation.get_xlabel() == "iteration (steps)" and loss.get_ylabel() == "train_loss"
    lines = {line.get_label(): line for line in correlation.get_lines()}
    assert set(lines) == {"a", "b"}
    np.testing.assert_array_equal(lines["b"].get_xdata(), [0, 20])
    np.testing.assert_array_equal(lines["b"].get_ydata(), [0.2, 0.5])
    first_loss = {line.get_label(): line for line in loss.get_lines()}["a"].get_ydata()
    assert np.isnan(first_loss[0]) and first_loss[1:].tolist() == [1.2, 1.0]


def test_training_curves_refuse_a_table_without_the_columns():
    with pytest.raises(ValueError, match="lacks column"):
        figures.training_curves(pd.DataFrame(dict(run=["a"], epoch=[0])), "epoch", ["validation_accuracy"])
    with pytest.raises(ValueError, match="no rows"):
        figures.training_curves(pd.DataFrame(columns=["run", "epoch", "loss"]), "epoch", ["loss"])


def test_attack_convergence_draws_each_norm_against_its_own_schedule_and_attack():
    rows = [
        dict(control=c, seed=s, norm="l2", steps=n, median_distance=1.0 / n + s)
        for c in ("none", "neural")
        for s in (0, 1)
        for n in (25, 50, 100)
    ]
    rows += [dict(control="none", seed=0, norm="linf", steps=n, median_distance=0.1 / n) for n in (5, 10, 200)]
    fig = figures.attack_convergence(
        pd.DataFrame(rows), labels=dict(none="baseline"), attacks=dict(l2="Carlini-Wagner", linf="FMN")
    )
    l2, linf = fig.axes
    assert l2.get_xlabel() == "attack steps (Carlini-Wagner)" and linf.get_xlabel() == "attack steps (FMN)"
    np.testing.assert_array_equal(linf.get_xticks(), [5, 10, 200])
    means = {line.get_label(): line for line in l2.get_lines() if not line.get_label().startswith("_")}
    assert set(means) == {"baseline", "neural"}
    np.testing.assert_allclose(means["baseline"].get_ydata(), [1 / 25 + 0.5, 1 / 50 + 0.5, 1 / 100 + 0.5])


def test_the_baseline_frontier_keeps_the_points_no_other_beats_in_both_coordinates():
    from pipeline.figures.robustness import pareto_frontier

    x, y = np.array([0.90, 0.92, 0.88, 0.91, 0.92]), np.array([0.6, 0.5, 0.7, 0.55, 0.52])
    front_x, front_y = pareto_frontier(x, y)
    np.testing.assert_array_equal(front_x, [0.88, 0.90, 0.91, 0.92])
    np.testing.assert_array_equal(front_y, [0.7, 0.6, 0.55, 0.52])


def test_the_sweep_figures_draw_every_arm_and_alpha_with_the_baseline_references():
    rows = [
        dict(arm="baseline", alpha=0.0, seed=s, validation_accuracy=0.9 + 0.01 * s, relative_accuracy=0.5)
        for s in (0, 1)
    ]
    rows += [
        dict(arm=arm, alpha=a, seed=s, validation_accuracy=0.9 - a / 100, relative_accuracy=0.5 + a / 100 + s / 100)
        for arm in ("neural", "teacher")
        for a in (1.0, 10.0)
        for s in (0, 1)
    ]
    frame = pd.DataFrame(rows)
    tradeoff = figures.accuracy_tradeoff(frame, baseline="baseline", tolerance=0.02).axes[0]
    means = {line.get_label(): line for line in tradeoff.get_lines()}
    np.testing.assert_allclose(means["teacher"].get_xdata(), [0.89, 0.8])
    np.testing.assert_allclose(means["teacher"].get_ydata(), [0.515, 0.605])
    np.testing.assert_allclose(means["baseline mean - 0.02"].get_xdata(), [0.885, 0.885])
    assert "baseline frontier" in means and tradeoff.get_xlabel() == "clean validation accuracy (fraction correct)"
    dose = figures.dose_response(frame[frame["arm"] != "baseline"], {"baseline": 0.5}).axes[0]
    lines = {line.get_label(): line for line in dose.get_lines()}
    np.testing.assert_allclose(lines["neural"].get_xdata(), [1.0, 10.0])
    np.testing.assert_allclose(lines["baseline"].get_ydata(), [0.5, 0.5])
    assert dose.get_xscale() == "log"


def test_the_task_overview_shows_accuracy_baselines_noise_and_epochs_against_chance():
    noise = pd.DataFrame(
        dict(noise_type=k, strength=x, seed=s, accuracy=0.9 - x - s / 10)
        for k in ("gaussian", "uniform")
        for x in (0, 0.2)
        for s in (0, 1)
    )
    history = pd.DataFrame(dict(seed=0, epoch=e, test_accuracy=0.3 + 0.2 * e) for e in range(3))
    bars, curves, epochs = figures.task_overview({"ResNet": [0.9, 0.94], "histogram": [0.2]}, noise, history, 0.1).axes
    assert [p.get_height() for p in bars.patches] == pytest.approx([0.92, 0.2])
    gaussian = {line.get_label(): line for line in curves.get_lines()}["gaussian"]
    np.testing.assert_allclose(gaussian.get_ydata(), [0.85, 0.65])
    np.testing.assert_allclose({line.get_label(): line for line in epochs.get_lines()}["seed 0"].get_xdata(), [1, 2, 3])
    assert all(
        0.1 in {line.get_ydata()[0] for line in ax.get_lines() if line.get_label() == "chance"}
        for ax in (bars, curves, epochs)
    )
    with pytest.raises(ValueError, match="lacks column"):
        figures.task_overview({}, noise.drop(columns="seed"), history, 0.1)
