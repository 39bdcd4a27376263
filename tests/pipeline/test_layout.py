"""Inputs in unusual memory layouts reach every network in the standard layout, and training,
attacks and noise evaluation finish on them.

`make test` reruns these (marker ``kernels``) under a lower CPU instruction set, where the oneDNN
convolution backward for a one-channel batch with strides (H*W, 1, W, 1) hangs or corrupts memory
(AVX2).  A hang there fails the test through the suite's timeout, with every thread's stack.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.classifier import ClassifierConfig, attacks, augment, build_classifier, fit_classifier, robustness
from pipeline.classifier.resnet import ResNet18
from pipeline.layout import row_major_strides, standard_layout
from pipeline.models.cores import CoreConfig, build_core
from pipeline.models.encoder import ModelConfig, build_encoder

pytestmark = pytest.mark.kernels


def permuted_one_channel(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """(n, 1, h, w) made as augment() made it before: strides (h*w, 1, w, 1), `.contiguous()` a no-op."""
    x = torch.rand(n, h, w, 1, generator=torch.Generator().manual_seed(seed)).permute(0, 3, 1, 2)
    assert x.stride() == (h * w, 1, w, 1) and x.is_contiguous() and x.contiguous().stride() == x.stride()
    return x


def channels_last(n: int, c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    x = torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed))
    return x.contiguous(memory_format=torch.channels_last)


def layouts(c: int, n: int = 6, h: int = 16, w: int = 16) -> dict[str, torch.Tensor]:
    """The same kind of batch in every unusual layout a caller can hand us."""
    cases = {"channels_last": channels_last(n, c, h, w), "expanded": torch.rand(1, c, h, w).expand(n, c, h, w)}
    if c == 1:
        cases["permuted"] = permuted_one_channel(n, h, w)
    cases["sliced"] = torch.rand(n, c, h, w + 3)[..., 1 : w + 1]
    return cases


def test_row_major_strides_include_size_one_dimensions():
    assert row_major_strides((4, 1, 32, 32)) == (1024, 1024, 32, 1)
    assert row_major_strides((2, 3)) == (3, 1)
    assert row_major_strides(()) == ()


def test_standard_layout_copies_only_unusual_layouts():
    plain = torch.rand(4, 1, 8, 8)
    assert standard_layout(plain) is plain
    for name, x in layouts(1).items():
        y = standard_layout(x)
        assert y.stride() == row_major_strides(y.shape), name
        torch.testing.assert_close(y, x, rtol=0, atol=0)
    x = permuted_one_channel(3, 8, 8).requires_grad_(False).clone().permute(0, 2, 3, 1).permute(0, 3, 1, 2)
    x.requires_grad_(True)
    standard_layout(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.ones_like(x))


def test_augment_returns_the_standard_layout():
    out = augment(torch.rand(5, 1, 16, 16), torch.Generator().manual_seed(0))
    assert out.stride() == row_major_strides(out.shape)


def test_resnet_trains_on_permuted_one_channel_batches():
    """The AVX2 hang's own case: SGD steps on (64, 1, 32, 32) batches with strides (1024, 1, 32, 1)."""
    torch.manual_seed(0)
    model = ResNet18(width=4, n_classes=10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    labels = torch.randint(0, 10, (64,), generator=torch.Generator().manual_seed(0))
    losses = []
    for step in range(6):
        loss = torch.nn.functional.cross_entropy(model(permuted_one_channel(64, 32, 32, seed=step)), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert np.all(np.isfinite(losses))


@pytest.mark.parametrize("channels", [1, 3])
def test_resnet_forward_backward_in_every_layout(channels):
    torch.manual_seed(0)
    model = ResNet18(width=4, n_classes=10, in_channels=channels)
    labels = torch.arange(6) % 10
    reference = None
    for name, x in layouts(channels).items():
        x = x.detach().clone() if name == "expanded" else x
        model.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), labels)
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters()])
        assert torch.isfinite(grads).all(), name
        # the same values in the standard layout give the same gradients
        model.zero_grad()
        torch.nn.functional.cross_entropy(
            model(x.contiguous(memory_format=torch.contiguous_format).clone()), labels
        ).backward()
        torch.testing.assert_close(grads, torch.cat([p.grad.flatten() for p in model.parameters()]))
        reference = grads
    assert reference is not None


@pytest.mark.parametrize("kind", ["cnn", "rotation"])
def test_cores_and_encoder_train_on_every_layout(kind):
    features = 4 if kind == "cnn" else 2
    config = ModelConfig.from_dict(
        dict(core=dict(kind=kind, layers=2, features=features, rotations=4, kernel_sizes=[5, 3]))
    )
    torch.manual_seed(0)
    core = build_core(
        CoreConfig.from_dict(dict(kind=kind, layers=2, features=features, rotations=4, kernel_sizes=[5, 3]))
    )
    encoder = build_encoder(config, n_units=5, image_shape=(16, 16))
    optimizer = torch.optim.SGD(encoder.parameters(), lr=0.01)
    for name, x in layouts(1).items():
        out = core(x)
        out.square().mean().add(core.regularizer()).backward()
        for _ in range(2):  # a short training on this layout
            optimizer.zero_grad()
            loss = encoder(x).mean()
            loss.backward()
            optimizer.step()
        assert torch.isfinite(loss), name
        assert all(torch.isfinite(p).all() for p in encoder.parameters()), name


@pytest.mark.parametrize("layout", ["permuted", "channels_last"])
def test_short_classifier_training_on_unusual_layouts(layout):
    channels = 1 if layout == "permuted" else 3
    x = permuted_one_channel(48, 16, 16) if layout == "permuted" else channels_last(48, 3, 16, 16)
    stimuli = permuted_one_channel(12, 16, 16, seed=1) if layout == "permuted" else channels_last(12, 3, 16, 16, 1)
    labels = np.arange(48) % 10
    vectors = np.random.default_rng(0).normal(size=(12, 5))
    config = ClassifierConfig.from_dict(
        dict(width=4, batch_size=16, pair_batch=4, epochs=2, max_steps_per_epoch=3, holdout_fraction=0.0, alpha=1.0)
    )
    fit = fit_classifier(
        build_classifier(config, in_channels=channels),
        x,
        labels,
        stimuli,
        vectors @ vectors.T,
        config,
        device="cpu",
        progress=False,
    )
    assert fit.n_steps == 6
    assert all(np.isfinite(h["train_loss"]) and np.isfinite(h["similarity_loss"]) for h in fit.history)


def test_noise_and_attacks_finish_on_unusual_layouts():
    torch.manual_seed(0)
    model = ResNet18(width=4, n_classes=10).eval()
    images = permuted_one_channel(8, 16, 16)
    labels = robustness.predict(model, images.contiguous(memory_format=torch.contiguous_format).clone(), device="cpu")
    rows = robustness.noise_accuracy(
        model, images, labels, kinds=("gaussian",), strengths={"gaussian": (0.0, 0.1)}, device="cpu"
    )
    assert rows[0]["accuracy"] == 1.0  # no noise: the model's own labels
    for norm, batch in (("l2", channels_last(8, 1, 16, 16)), ("linf", images)):
        distances = attacks.minimal_perturbations(model, batch, labels, norm, (3,), device="cpu")
        assert distances.shape == (1, 8) and (distances > 0).all()
