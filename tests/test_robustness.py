"""Noise, PGD and Boundary-attack evaluation on tiny models (a hand-built perfect classifier and a
small CNN trained for a few hundred steps on the embedded photograph set)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.data.photo_classes import photo_classification_set
from pipeline.robustness import (
    NOISE_KINDS,
    NOISE_LEVELS,
    add_noise,
    boundary_starting_points,
    minimal_perturbations,
    noise_accuracy,
    noise_seed,
    pgd_accuracy,
    pgd_attack,
    predict,
)

pytestmark = pytest.mark.kernels  # rerun by `make test` under a lower CPU instruction set

torch.set_num_threads(1)


def as_tensors(images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(images).float().div(255)[:, None], torch.from_numpy(labels)


@pytest.fixture(scope="module")
def photo_data():
    data = photo_classification_set(60, 20, seed=0)
    return as_tensors(data.train_images, data.train_labels), as_tensors(data.test_images, data.test_labels)


@pytest.fixture(scope="module")
def trained_cnn(photo_data):
    """A small CNN fitted to the photograph crops (evaluated on its train crops, where it is accurate)."""
    (x, y), _ = photo_data
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 5, 2, 2),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, 2, 1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 8 * 8, 10),
    )
    optimizer = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(300):
        i = torch.randint(0, len(x), (64,))
        loss = F.cross_entropy(model(x[i]), y[i])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return model


class MeanIntensityClassifier(nn.Module):
    """Perfect on images whose mean grey level is (k + 0.5) / n_classes for class k."""

    def __init__(self, n_classes: int = 10):
        super().__init__()
        self.register_buffer("centres", (torch.arange(n_classes) + 0.5) / n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -1e3 * (x.mean((1, 2, 3))[:, None] - self.centres) ** 2


def flat_images(labels: torch.Tensor, n_classes: int = 10) -> torch.Tensor:
    return ((labels.double() + 0.5) / n_classes).float().view(-1, 1, 1, 1).expand(-1, 1, 32, 32).clone()


# --- noise ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", NOISE_KINDS)
def test_noise_stays_in_unit_range_and_leaves_input_alone(kind):
    images = torch.rand(16, 1, 32, 32)
    original = images.clone()
    for strength in (*NOISE_LEVELS[kind], 1.0):
        noisy = add_noise(images, kind, strength, torch.Generator().manual_seed(1))
        assert noisy.shape == images.shape and noisy.dtype == images.dtype
        assert noisy.min() >= 0 and noisy.max() <= 1
    assert torch.equal(images, original)
    assert torch.equal(add_noise(images, kind, 0.0, torch.Generator().manual_seed(1)), images)


def test_noise_levels_have_at_least_ten_increasing_strengths():
    for kind in NOISE_KINDS:
        levels = NOISE_LEVELS[kind]
        assert len(levels) >= 10 and levels[0] == 0 and all(a < b for a, b in zip(levels, levels[1:]))


def test_gaussian_and_uniform_noise_statistics_at_mid_grey():
    grey = torch.full((64, 1, 32, 32), 0.5, dtype=torch.float64)
    gaussian = add_noise(grey, "gaussian", 0.05, torch.Generator().manual_seed(0)) - 0.5  # 10 sd from clipping
    assert gaussian.std().item() == pytest.approx(0.05, rel=0.02)
    assert abs(gaussian.mean().item()) < 0.05 * 4 / math.sqrt(gaussian.numel())
    uniform = add_noise(grey, "uniform", 0.2, torch.Generator().manual_seed(0)) - 0.5
    assert uniform.abs().max() <= 0.2 + 1e-6 and uniform.abs().max() > 0.199
    assert uniform.std().item() == pytest.approx(0.2 / math.sqrt(3), rel=0.02)


def test_salt_and_pepper_fraction_balance_and_nesting():
    grey = torch.full((64, 1, 32, 32), 0.5)
    n = grey.numel()
    previous = torch.zeros_like(grey, dtype=torch.bool)
    for strength in (0.05, 0.2, 0.5):
        noisy = add_noise(grey, "salt_pepper", strength, torch.Generator().manual_seed(3))
        hit = noisy != 0.5
        assert set(noisy[hit].unique().tolist()) <= {0.0, 1.0}
        assert hit.double().mean().item() == pytest.approx(strength, abs=4 * math.sqrt(strength * (1 - strength) / n))
        assert (noisy[hit] == 1).double().mean().item() == pytest.approx(0.5, abs=0.05)
        # the same generator seed gives nested corrupted sets as the strength grows
        assert not (previous & ~hit).any()
        previous = hit


@pytest.mark.parametrize("kind", NOISE_KINDS)
def test_noise_is_deterministic_per_seed(kind):
    images = torch.rand(4, 1, 32, 32)
    a = add_noise(images, kind, 0.1, torch.Generator().manual_seed(5))
    b = add_noise(images, kind, 0.1, torch.Generator().manual_seed(5))
    c = add_noise(images, kind, 0.1, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_bad_noise_arguments_raise():
    images = torch.rand(2, 1, 32, 32)
    with pytest.raises(ValueError, match="kind"):
        add_noise(images, "poisson", 0.1)
    with pytest.raises(ValueError, match="strength"):
        add_noise(images, "gaussian", -0.1)
    with pytest.raises(ValueError, match="strength"):
        add_noise(images, "salt_pepper", 1.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        noise_accuracy(MeanIntensityClassifier(), images * 2, torch.zeros(2, dtype=torch.int64))


def test_perfect_model_is_perfect_on_clean_images():
    labels = torch.arange(40) % 10
    rows = noise_accuracy(MeanIntensityClassifier(), flat_images(labels), labels, ["gaussian"], [0.0, 0.05])
    assert [r["accuracy"] for r in rows] == [1.0, 1.0]  # the mean of 1024 noisy pixels barely moves


def test_noise_accuracy_lowers_a_trained_models_accuracy(trained_cnn, photo_data):
    (x, y), _ = photo_data
    rows = noise_accuracy(trained_cnn, x, y, seed=0)
    assert [(r["kind"], r["strength"]) for r in rows] == [(k, s) for k in NOISE_KINDS for s in NOISE_LEVELS[k]]
    clean = (predict(trained_cnn, x) == y).double().mean().item()
    assert clean > 0.5
    for kind in NOISE_KINDS:
        accuracy = [r["accuracy"] for r in rows if r["kind"] == kind]
        assert accuracy[0] == pytest.approx(clean)
        assert accuracy[-1] < clean - 0.1, kind


def test_noise_accuracy_matches_an_independent_computation_and_ignores_batching(trained_cnn, photo_data):
    (x, y), _ = photo_data
    generator = torch.Generator().manual_seed(noise_seed(7, "uniform"))
    noisy = add_noise(x, "uniform", 0.3, generator)
    expected = (trained_cnn(noisy).argmax(1) == y).double().mean().item()
    alone = noise_accuracy(trained_cnn, x, y, ["uniform"], [0.3], seed=7, batch_size=7)
    among = noise_accuracy(trained_cnn, x, y, ["uniform"], {"uniform": [0.1, 0.3]}, seed=7, batch_size=512)
    assert alone[0]["accuracy"] == pytest.approx(expected)
    assert among[1]["accuracy"] == pytest.approx(expected)


def test_evaluation_restores_training_mode(trained_cnn, photo_data):
    (x, y), _ = photo_data
    trained_cnn.train()
    try:
        noise_accuracy(trained_cnn, x[:8], y[:8], ["gaussian"], [0.1])
        pgd_accuracy(trained_cnn, x[:8], y[:8], "linf", 0.01, steps=2)
        assert trained_cnn.training
    finally:
        trained_cnn.eval()


# --- PGD ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm,eps", [("linf", 4 / 255), ("l2", 0.5)])
def test_pgd_stays_in_the_ball_and_fools_the_model(trained_cnn, photo_data, norm, eps):
    (x, y), _ = photo_data
    adversarials, robust = pgd_attack(trained_cnn, x, y, norm, eps, steps=10, seed=0)
    delta = (adversarials - x).flatten(1).double()
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert (size <= eps * (1 + 1e-5)).all()
    assert adversarials.min() >= 0 and adversarials.max() <= 1
    with torch.no_grad():
        predictions = trained_cnn(adversarials).argmax(1)
    assert (predictions[~robust] != y[~robust]).all()  # every non-robust image comes with its adversarial
    clean = (predict(trained_cnn, x) == y).double().mean().item()
    accuracy = robust.double().mean().item()
    assert accuracy == pytest.approx(pgd_accuracy(trained_cnn, x, y, norm, eps, steps=10, seed=0))
    assert accuracy < clean - 0.1


def test_pgd_beats_random_perturbations_of_the_same_size(trained_cnn, photo_data):
    (x, y), _ = photo_data
    eps = 3 / 255
    signs = torch.randint(0, 2, x.shape, generator=torch.Generator().manual_seed(0)).float() * 2 - 1
    random_accuracy = (predict(trained_cnn, (x + eps * signs).clamp(0, 1)) == y).double().mean().item()
    attacked = pgd_accuracy(trained_cnn, x, y, "linf", eps, steps=10, random_start=False)
    assert attacked < random_accuracy - 0.1


def test_pgd_with_zero_budget_is_clean_accuracy(trained_cnn, photo_data):
    (x, y), _ = photo_data
    clean = (predict(trained_cnn, x) == y).double().mean().item()
    assert pgd_accuracy(trained_cnn, x, y, "linf", 0.0, steps=5) == pytest.approx(clean)
    with pytest.raises(ValueError, match="norm"):
        pgd_accuracy(trained_cnn, x, y, "l1", 0.1)


# --- Boundary attack ------------------------------------------------------------------------------


def test_starting_points_are_nearest_images_of_another_predicted_class():
    images = torch.rand(12, 1, 4, 4)
    labels = torch.arange(12) % 3
    predictions = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    starts = boundary_starting_points(images, labels, predictions, chunk=5)
    for i in range(12):
        others = [j for j in range(12) if predictions[j] != labels[i]]
        expected = min(others, key=lambda j: (images[i] - images[j]).double().norm().item())
        assert starts[i] == expected
    assert (boundary_starting_points(images, labels, torch.full((12,), 0))[labels == 0] == -1).all()


def test_boundary_attack_finds_closer_adversarials(trained_cnn, photo_data):
    pytest.importorskip("foolbox")
    _, (x, y) = photo_data
    x, y = x[::5], y[::5]  # 40 images, two per class
    state = torch.random.get_rng_state()
    result = minimal_perturbations(trained_cnn, x, y, steps=300, seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)  # caller's RNG untouched
    correct = result["correct"]
    assert np.array_equal(correct, (predict(trained_cnn, x) == y).numpy())
    assert 0 < correct.sum() < len(x)
    assert np.isnan(result["l2"][~correct]).all() and not result["success"][~correct].any()
    success = result["success"]
    assert success[correct].all()
    adversarials = torch.from_numpy(result["adversarials"][success])
    with torch.no_grad():
        assert (trained_cnn(adversarials).argmax(1) != y[success]).all()
    delta = (adversarials - x[success]).flatten(1).double()
    np.testing.assert_allclose(result["l2"][success], delta.norm(dim=1).numpy(), rtol=1e-5)
    np.testing.assert_allclose(result["linf"][success], delta.abs().amax(1).numpy(), rtol=1e-5)
    assert (result["l2"][success] < result["start_l2"][success]).all()
    assert result["median_l2"] == pytest.approx(np.median(result["l2"][correct]))
    assert result["median_linf"] == pytest.approx(np.median(result["linf"][correct]))
    again = minimal_perturbations(trained_cnn, x, y, steps=300, seed=0)
    np.testing.assert_array_equal(again["l2"], result["l2"])
