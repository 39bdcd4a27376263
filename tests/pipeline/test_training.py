"""Dataset tensors and a tiny end-to-end training on synthetic linear-nonlinear neurons."""

import dataclasses

import numpy as np
import pytest
import torch

from pipeline.data.dataset import ScanTensors, downsample_images
from pipeline.data.recording import Recording
from pipeline.models import metrics
from pipeline.models.encoder import ModelConfig, build_encoder
from pipeline.models.training import TrainerConfig, evaluate, fit, predict
from pipeline.stats import normalization_stats

pytestmark = pytest.mark.kernels  # rerun by `make test` under a lower CPU instruction set

torch.set_num_threads(1)

N_UNITS = 10
SOURCE_SHAPE, MODEL_SHAPE = (24, 40), (12, 20)
SMALL_CNN = dict(kind="cnn", layers=1, features=8, kernel_sizes=[7], batch_norm=False)
SMALL_ROTATION = dict(kind="rotation", layers=2, features=2, rotations=4, kernel_sizes=[5, 3])


def smooth_images(rng, n):
    """Grey-level images (n, H, W) uint8: white noise blurred over a few pixels."""
    noise = rng.normal(size=(n,) + SOURCE_SHAPE)
    kernel = np.exp(-0.5 * (np.arange(-4, 5) / 1.5) ** 2)
    for axis in (1, 2):
        noise = np.apply_along_axis(lambda v: np.convolve(v, kernel, mode="same"), axis, noise)
    return np.clip(128 + 40 * noise / noise.std(), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def recording():
    """Gabor-filter LN neurons with Poisson noise: 600 train, 100 validation trials, 10 test images x 5
    repeats and 20 withheld final-test trials."""
    rng = np.random.default_rng(0)
    n_train, n_val, n_test, repeats, n_final = 600, 100, 10, 5, 20
    n_images = n_train + n_val + n_test + n_final
    images = smooth_images(rng, n_images)
    y, x = np.mgrid[: SOURCE_SHAPE[0], : SOURCE_SHAPE[1]]
    filters = []
    for _ in range(N_UNITS):
        cy, cx = rng.uniform(6, SOURCE_SHAPE[0] - 6), rng.uniform(8, SOURCE_SHAPE[1] - 8)
        theta, phase = rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
        u = (x - cx) * np.cos(theta) + (y - cy) * np.sin(theta)
        filters.append(np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * 3.0**2)) * np.cos(2 * np.pi * u / 10 + phase))
    filters = np.stack(filters).reshape(N_UNITS, -1)
    drive = ((images.reshape(n_images, -1) - 128.0) / 40.0) @ filters.T
    rates = np.log1p(np.exp(drive / drive.std(0) * 1.5 - 0.5))  # softplus, mean rate ~ 1

    image_ids = np.arange(n_images) + 1000
    trial_images = np.concatenate(
        [
            np.arange(n_train + n_val),
            np.repeat(np.arange(n_train + n_val, n_train + n_val + n_test), repeats),
            np.arange(n_images - n_final, n_images),
        ]
    )
    tiers = np.array(
        ["train"] * n_train + ["validation"] * n_val + ["test"] * (n_test * repeats) + ["final_test"] * n_final
    )
    n_trials = len(trial_images)
    order = rng.permutation(n_trials)  # trial files come in random order
    trial_images, tiers = trial_images[order], tiers[order]
    responses = rng.poisson(rates[trial_images]).astype(np.float32)
    withheld = tiers == "final_test"
    responses[withheld] = 0
    return Recording(
        animal_id=1,
        session=1,
        scan_idx=1,
        images=images,
        image_ids=image_ids,
        trial_idx=np.arange(n_trials),
        trial_image_ids=image_ids[trial_images],
        tiers=tiers,
        responses=responses,
        withheld=withheld,
        behavior=rng.normal(size=(n_trials, 3)).astype(np.float32),
        pupil_center=rng.normal(size=(n_trials, 2)).astype(np.float32),
        unit_ids=np.arange(N_UNITS),
        unit_area=np.array(["V1"] * N_UNITS),
        unit_layer=np.array(["L2/3"] * N_UNITS),
        unit_xyz=np.zeros((N_UNITS, 3), np.float32),
    ).validate()


@pytest.fixture(scope="module")
def data(recording):
    return ScanTensors.from_recording(recording, normalization_stats(recording), image_shape=MODEL_SHAPE)


def test_downsample_is_block_average():
    images = np.random.default_rng(1).uniform(0, 255, size=(3, 8, 12))
    small = downsample_images(images, (4, 6))
    np.testing.assert_allclose(small, images.reshape(3, 4, 2, 6, 2).mean(axis=(2, 4)), rtol=1e-5)
    assert downsample_images(images, (8, 12)).dtype == np.float32
    with pytest.raises(ValueError, match="upsample"):
        downsample_images(images, (16, 12))


def test_scan_tensors_are_normalised(recording, data):
    stats = normalization_stats(recording)
    assert data.images.shape == (recording.n_trials, 1) + MODEL_SHAPE and data.images.dtype == torch.float32
    train = data.split("train")
    assert abs(train.images.mean().item()) < 0.05  # z-scored with the training statistics
    expected = downsample_images(recording.trial_images()[:5], MODEL_SHAPE)
    np.testing.assert_allclose(data.images[:5, 0].numpy(), (expected - stats.image_mean) / stats.image_std, atol=1e-5)
    np.testing.assert_allclose(data.responses.numpy(), recording.responses / stats.response_std, rtol=1e-5)
    np.testing.assert_allclose(train.responses.numpy().std(0), 1.0, rtol=1e-4)
    np.testing.assert_allclose(train.behavior.numpy().mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(train.pupil_center.numpy().std(0), 1.0, rtol=1e-4)
    assert len(data.split("final_test")) == 0
    assert len(data.split("final_test", include_withheld=True)) == 20
    assert len(data.split(("train", "validation"))) == 700
    assert set(data.split("test").image_ids) == set(recording.trial_image_ids[recording.tiers == "test"])
    with pytest.raises(ValueError, match="unknown tier"):
        data.split("training")


def test_batches_cover_every_trial_once(data):
    validation = data.split("validation")
    batches = list(validation.batches(32, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert [len(b.images) for b in batches] == [32, 32, 32, 4]
    # every trial exactly once: the multiset of rows is unchanged, the order is not
    seen = torch.cat([b.images.flatten(1)[:, 0] for b in batches])
    original = validation.images.flatten(1)[:, 0]
    assert torch.equal(torch.sort(seen).values, torch.sort(original).values)
    assert not torch.equal(seen, original)
    first = batches[0]
    row = torch.nonzero(original == first.images[0].flatten()[0])[0, 0]
    assert torch.equal(first.responses[0], validation.responses[row])  # fields stay aligned
    assert torch.equal(first.behavior[0], validation.behavior[row])


def new_model(data, core=SMALL_CNN, seed=0, **model):
    torch.manual_seed(seed)
    config = ModelConfig.from_dict(dict(core=core, **model))
    return build_encoder(config, data.n_units, data.image_shape, data.split("train").mean_responses())


FAST = TrainerConfig(lr=0.01, batch_size=64, eval_every=20, patience=3, max_iterations=300, seed=0)


@pytest.fixture(scope="module")
def trained(data):
    model = new_model(data)
    return model, fit(model, data, FAST, device="cpu", progress=False)


def test_training_learns_the_neurons(data, trained):
    model, result = trained
    start, best = result.history[0], max(result.history, key=lambda h: h["val_correlation"])
    assert best["val_loss"] < start["val_loss"]
    assert result.best_correlation > 0.3
    test = data.split("test")
    pred = predict(model, test)
    correlation = metrics.test_correlation(pred, test.responses.numpy(), test.image_ids)
    assert correlation.mean() > 0.5
    print(
        f"iterations {result.iterations} ({result.stop_reason}), val correlation "
        f"{start['val_correlation']:.3f} -> {result.best_correlation:.3f}, val loss "
        f"{start['val_loss']:.3f} -> {result.best_loss:.3f}, test correlation {correlation.mean():.3f}"
    )


def test_fit_restores_the_best_state(data, trained):
    model, result = trained
    assert result.best_correlation == max(h["val_correlation"] for h in result.history)
    for name, value in model.state_dict().items():
        assert torch.equal(value, result.state_dict[name]), name
    assert evaluate(model, data.split("validation"))["correlation"] == pytest.approx(result.best_correlation, abs=1e-9)
    assert not model.training


def test_learning_rate_decays_twice_then_stops(data):
    # a learning rate far too high stalls quickly
    config = TrainerConfig(lr=1.0, batch_size=64, eval_every=2, patience=2, max_iterations=300, seed=0)
    result = fit(new_model(data), data, config, device="cpu", progress=False)
    assert result.stop_reason == "patience" and result.iterations < 300
    lrs = sorted({h["lr"] for h in result.history}, reverse=True)
    assert lrs == pytest.approx([1.0, 0.1, 0.01])
    assert result.best_correlation == max(h["val_correlation"] for h in result.history)


def test_seeded_runs_are_identical_on_cpu(data):
    config = dataclasses.replace(FAST, max_iterations=40, eval_every=10)
    results = []
    for _ in range(2):
        model = new_model(data, core=SMALL_ROTATION, readout=dict(kind="gaussian"), shifter=True, modulator=True)
        results.append(fit(model, data, config, device="cpu", progress=False))
    assert results[0].history == results[1].history
    assert results[0].best_correlation > results[0].history[0]["val_correlation"]
    for name, value in results[0].state_dict.items():
        assert torch.equal(value, results[1].state_dict[name]), name
    other = fit(
        new_model(data, core=SMALL_ROTATION, readout=dict(kind="gaussian"), shifter=True, modulator=True),
        data,
        dataclasses.replace(config, seed=1),
        device="cpu",
        progress=False,
    )
    assert other.history != results[0].history


def test_predict_units(data, trained):
    model, _ = trained
    test = data.split("test")
    pred = predict(model, test)
    assert pred.shape == (len(test), data.n_units) and (pred > 0).all()
    np.testing.assert_allclose(predict(model, test, original_units=True), pred * data.response_std)


def test_early_stopping_on_validation_poisson_loss_keeps_the_lowest_loss(data):
    # The paper's criterion: the kept state is the evaluation with the lowest validation loss, which
    # need not be the one with the highest correlation.
    config = dataclasses.replace(FAST, max_iterations=40, eval_every=10, stop_on="loss")
    result = fit(new_model(data), data, config, device="cpu", progress=False)
    losses = [h["val_loss"] for h in result.history]
    best = int(np.argmin(losses))
    assert result.best_loss == min(losses) and result.best_iteration == result.history[best]["iteration"]
    assert result.best_correlation == result.history[best]["val_correlation"]
    assert result.best_loss < losses[0]


def test_positive_readout_weights_stay_non_negative_through_training(data):
    model = new_model(data, readout=dict(positive_weights=True))
    result = fit(model, data, dataclasses.replace(FAST, max_iterations=60), device="cpu", progress=False)
    weights = model.feature_weights()
    assert weights.min() >= 0 and (weights > 0).mean() > 0.2
    assert (result.state_dict["readout.features"].numpy() >= 0).mean() > 0.9  # projected before every step
    signed = new_model(data)
    fit(signed, data, dataclasses.replace(FAST, max_iterations=60), device="cpu", progress=False)
    assert signed.feature_weights().min() < 0  # the default readout is signed
