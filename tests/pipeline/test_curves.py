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
