"""Noise augmentation of the classification images, and the teacher target of the positive control."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from pipeline.classifier import ClassifierConfig, augment, build_classifier, build_regularizer, fit_classifier
from pipeline.classifier.batches import add_training_noise, augment_batch, sample_pairs
from pipeline.classifier.invariance import invariance_levels
from pipeline.classifier.measure import similarity_pairs
from pipeline.classifier.resnet import FEATURE_LAYERS, ResNet18
from pipeline.classifier.teacher import layer_vectors, network_invariance, teacher_similarity
from pipeline.config import ConfigError
from pipeline.models.denoise import classifier_inputs

pytestmark = pytest.mark.kernels

torch.set_num_threads(1)


def test_noise_std_stays_out_of_the_hash_at_its_default_and_is_checked():
    # stored classifier configs keep their keys (pinned in test_classifier.py); a noisy config is another one
    assert "noise_std" not in ClassifierConfig().to_dict()
    assert ClassifierConfig().hash == "f07c35891fe9d05f0212828fa92558bc"
    noisy = ClassifierConfig.from_dict(dict(alpha=0, control="none", noise_std=0.2))
    assert noisy.to_dict()["noise_std"] == 0.2 and noisy.hash != noisy.replace(noise_std=None).hash
    assert ClassifierConfig.from_dict(noisy.to_dict()) == noisy
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ConfigError, match="noise_std"):
            ClassifierConfig.from_dict(dict(noise_std=bad))
    assert ClassifierConfig.from_dict(dict(control="teacher")).control == "teacher"


def test_without_noise_the_batch_is_the_crop_and_flip_of_before():
    images = torch.rand(12, 1, 8, 8)
    config = ClassifierConfig()
    out = augment_batch(images, torch.Generator().manual_seed(3), config)
    torch.testing.assert_close(out, augment(images, torch.Generator().manual_seed(3)), rtol=0, atol=0)
    plain = config.replace(augment=False)
    assert torch.equal(augment_batch(images, torch.Generator().manual_seed(3), plain), images)


def test_training_noise_draws_a_std_per_image_up_to_the_maximum_and_is_reproducible():
    images = torch.full((400, 1, 32, 32), 0.5)  # far from the clip at the stds drawn
    noisy = add_training_noise(images, torch.Generator().manual_seed(0), 0.1)
    again = add_training_noise(images, torch.Generator().manual_seed(0), 0.1)
    assert torch.equal(noisy, again) and not torch.equal(noisy, images)
    assert noisy.min() >= 0 and noisy.max() <= 1
    stds = (noisy - images).flatten(1).std(1)
    # uniform on [0, 0.1]: mean 0.05, reaching both ends (each image's estimate from 1024 pixels: +-2 %)
    assert stds.mean() == pytest.approx(0.05, abs=0.005)
    assert stds.min() < 0.005 and 0.095 < stds.max() < 0.104
    config = ClassifierConfig(augment=False, noise_std=0.1)
    torch.testing.assert_close(augment_batch(images, torch.Generator().manual_seed(0), config), noisy)
    clipped = add_training_noise(torch.ones(4, 1, 8, 8), torch.Generator().manual_seed(1), 1.0)
    assert clipped.max() == 1 and clipped.min() >= 0


def _recorded_inputs(config: ClassifierConfig) -> tuple[list[torch.Tensor], list[torch.Tensor], np.ndarray, np.ndarray]:
    """(classification batches, stimulus batches) a short fit puts through the network, and its images."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0.2, 0.8, (64, 1, 16, 16)).astype(np.float32)
    y = rng.integers(0, 10, 64)
    stimuli = rng.uniform(0.2, 0.8, (12, 1, 16, 16)).astype(np.float32)
    model = build_classifier(config)
    classified, paired = [], []

    def record(module, args, kwargs):
        if module.training:  # the training steps, not the evaluation of the held-out images
            (paired if kwargs.get("return_features") else classified).append(args[0].detach().clone())

    model.register_forward_pre_hook(record, with_kwargs=True)
    fit_classifier(model, x, y, stimuli, np.eye(12), config, device="cpu", progress=False)
    return classified, paired, x, stimuli


def test_noise_reaches_the_classification_images_only():
    base = dict(width=4, epochs=1, max_steps_per_epoch=3, batch_size=8, pair_batch=4, augment=False, alpha=1.0)
    classified, paired, x, stimuli = _recorded_inputs(ClassifierConfig.from_dict(dict(base, noise_std=0.3)))
    assert len(classified) == len(paired) == 3
    for batch in classified:
        assert not exact_rows(batch, x).any()  # noisy: no batch image is a training image
    for batch in paired:
        assert exact_rows(batch, stimuli).all()  # every stimulus image enters the similarity loss unchanged
    clean, _, _, _ = _recorded_inputs(ClassifierConfig.from_dict(base))
    assert all(exact_rows(batch, x).all() for batch in clean)


def exact_rows(batch: torch.Tensor, images: np.ndarray) -> torch.Tensor:
    """(B,) whether each image of ``batch`` is, bit for bit, one of ``images``."""
    return (batch.flatten(1)[:, None, :] == torch.from_numpy(images).flatten(1)[None]).all(-1).any(1)


@pytest.fixture(scope="module")
def network():
    return build_classifier(ClassifierConfig(width=4, seed=1)).eval()


def test_teacher_target_is_the_models_layer_similarity_of_the_regularizer(network, tmp_path):
    """The stored target is S_model of an unregularized network (uniform layer weights, stimulus means),
    as similarity_pairs measures it, over the chosen layers."""
    stimuli = torch.from_numpy(np.random.default_rng(2).random((30, 1, 32, 32)).astype(np.float32))
    layers = ("layer1", "layer3")
    vectors = layer_vectors(network, stimuli, layers, batch_size=7, device="cpu")
    assert [v.shape for v in vectors] == [(30, 4 * 32 * 32), (30, 16 * 8 * 8)]
    assert np.allclose([np.linalg.norm(v, axis=1) for v in vectors], 1, atol=1e-5)
    store = teacher_similarity(network, stimuli, tmp_path / "t", layers, dtype=np.float32, progress=False)
    assert store.n == 30 and store.manifest["metadata"]["layers"] == list(layers)

    regularizer = build_regularizer(network, ClassifierConfig(width=4, layers=layers))
    lookup = lambda i, j: np.zeros(len(i))  # noqa: E731 (only S_model is compared)
    s_model, _ = similarity_pairs(network, regularizer, stimuli, lookup, n_pairs=300, seed=5, device="cpu")
    i, j = sample_pairs(np.random.default_rng(5), 30, 300)
    np.testing.assert_allclose(store.pairs(i, j), s_model, atol=1e-5)
    assert np.allclose(np.diag(store.submatrix(np.arange(30))), 1, atol=1e-5)


def test_invariance_of_a_network_is_the_classifiers_measure(network):
    """With every layer, network_invariance is what NoiseEvaluation.Invariance measures for a baseline
    (uniform layer weights); clean against clean correlates perfectly."""
    stimuli = np.random.default_rng(3).uniform(0, 255, (40, 36, 64)).astype(np.float32)
    rows = network_invariance(network, stimuli, (0.0, 0.2), FEATURE_LAYERS, n_pairs=400, seed=4, device="cpu")
    assert [r["noise_std"] for r in rows] == [0.0, 0.2] and rows[0]["n_pairs"] == 400
    assert rows[0]["correlation"] == pytest.approx(1.0, abs=1e-9)
    regularizer = build_regularizer(network, ClassifierConfig(width=4))

    def classifier_measure(images):
        lookup = lambda a, b: np.zeros(len(a))  # noqa: E731
        inputs = classifier_inputs(images)
        return similarity_pairs(network, regularizer, inputs, lookup, n_pairs=400, seed=4, device="cpu")[0]

    expected = invariance_levels(classifier_measure, stimuli, (0.2,), 4)[0]["correlation"]
    assert rows[1]["correlation"] == pytest.approx(expected, abs=1e-5)
    assert rows[1]["correlation"] < 0.999


class BlurredResNet(ResNet18):
    """A network that low-passes its input first: noise-invariant by construction."""

    def forward(self, x, return_features=False):
        kernel = torch.exp(-0.5 * (torch.arange(-6.0, 7.0) / 2.0) ** 2)
        kernel = (kernel / kernel.sum()).to(x)
        x = F.conv2d(F.pad(x, (6, 6, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
        x = F.conv2d(F.pad(x, (0, 0, 6, 6), mode="reflect"), kernel.view(1, 1, -1, 1))
        return super().forward(x, return_features)


def smooth_stimuli(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 32, 32) grey-level images (40-215) of low-pass random fields: the structure a blur keeps."""
    fields = gaussian_filter(rng.normal(size=(n, 32, 32)), (0, 3, 3))
    fields = (fields - fields.min((1, 2), keepdims=True)) / np.ptp(fields, (1, 2), keepdims=True)
    return (40 + 175 * fields).astype(np.float32)


def test_a_network_that_blurs_its_input_has_the_more_noise_invariant_similarity():
    """Measured over 6 seeds of weights and stimuli: blurred 0.83-0.98, plain -0.01 to 0.83, the gap
    at least 0.14 (all layers) and 0.30 (layer3)."""
    torch.manual_seed(0)
    plain = ResNet18(width=4, n_classes=10).eval()
    blurred = BlurredResNet(width=4, n_classes=10).eval()
    blurred.load_state_dict(plain.state_dict())
    stimuli = smooth_stimuli(np.random.default_rng(10), 40)
    for layers in (("layer3",), FEATURE_LAYERS):
        r_plain, r_blurred = (
            network_invariance(net, stimuli, (0.2,), layers, n_pairs=500, seed=0, device="cpu")[0]["correlation"]
            for net in (plain, blurred)
        )
        assert r_blurred > r_plain + 0.07, (layers, r_plain, r_blurred)
