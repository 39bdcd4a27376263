"""Failed attacks count as failed, failures and excluded seeds are reported, and a second L_inf
attack cross-checks FMN (models whose minimal perturbations are known exactly)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

from pipeline import paired
from pipeline.classifier import attacks
from pipeline.stats import finite_or

torch.set_num_threads(1)

# (norm, method) of every attack minimal_perturbations runs
METHODS = [("l2", "cw"), ("l2", "fmn"), ("linf", "fmn"), ("linf", "deepfool")]
# How far above the exact minimal distance each attack's median lands on `linear_problem`: measured
# over its seeds 0-5, Carlini-Wagner 1.001-1.041, L_inf FMN 1.000-1.0002, DeepFool 1.021-1.047 (its
# 2 % overshoot, plus 1e-4 on tiny distances).  L2 FMN stalls far above the minimum (1.4-43 times:
# the stall pipeline.classifier.attacks.ATTACKS documents), so only its finiteness is asserted.
NEAR_MINIMAL = {("l2", "cw"): 1.1, ("l2", "fmn"): None, ("linf", "fmn"): 1.1, ("linf", "deepfool"): 1.1}


class BlindButForBlack(nn.Module):
    """Two classes: class 1 for a (near) all-black image, class 0 otherwise; the output has zero
    gradient with respect to the image everywhere, so no gradient attack can move it, yet the
    all-black image Carlini-Wagner returns for a failed image is misclassified (class 1) as class 0's
    adversarial.  ``first_pixel`` > 0 adds a ramp ``first_pixel * relu(x[0, 0, 0] - 0.5)`` to class 1's
    logit: images whose first pixel is above 0.5 are broken by raising it past 0.5 + 10 / first_pixel."""

    def __init__(self, first_pixel: float = 0.0):
        super().__init__()
        self.first_pixel = first_pixel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        black = (x.flatten(1).amax(dim=1) < 1e-3).to(x.dtype)
        ramp = self.first_pixel * torch.relu(x[:, 0, 0, 0] - 0.5)
        keep_graph = 0 * x.flatten(1).sum(dim=1)  # the attacks differentiate the output
        return torch.stack([torch.full_like(black, 10.0) + keep_graph, 20 * black + ramp], dim=1)


def grey_images(first_pixels) -> torch.Tensor:
    """(n, 1, 8, 8) images of grey level 0.5 whose first pixel is ``first_pixels`` (n,)."""
    images = torch.full((len(first_pixels), 1, 8, 8), 0.5)
    images[:, 0, 0, 0] = torch.tensor(first_pixels, dtype=torch.float32)
    return images


def test_a_forced_carlini_wagner_failure_is_recorded_as_a_failure():
    """Carlini-Wagner cannot move the blind model and returns its all-zero fallback, which the model
    misclassifies: that is a failure (+inf), not an adversarial at distance ||x||_2."""
    model = BlindButForBlack()
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.6 + 0.2
    y = torch.zeros(6, dtype=torch.int64)
    assert (model(torch.zeros_like(x)).argmax(1) != y).all()  # the fallback is "adversarial"
    distances = attacks.minimal_perturbations(model, x, y, "l2", (3, 10), method="cw")
    assert np.isposinf(distances).all()
    np.testing.assert_array_equal(attacks.failure_count(distances), [6, 6])
    assert finite_or(attacks.median_curve(distances)[-1], None) is None  # stored median: null


def test_a_median_over_no_images_is_null_without_a_warning():
    """A comparison without common images attacks none: each norm's curve is NaN (stored as null) and
    flat at the schedule's end, and numpy's "Mean of empty slice" warning, which the quick demo printed
    once per norm and classifier, is not raised."""
    schedule = (2, 5)
    images, labels = torch.empty(0, 1, 8, 8), torch.empty(0, dtype=torch.int64)
    distances = attacks.minimal_perturbations(BlindButForBlack(), images, labels, "l2", schedule)
    assert distances.shape == (2, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        medians = attacks.median_curve(distances)
        assert attacks.flattening_step(schedule, medians) == 5
    assert medians.shape == (2,) and np.isnan(medians).all()
    assert finite_or(medians[-1], None) is None
    with pytest.raises(ValueError, match="distances"):
        attacks.median_curve(np.zeros(3))


@pytest.mark.parametrize("norm, method", METHODS)
def test_failures_are_counted_and_a_median_over_mostly_failures_is_null(norm, method):
    """Three of five images cannot be broken (zero gradient), two can, by raising their first pixel
    to 0.6: both norms' minimal distance is 0.6 - first pixel.  Exactly three failures are counted, the
    two others are found (near their exact distance, except by the stalling L2 FMN), and the median
    (the experiment's stored summary, null once half or more failed) is null."""
    first = [0.2, 0.3, 0.52, 0.4, 0.55]
    x, y = grey_images(first), torch.zeros(5, dtype=torch.int64)
    distances = attacks.minimal_perturbations(BlindButForBlack(first_pixel=100.0), x, y, norm, (10, 50), method=method)
    assert attacks.failure_count(distances)[-1] == 3
    assert np.isposinf(distances[-1, [0, 1, 3]]).all()
    exact = np.array([0.6 - 0.52, 0.6 - 0.55])
    found = distances[-1, [2, 4]]
    assert (found >= exact - 1e-6).all() and (found <= 0.5).all(), found  # at most the pixel's way to 1
    if NEAR_MINIMAL[norm, method]:  # measured: at most 1.022 times the exact distance
        assert (found <= 1.05 * exact).all(), found
    assert finite_or(attacks.median_curve(distances)[-1], None) is None
    # with one failure among the three images the median stays a number
    assert np.isfinite(attacks.median_curve(distances[:, [0, 2, 4]])[-1])


def linear_problem(n: int = 12, seed: int = 0):
    """A random linear classifier of (n, 1, 8, 8) images in [0.35, 0.65], the labels it predicts, and
    each image's exact minimal L2 and L_inf distance to another class (box constraints inactive)."""
    generator = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(3, 64, generator=generator))
        model[1].bias.zero_()
    x = 0.35 + 0.3 * torch.rand(n, 1, 8, 8, generator=generator)
    with torch.no_grad():
        logits = model(x).double()
    y = logits.argmax(1)
    w = model[1].weight.detach().double()
    margin = logits[torch.arange(n), y][:, None] - logits  # (n, 3), 0 at the true class
    gap = w[y][:, None, :] - w[None, :, :]  # (n, 3, 64)
    with np.errstate(divide="ignore"):
        l2 = (margin / gap.norm(dim=2)).numpy()
        linf = (margin / gap.abs().sum(dim=2)).numpy()
    l2[np.arange(n), y.numpy()] = np.inf
    linf[np.arange(n), y.numpy()] = np.inf
    exact = dict(l2=l2.min(1), linf=linf.min(1))
    assert exact["linf"].max() < 0.35  # every L_inf minimum stays inside [0, 1]: the box is inactive
    return model, x, y, exact


@pytest.mark.parametrize("norm, method", METHODS)
def test_a_genuine_attack_still_finds_finite_near_minimal_distances(norm, method):
    """On a linear classifier, whose minimal distances are known in closed form, every attack finds an
    adversarial on every image, never below the exact minimum and (but for L2 FMN) with a median
    within 10 % of it."""
    model, x, y, exact = linear_problem()
    distances = attacks.minimal_perturbations(model, x, y, norm, (20, 100), method=method)[-1]
    assert attacks.failure_count(distances) == 0
    ratio = distances / exact[norm]
    assert (ratio >= 1 - 1e-3).all(), ratio
    if NEAR_MINIMAL[norm, method]:
        assert np.median(ratio) <= NEAR_MINIMAL[norm, method], ratio


def test_the_linf_cross_check_agrees_with_fmn_on_a_linear_model():
    """DeepFool and FMN find the same L_inf distances on a linear model within a factor of 1.05
    (DeepFool overshoots by 2 %), and DeepFool never beats FMN by more than that."""
    model, x, y, exact = linear_problem(n=16, seed=1)
    check = attacks.linf_cross_check(model, x, y, n_images=10, fmn_steps=100)
    assert check.fmn.shape == check.deepfool.shape == (10,)
    overshot = (1 + attacks.DEEPFOOL_OVERSHOOT) * (exact["linf"][:10] + 1e-4)  # DeepFool's step, exactly
    np.testing.assert_allclose(check.deepfool, overshot, rtol=1e-3)  # measured within 1e-4 on seeds 0-5
    assert check.agreement(1.05) == 1.0 and check.fmn_beaten(1.05) == 0.0
    assert check.agreement(1.001) < 1.0  # the factor is not vacuous: the overshoot shows


def test_the_cross_check_ratio_of_failures():
    check = attacks.CrossCheck(fmn=np.array([1.0, np.inf, np.inf, 2.0]), deepfool=np.array([1.5, np.inf, 1.0, np.inf]))
    np.testing.assert_array_equal(check.ratio, [1.5, 1.0, 0.0, np.inf])
    assert check.agreement(2.0) == 0.5 and check.fmn_beaten(2.0) == 0.25


def test_non_finite_seeds_are_counted_never_dropped_silently():
    values = np.array([0.5, np.inf, 0.7, np.nan, 0.6])
    ci = paired.bootstrap_mean_of_finite(values)
    assert ci is not None and ci.n == 3 and ci.excluded == 2 and ci.estimate == pytest.approx(0.6)
    assert "(2 of 5 seeds excluded)" in str(ci)
    assert paired.bootstrap_mean_of_finite([np.inf, np.nan]) is None
    assert paired.bootstrap_mean_of_finite([0.1, 0.2]).excluded == 0


def _arm(seeds, distances):
    """An arm of :func:`populate.api.comparison.collect` with attack distances only."""
    n = len(seeds)
    return dict(
        seeds=seeds,
        clean=[0.9] * n,
        steps=[10] * n,
        fidelity=[0.5] * n,
        noise={},
        invariance=dict(noise_std=[], correlation=[[] for _ in seeds]),
        distances=dict(l2=dict(images=[0, 1, 2], distance=distances)),
    )


def test_the_comparison_reports_failed_attacks_and_excluded_seeds(capsys):
    """Seed 1 of the neural arm failed on two of three images, so its median is +inf: the arm's mean
    median is over the other seeds, says so, and every arm's median shows its failed attacks."""
    from populate.api import comparison

    neural = _arm([0, 1, 2], [[1.0, 2.0, 3.0], [np.inf, 1.0, np.inf], [2.0, 2.0, np.inf]])
    baseline = _arm([0, 1, 2], [[0.5, 1.0, 1.5], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    summary = comparison.analyse(dict(arms=dict(neural=neural, none=baseline), targets={}))
    median = summary["arms"]["neural"]["median"]["l2"]
    assert median["n"] == 2 and median["excluded"] == 1 and median["mean"] == pytest.approx(2.0)
    assert summary["arms"]["neural"]["failed"]["l2"] == dict(failed=3, attacked=9, per_seed=[0, 2, 1])
    assert summary["arms"]["none"]["failed"]["l2"]["failed"] == 0
    difference = summary["differences"]["neural - none"]["median"]["l2"]
    assert difference["n"] == 2 and difference["excluded"] == 1  # seed 1's per-image median is +inf
    comparison.report(summary)
    out = capsys.readouterr().out
    assert "(1 of 3 seeds excluded: no finite value) (failed 3 of 9)" in out
    assert "(failed 0 of 9)" in out

    from benchmarks.robustness_tables import arms_tables, difference_tables  # docs/results.md's tables

    assert "(1 of 3 seeds excluded: no finite value) (failed 3 of 9)" in "\n".join(arms_tables(summary))
    assert "(1 of 3 seeds excluded: no finite value)" in "\n".join(difference_tables(summary))
