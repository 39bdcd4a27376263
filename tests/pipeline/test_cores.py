"""Tests of the convolutional cores, the Hermite basis and the filter regularizers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from pipeline.config import ConfigError
from pipeline.models.cores import Core, CoreConfig, build_core, roll_rotations
from pipeline.models.hermite import (
    HermiteConv2d,
    coefficient_rotation,
    hermite_basis,
    hermite_orders,
    rotated_hermite_basis,
)
from pipeline.models.regularizers import (
    LAPLACE_KERNEL,
    filter_regularizer,
    group_sparsity,
    laplace_smoothness,
)

pytestmark = pytest.mark.kernels  # rerun by `make test` under a lower CPU instruction set

torch.set_num_threads(1)


def rot90(x: torch.Tensor, k: int = 1) -> torch.Tensor:
    return torch.rot90(x, k, dims=(-2, -1))


def randomize_norms(core: Core, seed: int = 0) -> None:
    """Give batch-norm scales and biases non-trivial values (shared across rotations by design)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for norm in core.norms:
            norm.bias.copy_(torch.randn(norm.bias.shape, generator=gen))
            if norm.scale is not None:
                norm.scale.copy_(0.5 + torch.rand(norm.scale.shape, generator=gen))


def warm_up_running_stats(core: Core, size: int, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    core.train()
    with torch.no_grad():
        for _ in range(3):
            core(torch.randn(4, core.config.input_channels, size, size, generator=gen))


def smooth_disc_image(size: int, seed: int = 0) -> np.ndarray:
    """Smooth random image, faded to zero outside a central disc (so rotations lose nothing)."""
    rng = np.random.default_rng(seed)
    image = ndimage.gaussian_filter(rng.standard_normal((size, size)), 1.5)
    image /= image.std()
    c = (size - 1) / 2
    radius = np.hypot(*np.meshgrid(np.arange(size) - c, np.arange(size) - c, indexing="ij"))
    window = np.clip((0.45 * size - radius) / 4, 0, 1)
    return image * window


def rotate_maps(x: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate (..., H, W) maps counter-clockwise (as displayed) about their centre, cubic spline."""
    return ndimage.rotate(x, degrees, axes=(-1, -2), reshape=False, order=3, mode="constant")


# ------------------------------------------------------------------------------------- Hermite basis


@pytest.mark.parametrize("rank", [1, 2, 5, 13])
def test_hermite_orders_count_and_pairs(rank):
    orders = hermite_orders(rank)
    assert len(orders) == rank * (rank + 1) // 2
    assert all(mu + 2 * nu < rank for mu, nu, _ in orders)
    for i, (mu, nu, part) in enumerate(orders):
        if part == "cos":
            assert orders[i + 1] == (mu, nu, "sin")


@pytest.mark.parametrize("size", [5, 13])
def test_hermite_basis_is_full_rank_and_pairs_share_scale(size):
    basis = hermite_basis(size, size)
    flat = basis.reshape(len(basis), -1)
    assert np.linalg.matrix_rank(flat) == len(basis)
    orders = hermite_orders(size)
    norms = (flat**2).sum(1)
    for i, (_, _, part) in enumerate(orders):
        if part == "cos":  # unit norm on average over the pair
            assert norms[i] + norms[i + 1] == pytest.approx(2.0)
        elif part == "even":
            assert norms[i] == pytest.approx(1.0)


def test_coefficient_rotation_is_a_group_representation():
    rank = 7
    a, b = 0.3, 1.1
    ma, mb, mab = (coefficient_rotation(rank, t) for t in (a, b, a + b))
    np.testing.assert_allclose(mb @ ma, mab, atol=1e-12)
    np.testing.assert_allclose(ma @ ma.T, np.eye(len(ma)), atol=1e-12)
    np.testing.assert_allclose(coefficient_rotation(rank, 2 * math.pi), np.eye(len(ma)), atol=1e-12)


@pytest.mark.parametrize("rotations", [4, 8])
def test_rotated_basis_quarter_turn_is_rot90(rotations):
    basis = rotated_hermite_basis(13, 13, rotations)
    quarter = rotations // 4
    for k in (1, 2, 3):
        np.testing.assert_allclose(basis[k * quarter], np.rot90(basis[0], k, axes=(1, 2)), atol=1e-12)


def test_rotated_basis_45_degrees_matches_interpolated_rotation():
    # a low rank on a large kernel is well sampled and decays inside it, so an interpolating rotation of the
    # basis images is an independent estimate of the exactly rotated functions (checks direction and signs
    # of the even orders, which 90 degrees cannot distinguish)
    basis = rotated_hermite_basis(5, 61, 8)
    interpolated = rotate_maps(basis[0], 45)
    c = 30
    disc = np.hypot(*np.meshgrid(np.arange(61) - c, np.arange(61) - c, indexing="ij")) <= 25
    error = np.abs(basis[1] - interpolated)[:, disc].max() / np.abs(basis[1]).max()
    wrong = np.abs(basis[7] - interpolated)[:, disc].max() / np.abs(basis[1]).max()
    print(f"\n45-degree basis rotation vs spline rotation: rel. max error {error:.2e} (wrong direction {wrong:.2f})")
    assert error < 1e-2
    assert wrong > 0.2


# ----------------------------------------------------------------------------------- rotated filters


def test_filter_for_rotation_2_is_rot90_of_rotation_0():
    torch.manual_seed(0)
    core = build_core(CoreConfig(features=3, rotations=8, kernel_sizes=(13, 5, 5)))
    R, F = 8, 3
    for layer, conv in enumerate(core.convs):
        k = conv.kernel_size
        w = conv.weight.detach().reshape(R, F, -1, F if layer else 1, k, k)  # (r, f, s, g, k, k)
        torch.testing.assert_close(w[0], conv.filters.detach().reshape(w[0].shape))
        expected = rot90(w[0])
        if layer:  # input rotation groups are shifted along with the output rotation
            expected = expected.roll(2, dims=1)
        assert (w[2] - expected).abs().max() <= 1e-6 * w[0].abs().max()
        # a 45-degree copy is a genuinely different filter
        assert (w[1] - w[0]).abs().max() > 0.1 * w[0].abs().max()


# -------------------------------------------------------------------------------------- equivariance


def equivariance_error(core: Core, x: torch.Tensor, quarter_turns: int, shift: int) -> float:
    with torch.no_grad():
        y = core(x)
        y_rot = core(rot90(x, quarter_turns))
    expected = rot90(roll_rotations(y, shift, core.rotations), quarter_turns)
    return ((y_rot - expected).abs().max() / y.abs().max()).item()


@pytest.mark.parametrize(
    "rotations, skip, batch_norm, mode, layer_features",
    [
        (8, 0, True, "eval", None),
        (8, 0, True, "train", None),
        (8, 2, True, "eval", None),
        (4, 0, False, "eval", None),
        (8, 0, True, "train", (3, 5, 4)),
        (8, 2, True, "eval", (3, 5, 4)),
        (16, 0, True, "eval", None),
    ],
)
def test_core_is_equivariant_to_90_degree_rotations(rotations, skip, batch_norm, mode, layer_features):
    torch.manual_seed(0)
    config = CoreConfig(
        features=4, rotations=rotations, skip=skip, batch_norm=batch_norm, hermite_rank=9, layer_features=layer_features
    )
    core = build_core(config)
    randomize_norms(core)
    warm_up_running_stats(core, 33)
    core.train(mode == "train")
    x = torch.randn(2, 1, 33, 33)
    quarter = rotations // 4
    errors = {k: equivariance_error(core, x, k, k * quarter) for k in (1, 2, 3)}
    wrong_shift = equivariance_error(core, x, 1, 0)
    print(
        f"\n90-degree equivariance R={rotations} skip={skip} bn={batch_norm} {mode}: "
        f"rel. max error {errors} (no channel shift: {wrong_shift:.2f})"
    )
    assert max(errors.values()) < 1e-4
    assert wrong_shift > 0.05


def rotation_45_error(core: Core, shift: int, size: int = 65, radius: int = 18, degrees: float = 45.0) -> float:
    """RMS of ``core(rot x) - rot(roll(core(x), shift))`` over the output std, on a central disc, for a
    rotation by ``degrees`` (45 unless given).

    Eval mode with randomised batch-norm parameters and running statistics.  The disc keeps the
    receptive fields (radius 10 for 13, 5, 5 kernels) inside the faded-out input.
    """
    x = smooth_disc_image(size)
    c = (size - 1) / 2
    disc = np.hypot(*np.meshgrid(np.arange(size) - c, np.arange(size) - c, indexing="ij")) <= radius
    randomize_norms(core)
    warm_up_running_stats(core, size)
    core.eval()
    with torch.no_grad():
        y = core(torch.tensor(x, dtype=torch.float32)[None, None])
        y_rot = core(torch.tensor(rotate_maps(x, degrees), dtype=torch.float32)[None, None])
    expected = rotate_maps(roll_rotations(y, shift, core.rotations)[0].numpy(), degrees)[:, disc]
    diff = y_rot[0].numpy()[:, disc] - expected
    signal = expected - expected.mean(axis=1, keepdims=True)
    return float(np.sqrt((diff**2).mean() / (signal**2).mean()))


def test_core_is_nearly_equivariant_to_45_degree_rotations():
    torch.manual_seed(0)
    cnn_error = rotation_45_error(build_core(CoreConfig(kind="cnn", features=32)), 0)
    # the paper's basis (rank = kernel size): its top ranks reach the square kernel's border, where a
    # 45-degree turn moves filter mass between corners and edges, so equivariance is approximate
    paper = build_core(CoreConfig(features=4, rotations=8))
    paper_error, paper_unshifted = rotation_45_error(paper, 1), rotation_45_error(paper, 0)
    # low-rank filters decay inside the kernel: then only resampling separates the rotations
    compact = build_core(CoreConfig(features=4, rotations=8, hermite_rank=3))
    compact_error = rotation_45_error(compact, 1)
    print(
        "\n45-degree equivariance, RMS error / output std (13, 5, 5 kernels, random init): "
        f"rank = kernel size {paper_error:.3f} (without channel shift {paper_unshifted:.3f}), "
        f"rank 3 {compact_error:.3f}, CNN {cnn_error:.3f}"
    )
    assert paper_error < 0.5 * cnn_error and paper_error < 0.5 * paper_unshifted
    assert compact_error < 0.05 and compact_error < 0.05 * cnn_error


def test_rotated_basis_of_16_rotations_turns_by_22_5_degrees():
    # the 16-rotation grid: every other rotation is the 8-rotation grid's, and the odd ones are turned by
    # 22.5 degrees (checked against an interpolating rotation, as for 45 degrees above)
    basis16, basis8 = rotated_hermite_basis(5, 61, 16), rotated_hermite_basis(5, 61, 8)
    np.testing.assert_allclose(basis16[::2], basis8, atol=1e-12)
    c = 30
    disc = np.hypot(*np.meshgrid(np.arange(61) - c, np.arange(61) - c, indexing="ij")) <= 25
    scale = np.abs(basis16[1]).max()
    for r in (1, 3):
        interpolated = rotate_maps(basis16[r - 1], 22.5)
        error = np.abs(basis16[r] - interpolated)[:, disc].max() / scale
        wrong = np.abs(basis16[(r - 2) % 16] - interpolated)[:, disc].max() / scale
        print(f"\n22.5-degree basis rotation {r - 1} -> {r}: rel. max error {error:.2e} (wrong direction {wrong:.2f})")
        assert error < 1e-2
        assert wrong > 0.2


def test_16_rotation_core_is_nearly_equivariant_to_its_22_5_degree_step():
    # a 16-rotation core: turning the input by one step of its grid (22.5 degrees) turns the maps and shifts
    # the rotation groups by one; the compact basis (rank 3) separates resampling error from the kernel border
    torch.manual_seed(0)
    core = build_core(CoreConfig(features=4, rotations=16, hermite_rank=3))
    assert core.out_channels == 64
    one_step = rotation_45_error(core, 1, degrees=22.5)
    unshifted = rotation_45_error(core, 0, degrees=22.5)
    two_steps = rotation_45_error(core, 2, degrees=45.0)
    cnn = rotation_45_error(build_core(CoreConfig(kind="cnn", features=64)), 0, degrees=22.5)
    print(
        f"\n16 rotations, RMS error / output std: 22.5 degrees {one_step:.3f} (without channel shift "
        f"{unshifted:.3f}), 45 degrees {two_steps:.3f}, CNN at 22.5 degrees {cnn:.3f}"
    )
    assert one_step < 0.05 and one_step < 0.2 * unshifted and one_step < 0.05 * cnn
    assert two_steps < 0.05


def test_batch_norm_statistics_are_shared_across_rotations():
    torch.manual_seed(0)
    core = build_core(CoreConfig(features=3, rotations=8, layers=2, kernel_sizes=(7, 5)))
    randomize_norms(core)
    core.train()
    y = core(torch.randn(3, 1, 20, 20)).detach().reshape(3, 8, 3, 20, 20)
    bias = core.norms[-1].bias.detach()
    # last layer: batch norm without scale, then the bias; statistics over batch, rotations, space
    torch.testing.assert_close(y.mean(dim=(0, 1, 3, 4)), bias, atol=1e-4, rtol=0)
    torch.testing.assert_close(y.var(dim=(0, 1, 3, 4), unbiased=False), torch.ones(3), atol=1e-3, rtol=0)
    assert (y.mean(dim=(0, 3, 4)) - bias).abs().max() > 1e-3  # single rotations are not normalised


# -------------------------------------------------------------------------------------- regularizers


def laplace_reference(w: np.ndarray) -> float:
    kernel = np.array(LAPLACE_KERNEL)
    total = 0.0
    for filt in w:
        smoothed = [ndimage.convolve(channel, kernel, mode="constant", cval=0.0) for channel in filt]
        total += np.sum(np.square(smoothed)) / np.sum(filt**2)
    return total


def sparsity_reference(w: np.ndarray) -> float:
    return sum(np.linalg.norm(channel) / np.linalg.norm(filt) for filt in w for channel in filt)


def test_regularizers_match_independent_computation():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((5, 3, 7, 7))
    tw = torch.tensor(w)
    assert laplace_smoothness(tw).item() == pytest.approx(laplace_reference(w), rel=1e-6)
    assert group_sparsity(tw).item() == pytest.approx(sparsity_reference(w), rel=1e-6)
    # both are ratios: scale invariant
    assert laplace_smoothness(3.7 * tw).item() == pytest.approx(laplace_reference(w), rel=1e-6)
    assert group_sparsity(3.7 * tw).item() == pytest.approx(sparsity_reference(w), rel=1e-6)


def test_filter_regularizer_layer_weights():
    rng = np.random.default_rng(1)
    ws = [rng.standard_normal(s) for s in [(4, 1, 9, 9), (4, 4, 5, 5), (4, 4, 5, 5)]]
    expected = sum(
        0.02 * a * laplace_reference(w) + 0.03 * b * sparsity_reference(w)
        for w, a, b in zip(ws, (1, 0.5, 0.5), (0, 1, 1))
    )
    got = filter_regularizer([torch.tensor(w) for w in ws], 0.02, 0.03, multiplicity=2)
    assert got.item() == pytest.approx(2 * expected, rel=1e-6)


@pytest.mark.parametrize("rotations", [4, 8])
def test_rotation_core_regularizer_equals_penalty_over_all_rotations(rotations):
    torch.manual_seed(0)
    core = build_core(CoreConfig(features=3, rotations=rotations))
    all_rotations = filter_regularizer([conv.weight for conv in core.convs], 0.025, 0.015).item()
    ours = core.regularizer().item()
    print(f"\nR={rotations}: regularizer on one rotation x R = {ours:.4f}, over all rotations = {all_rotations:.4f}")
    # exact for quarter turns (the Laplace kernel is 90-degree symmetric), approximate otherwise
    assert ours == pytest.approx(all_rotations, rel=1e-5 if rotations == 4 else 0.1)


# ---------------------------------------------------------------------- shapes, parameters, gradients


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("skip", [0, 2])
def test_shapes_and_parameter_counts(skip):
    F, R, ks = 4, 8, (13, 5, 5)
    rotation = build_core(CoreConfig(features=F, rotations=R, kernel_sizes=ks, skip=skip))
    cnn = build_core(CoreConfig(kind="cnn", features=F * R, kernel_sizes=ks, skip=skip))
    x = torch.randn(2, 1, 36, 64)
    assert rotation(x).shape == (2, F * R, 36, 64) and cnn(x).shape == (2, F * R, 36, 64)
    assert (rotation.out_channels, rotation.rotations, rotation.features) == (F * R, R, F)
    assert (cnn.out_channels, cnn.rotations, cnn.features) == (F * R, 1, F * R)

    sources = [1, min(max(skip, 1), 1), min(max(skip, 1), 2)]  # previous layers each layer sees
    in_features = [1] + [s * F for s in sources[1:]]

    def norm_params(f):  # scale + bias, last layer bias only
        return 2 * f * (len(ks) - 1) + f

    hermite = sum(F * (1 if i == 0 else R) * g * k * (k + 1) // 2 for i, (g, k) in enumerate(zip(in_features, ks)))
    assert count(rotation) == hermite + norm_params(F)
    conv = sum(F * R * (g if i == 0 else g * R) * k * k for i, (g, k) in enumerate(zip(in_features, ks)))
    assert count(cnn) == conv + norm_params(F * R)
    print(
        f"\nparameters (skip={skip}): rotation core {count(rotation)}, CNN {count(cnn)}, "
        f"ratio {count(cnn) / count(rotation):.1f}"
    )
    assert count(cnn) / count(rotation) > R


@pytest.mark.parametrize("skip", [0, 2])
def test_per_layer_feature_counts_set_each_layer(skip):
    counts, R = (3, 5, 4), 8
    rotation = build_core(CoreConfig(features=4, rotations=R, layer_features=counts, skip=skip, kernel_sizes=(5, 3, 3)))
    cnn = build_core(CoreConfig(kind="cnn", features=4, layer_features=counts, skip=skip, kernel_sizes=(5, 3, 3)))
    assert rotation(torch.randn(2, 1, 12, 12)).shape == (2, 4 * R, 12, 12)
    assert cnn(torch.randn(2, 1, 12, 12)).shape == (2, 4, 12, 12)
    seen = [[0], [0], [1] if skip == 0 else [0, 1]]  # the layers whose outputs each layer reads
    for layer, conv in enumerate(rotation.convs):
        assert conv.out_features == counts[layer]
        assert conv.in_features == (1 if layer == 0 else sum(counts[s] for s in seen[layer]))
    for layer, conv in enumerate(cnn.convs):
        assert conv.weight.shape[:2] == (counts[layer], 1 if layer == 0 else sum(counts[s] for s in seen[layer]))
    assert [n.bias.numel() for n in rotation.norms] == list(counts)
    with pytest.raises(ConfigError, match="must end with features"):
        CoreConfig(features=4, layer_features=(3, 5, 6))
    with pytest.raises(ConfigError, match="must give layers = 3"):
        CoreConfig(features=4, layer_features=(3, 4))
    # one count everywhere is the same core as no per-layer counts, and stores no new key
    assert CoreConfig(features=4, layer_features=None).hash == CoreConfig(features=4).hash
    assert "layer_features" not in CoreConfig(features=4).to_dict()


@pytest.mark.parametrize("kind", ["rotation", "cnn"])
def test_gradients_reach_every_parameter(kind):
    torch.manual_seed(0)
    core = build_core(CoreConfig(kind=kind, features=3, rotations=4, kernel_sizes=(7, 3, 3)))
    loss = core(torch.randn(2, 1, 16, 16)).square().mean() + core.regularizer()
    loss.backward()
    for name, p in core.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().max() > 0, name


def test_regularizer_gradient_reaches_coefficients_only_through_filters():
    core = build_core(CoreConfig(features=2, rotations=4, layers=2, kernel_sizes=(7, 5)))
    core.regularizer().backward()
    assert all(conv.coefficients.grad.abs().max() > 0 for conv in core.convs)
    assert all(norm.bias.grad is None for norm in core.norms)


def test_hermite_rank_caps_at_kernel_size():
    core = build_core(CoreConfig(features=2, rotations=4, hermite_rank=7))
    assert [conv.rank for conv in core.convs] == [7, 5, 5]
    assert [conv.n_coefficients for conv in core.convs] == [28, 15, 15]


def test_multichannel_input_and_bad_input():
    core = build_core(CoreConfig(features=2, rotations=4, input_channels=3, kernel_sizes=(5, 3, 3)))
    assert core(torch.randn(1, 3, 10, 12)).shape == (1, 8, 10, 12)
    with pytest.raises(ValueError, match="expects images"):
        core(torch.randn(1, 1, 10, 12))
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        HermiteConv2d(1, 2, 4, 8)


# ---------------------------------------------------------------------------------------- config


def test_config_validation():
    with pytest.raises(ConfigError, match="kernel_sizes has 3 entries"):
        CoreConfig.from_dict({"layers": 2})
    with pytest.raises(ConfigError, match="kernel_sizes has 2 entries"):
        CoreConfig(kernel_sizes=(13, 5))
    with pytest.raises(ConfigError, match="odd"):
        CoreConfig.from_dict({"kernel_sizes": [13, 4, 5]})
    with pytest.raises(ConfigError, match="unknown"):
        CoreConfig.from_dict({"filters": 3})
    with pytest.raises(ConfigError, match="rotations"):
        CoreConfig.from_dict({"rotations": 0})
    with pytest.raises(ConfigError, match="hermite_rank"):
        CoreConfig.from_dict({"hermite_rank": 0})
    with pytest.raises(ConfigError, match="kind"):
        CoreConfig.from_dict({"kind": "resnet"})
    a = CoreConfig.from_dict({"kernel_sizes": [13, 5, 5], "gamma_laplace": 0.025})
    assert a == CoreConfig() and a.hash == CoreConfig().hash
    assert CoreConfig(kind="cnn", features=128).channels == 128 and CoreConfig().channels == 128


def test_roll_rotations_moves_whole_groups():
    x = torch.arange(2 * 12).reshape(2, 12).float()  # R=4 groups of F=3
    y = roll_rotations(x, 1, 4)
    torch.testing.assert_close(y[:, 3:6], x[:, 0:3])
    torch.testing.assert_close(y[:, 0:3], x[:, 9:12])


def test_state_dict_round_trip_keeps_the_function():
    torch.manual_seed(0)
    config = CoreConfig(features=2, rotations=4, kernel_sizes=(7, 5, 3))
    core = build_core(config)
    randomize_norms(core)
    warm_up_running_stats(core, 12)
    core.eval()
    state = core.state_dict()
    assert not any(key.endswith(("basis", "group_index")) for key in state)  # derived, not stored
    torch.manual_seed(1)
    copy = build_core(config)
    copy.load_state_dict(state)
    copy.eval()
    x = torch.randn(2, 1, 12, 12)
    torch.testing.assert_close(copy(x), core(x))
