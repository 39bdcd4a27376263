"""Readouts, shifter, modulator, encoder assembly and the Poisson loss."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.config import ConfigError
from pipeline.models.behavior import Modulator, Shifter
from pipeline.models.cores import CoreConfig
from pipeline.models.encoder import (
    ModelConfig,
    ReadoutConfig,
    build_encoder,
    inverse_output_nonlinearity,
    output_nonlinearity,
)
from pipeline.models.losses import poisson_loss
from pipeline.models.readouts import FactorizedReadout, GaussianReadout, translate

pytestmark = pytest.mark.kernels  # rerun by `make test` under a lower CPU instruction set

torch.set_num_threads(1)

SMALL_CNN = dict(kind="cnn", layers=2, features=6, kernel_sizes=[5, 3])
SMALL_ROTATION = dict(kind="rotation", layers=2, features=3, rotations=4, kernel_sizes=[5, 3])


def test_factorized_readout_matches_explicit_sum():
    torch.manual_seed(0)
    readout = FactorizedReadout(4, (5, 7), n_units=3, gamma=0.5, bias=np.array([0.1, -0.2, 0.3]))
    x = torch.randn(2, 4, 5, 7)
    out = readout(x)
    assert out.shape == (2, 3)
    for b in range(2):
        for n in range(3):
            expected = (x[b] * readout.mask[n].abs() * readout.features[n][:, None, None]).sum() + readout.bias[n]
            assert torch.allclose(out[b, n], expected, atol=1e-5)
    expected_reg = 0.5 * sum(readout.mask[n].abs().sum() * readout.features[n].abs().sum() for n in range(3))
    assert torch.allclose(readout.regularizer(), expected_reg)
    assert readout.feature_weights().shape == (3, 4)
    with pytest.raises(ValueError, match="expected features"):
        readout(torch.randn(2, 4, 6, 7))


def test_translate_by_one_pixel_and_factorized_shift():
    torch.manual_seed(1)
    x = torch.randn(2, 3, 4, 8)
    shift = torch.tensor([[2 / 8, 0.0], [0.0, -2 / 4]])  # one pixel right / one pixel up
    moved = translate(x, shift)
    assert torch.allclose(moved[0, :, :, :-1], x[0, :, :, 1:], atol=1e-5)
    assert torch.allclose(moved[0, :, :, -1], torch.zeros(3, 4))
    assert torch.allclose(moved[1, :, 1:, :], x[1, :, :-1, :], atol=1e-5)
    readout = FactorizedReadout(3, (4, 8), n_units=2)
    assert torch.allclose(readout(x, shift), readout(moved), atol=1e-6)
    assert torch.allclose(readout(x, torch.zeros(2, 2)), readout(x), atol=1e-6)


def test_gaussian_readout_samples_at_position_and_jitters_in_training():
    torch.manual_seed(2)
    h, w = 6, 10
    readout = GaussianReadout(4, n_units=2, gamma=0.1, init_sigma=0.2)

    # unit 0 at the centre of pixel (row 2, col 7), unit 1 at pixel (4, 1)
    def centre(row, col):
        return [(2 * col + 1) / w - 1, (2 * row + 1) / h - 1]

    with torch.no_grad():
        readout.mu.copy_(torch.tensor([centre(2, 7), centre(4, 1)]))
    x = torch.randn(3, 4, h, w)
    readout.eval()
    out = readout(x)
    expected = torch.stack([x[:, :, 2, 7] @ readout.features[0], x[:, :, 4, 1] @ readout.features[1]], 1) + readout.bias
    assert torch.allclose(out, expected, atol=1e-5)
    assert torch.equal(readout(x), out)  # eval: deterministic
    # a shift of one pixel to the left reads the neighbouring pixel
    left = readout(x, torch.tensor([[-2 / w, 0.0]] * 3))
    assert torch.allclose(left[:, 0], x[:, :, 2, 6] @ readout.features[0] + readout.bias[0], atol=1e-5)
    readout.train()
    assert not torch.allclose(readout(x), out)  # training: jittered positions
    # sigma gets gradients through the jitter
    readout(x).sum().backward()
    assert readout.sigma.grad is not None and readout.sigma.grad.abs().sum() > 0
    assert torch.allclose(readout.regularizer(), 0.1 * readout.features.abs().sum())
    assert readout.positions().shape == (2, 2)


def test_shifter_starts_at_zero_and_is_bounded():
    shifter = Shifter(hidden=5, layers=2, max_shift=0.3)
    pupil = torch.randn(7, 2)
    assert torch.equal(shifter(pupil), torch.zeros(7, 2))
    with torch.no_grad():
        shifter.mlp[-1].bias.fill_(100.0)
    assert torch.allclose(shifter(pupil * 100), torch.full((7, 2), 0.3))
    with pytest.raises(ValueError, match="pupil_center"):
        shifter(torch.randn(7, 3))


def test_modulator_starts_at_gain_one_and_stays_positive():
    for hidden in (0, 4):
        modulator = Modulator(n_units=5, hidden=hidden)
        behavior = torch.randn(6, 3)
        assert torch.equal(modulator(behavior), torch.ones(6, 5))
        with torch.no_grad():
            modulator.mlp[-1].weight.normal_(0, 3)
        assert (modulator(behavior * 10) > 0).all()


def build(readout_kind="factorized", core=SMALL_CNN, **model):
    config = ModelConfig.from_dict(dict(core=core, readout=dict(kind=readout_kind), **model))
    return build_encoder(config, n_units=4, image_shape=(12, 20), mean_responses=np.array([0.2, 0.5, 1.0, 3.0]))


@pytest.mark.parametrize("readout_kind", ["factorized", "gaussian"])
@pytest.mark.parametrize("core", [SMALL_CNN, SMALL_ROTATION], ids=["cnn", "rotation"])
def test_encoder_shapes_positive_rates_and_bias_init(readout_kind, core):
    torch.manual_seed(3)
    model = build(readout_kind, core).eval()
    images = torch.randn(5, 1, 12, 20)
    rates = model(images)
    assert rates.shape == (5, 4) and (rates > 0).all()
    channels = CoreConfig.from_dict(core).channels
    assert model.feature_weights().shape == (4, channels)
    with torch.no_grad():
        model.readout.features.zero_()
    # without feature drive the rates are the mean responses the biases were initialised with
    assert torch.allclose(model(images), torch.tensor([0.2, 0.5, 1.0, 3.0]).expand(5, 4), atol=1e-5)
    reg = model.regularizer()
    assert reg.dim() == 0 and torch.allclose(reg, model.core.regularizer() + model.readout.regularizer())


def test_output_nonlinearity_inverse():
    rates = np.array([1e-2, 0.3, 1.0, 4.0])
    for kind in ("softplus", "elu1"):
        drive = torch.from_numpy(inverse_output_nonlinearity(rates, kind))
        assert np.allclose(output_nonlinearity(drive, kind).numpy(), rates)


def test_shifter_and_modulator_act_as_intended():
    torch.manual_seed(4)
    plain = build(shifter=False, modulator=False).eval()
    torch.manual_seed(4)
    model = build(shifter=True, modulator=True).eval()
    images, behavior, pupil = torch.randn(3, 1, 12, 20), torch.randn(3, 3), torch.randn(3, 2)
    # identity at initialisation
    assert torch.allclose(model(images, behavior, pupil), plain(images), atol=1e-6)
    with torch.no_grad():
        model.modulator.mlp[-1].bias.fill_(math.log(2.0))
        model.shifter.mlp[-1].bias.copy_(torch.tensor([0.4, -0.2]))
    shift = model.shifter(pupil)
    assert shift.abs().max() > 0.05
    expected = 2.0 * F.softplus(plain.readout(plain.core(images), shift=shift))
    assert torch.allclose(model(images, behavior, pupil), expected, atol=1e-5)
    with pytest.raises(ValueError, match="pupil_center"):
        model(images, behavior)
    with pytest.raises(ValueError, match="behavior"):
        model(images, pupil_center=pupil)


def test_model_config_round_trip_and_validation():
    config = ModelConfig.from_dict(
        dict(core=SMALL_ROTATION, readout=dict(kind="gaussian", init_sigma=0.2), shifter=True)
    )
    assert ModelConfig.from_dict(config.to_dict()) == config
    assert ModelConfig.from_dict(config.to_dict()).hash == config.hash
    assert isinstance(config.readout, ReadoutConfig) and config.readout.gamma_readout == 0.017
    with pytest.raises(ConfigError, match="readout.gama"):
        ModelConfig.from_dict(dict(readout=dict(gama=1)))
    with pytest.raises(ConfigError, match="kind"):
        ModelConfig.from_dict(dict(readout=dict(kind="point")))
    with pytest.raises(ValueError, match="mean_responses"):
        build_encoder(config, n_units=4, image_shape=(12, 20), mean_responses=np.ones(3))


def test_poisson_loss_matches_hand_computation():
    prediction = torch.tensor([[0.5, 2.0, 1e-3], [1.5, 0.1, 3.0]])
    target = torch.tensor([[1.0, 0.0, 2.0], [0.0, 4.0, 3.0]])
    per_trial = [
        sum(p - t * math.log(p + 1e-5) for p, t in zip(prow.tolist(), trow.tolist()))
        for prow, trow in zip(prediction, target)
    ]
    assert poisson_loss(prediction, target).item() == pytest.approx(sum(per_trial) / 2, rel=1e-6)
    with pytest.raises(ValueError, match="prediction"):
        poisson_loss(prediction, target[:, :2])


def test_model_config_hashes_leave_out_fields_at_their_defaults():
    # Hashes of configs as stored before layer_features and positive_weights existed: the new fields
    # at their defaults leave to_dict and the hash alone, so stored TrainedModel rows stay addressable.
    rotation = dict(core=dict(kind="rotation", features=6, rotations=8, kernel_sizes=(9, 5, 5)))
    stored = {
        "a7f37390eed1da73ae0fe6e1e3360c61": ModelConfig(),
        "2a113b67739a1ca05ba6ca54f1b1590c": ModelConfig.from_dict(rotation),
        "ff7808be00e023ad248dfde23e9dc6ab": ModelConfig.from_dict(
            dict(
                core=dict(kind="cnn", features=48, kernel_sizes=(9, 5, 5)),
                readout=dict(kind="gaussian"),
                shifter=True,
                modulator=True,
            )
        ),
    }
    for expected, config in stored.items():
        assert config.hash == expected
        assert "layer_features" not in config.to_dict()["core"]
        assert "positive_weights" not in config.to_dict()["readout"]
        assert ModelConfig.from_dict(config.to_dict()) == config  # a stored config loads with the defaults
    # the knobs, once set, are part of the config and its hash
    knobs = ModelConfig.from_dict(dict(rotation, readout=dict(positive_weights=True)))
    assert knobs.to_dict()["readout"]["positive_weights"] is True
    assert knobs.hash != stored_hash(rotation)
    layered = ModelConfig.from_dict(dict(core=dict(rotation["core"], layer_features=(16, 16, 6))))
    assert layered.to_dict()["core"]["layer_features"] == [16, 16, 6] and layered.hash != stored_hash(rotation)
    # spelling the default explicitly is the same config
    assert ModelConfig.from_dict(
        dict(core=dict(rotation["core"], layer_features=None), readout=dict(positive_weights=False))
    ).hash == stored_hash(rotation)


def stored_hash(values: dict) -> str:
    return ModelConfig.from_dict(values).hash
