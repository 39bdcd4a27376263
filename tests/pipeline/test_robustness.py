"""Noise evaluation and minimal attacks on tiny models (a hand-built perfect classifier and a small
CNN trained for a few hundred steps on the embedded photograph set)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.classifier import attacks
from pipeline.classifier.robustness import NOISE_KINDS, NOISE_LEVELS, add_noise, noise_accuracy, noise_seed, predict
from pipeline.data.photo_classes import photo_classification_set

pytestmark = pytest.mark.kernels  # rerun by `make test` under a lower CPU instruction set

torch.set_num_threads(1)
# Carlini-Wagner's median over FMN's on `attacked`: 0.14-0.17 measured under AVX-512, AVX2 and AVX
MARGIN_CW_OVER_FMN = 0.5


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
        attacks.minimal_perturbations(trained_cnn, x[:4], y[:4], "linf", (2,))
        assert trained_cnn.training
    finally:
        trained_cnn.eval()


# --- minimal attacks ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def attacked(trained_cnn, photo_data):
    """Correctly classified test crops and both attacks' distances over a step schedule."""
    _, (x, y) = photo_data
    correct = predict(trained_cnn, x) == y
    x, y = x[correct][:30], y[correct][:30]
    schedule = (2, 5, 20)
    return (
        x,
        y,
        schedule,
        {
            norm: attacks.minimal_perturbations(trained_cnn, x, y, norm, schedule, batch_size=16)
            for norm in attacks.NORMS
        },
    )


def test_a_longer_attack_never_reports_a_larger_distance(trained_cnn, attacked):
    x, y, schedule, found = attacked
    for norm, distances in found.items():
        assert distances.shape == (len(schedule), len(x))
        assert (distances[1:] <= distances[:-1]).all(), norm  # per image, hence per median (inf <= inf)
        medians = attacks.median_curve(distances)
        assert (np.diff(medians) <= 0).all() and np.isfinite(medians[-1]), norm
        # the longest run alone can be worse than the best over the schedule, never better
        alone = attacks.minimal_perturbations(trained_cnn, x, y, norm, (schedule[-1],), batch_size=16)
        assert (alone[0] >= distances[-1]).all()
        np.testing.assert_array_equal(
            attacks.minimal_perturbations(trained_cnn, x, y, norm, schedule[:1], batch_size=7)[0], distances[0]
        )


def test_minimal_attacks_beat_known_adversarials(trained_cnn, photo_data, attacked):
    """The L2 attack finds perturbations smaller than the nearest image the model puts in another
    class (itself an adversarial), and the separate L_inf attack beats the L_inf size of the L2 one's
    upper bound (L_inf <= L2 for any perturbation)."""
    (train_x, _), _ = photo_data
    x, y, _, found = attacked
    l2, linf = found["l2"][-1], found["linf"][-1]
    assert np.isfinite(l2).mean() > 0.9 and np.isfinite(linf).mean() > 0.9
    others = predict(trained_cnn, train_x)
    nearest = np.array(
        [(train_x[others != label] - image).flatten(1).double().norm(dim=1).min().item() for image, label in zip(x, y)]
    )
    assert np.median(l2) < 0.5 * np.median(nearest)
    ok = np.isfinite(l2) & np.isfinite(linf)
    assert (linf[ok] <= l2[ok] + 1e-6).all()
    assert np.median(linf) < 0.5 * np.median(l2)  # a separate L_inf attack, not the L2 one's L_inf


def test_carlini_wagner_l2_attack_is_monotone_and_beats_fmn(trained_cnn, attacked):
    """The L2 attack the experiment uses: verified adversarials, non-increasing along its schedule, and
    a smaller median than FMN's on the same images (FMN stalls above the minimal distance)."""
    x, y, schedule, found = attacked
    cw = attacks.minimal_perturbations(trained_cnn, x, y, "l2", (5, 20, 50), batch_size=16, method="cw")
    assert (cw[1:] <= cw[:-1]).all() and np.isfinite(cw[-1]).mean() >= 0.85
    assert np.median(cw[-1]) < MARGIN_CW_OVER_FMN * np.median(found["l2"][-1])
    with pytest.raises(ValueError, match="no attack 'cw' for norm 'linf'"):
        attacks.minimal_perturbations(trained_cnn, x[:2], y[:2], "linf", (2,), method="cw")


def test_common_images_and_flattening_step():
    correct = np.array([[1, 1, 0, 1, 1], [1, 0, 0, 1, 1], [1, 1, 1, 1, 0]], dtype=bool)
    np.testing.assert_array_equal(attacks.common_images(correct), [0, 3])
    np.testing.assert_array_equal(attacks.common_images(correct, n=1), [0])
    with pytest.raises(ValueError, match="n_models"):
        attacks.common_images(np.ones(4, dtype=bool))
    assert attacks.flattening_step((5, 10, 25, 50), [2.0, 1.2, 1.01, 1.0], tolerance=0.02) == 25
    assert attacks.flattening_step((5, 10), [np.inf, 1.0]) == 10
    with pytest.raises(ValueError, match="schedule"):
        attacks.minimal_perturbations(
            nn.Identity(), torch.zeros(1, 1, 2, 2), torch.zeros(1, dtype=torch.long), "l2", (5, 5)
        )


def test_the_linf_attack_may_run_a_longer_schedule_than_the_l2_attack():
    from pipeline.classifier.evaluation import EvaluationSettings
    from pipeline.config import ConfigError

    plain = EvaluationSettings.from_dict(dict(attack_schedule=(5, 10)))
    assert plain.schedule("linf") == plain.schedule("l2") == (5, 10)
    assert "linf_schedule" not in plain.to_dict()  # settings written without it keep their hash
    longer = plain.replace(linf_schedule=(5, 10, 100))
    assert longer.schedule("linf") == (5, 10, 100) and longer.schedule("l2") == (5, 10)
    for bad in ((10, 5), (), (0, 5)):
        with pytest.raises(ConfigError, match="linf_schedule"):
            EvaluationSettings.from_dict(dict(linf_schedule=bad))


def test_the_l2_attack_is_a_setting_that_old_settings_hash_without():
    from pipeline.classifier.evaluation import EvaluationSettings
    from pipeline.config import ConfigError

    plain = EvaluationSettings.from_dict({})
    assert plain.attack("l2") == "fmn" and "l2_attack" not in plain.to_dict()
    cw = plain.replace(l2_attack="cw")
    assert cw.attack("l2") == "cw" and cw.attack("linf") == "fmn" and cw.to_dict()["l2_attack"] == "cw"
    with pytest.raises(ConfigError, match="l2_attack"):
        EvaluationSettings.from_dict(dict(l2_attack="boundary"))
