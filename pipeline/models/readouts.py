"""Readouts: map core feature maps (B, C, h, w) to one linear drive per neuron (B, n_units).

Both readouts return the drive *before* the output nonlinearity, which the encoder applies.
Positions and shifts are in ``grid_sample`` coordinates: (x, y) in [-1, 1], x to the right, y down,
``align_corners=False`` (-1 and 1 are the outer edges of the outer pixels).  A shift ``s`` makes a
neuron look at ``position + s``, in both readouts.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _bias_parameter(n_units: int, bias: np.ndarray | torch.Tensor | None) -> nn.Parameter:
    if bias is None:
        return nn.Parameter(torch.zeros(n_units))
    bias = torch.as_tensor(np.asarray(bias, dtype=np.float32))
    if bias.shape != (n_units,):
        raise ValueError(f"readout bias: expected shape ({n_units},), got {tuple(bias.shape)}")
    return nn.Parameter(bias.clone())


def _feature_weights(features: nn.Parameter, positive: bool) -> torch.Tensor:
    """The feature weights to use; with ``positive`` they are first projected onto >= 0 in place
    (as the published code's ``positive``), so the optimiser's steps are projected gradient steps."""
    if positive:
        with torch.no_grad():
            features.clamp_(min=0)
    return features


def _check_input(x: torch.Tensor, channels: int, spatial: tuple[int, ...] | None, name: str) -> None:
    if x.dim() != 4 or x.shape[1] != channels or (spatial is not None and tuple(x.shape[2:]) != spatial):
        expected = f"(B, {channels}, {spatial[0]}, {spatial[1]})" if spatial else f"(B, {channels}, h, w)"
        raise ValueError(f"{name}: expected features {expected}, got {tuple(x.shape)}")


def _check_shift(shift: torch.Tensor | None, batch: int, name: str) -> None:
    if shift is not None and tuple(shift.shape) != (batch, 2):
        raise ValueError(f"{name}: shift must be ({batch}, 2), got {tuple(shift.shape)}")


def translate(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Feature maps (B, C, h, w) resampled so that ``out[..., p] = x[..., p + shift]`` (bilinear, zeros outside).

    ``shift`` (B, 2) is (x, y) in grid units (the map spans 2 units per axis).
    """
    eye = torch.eye(2, dtype=x.dtype, device=x.device).expand(len(x), 2, 2)
    theta = torch.cat([eye, shift.to(x.dtype)[:, :, None]], dim=2)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class FactorizedReadout(nn.Module):
    """Spatial x feature readout (Klindt et al. 2017).

    drive_n = sum_{c,y,x} |m_n[y, x]| * features[c, y, x] * w_n[c] + b_n

    Parameters
    ----------
    in_channels : channels C of the core output.
    spatial : (h, w) of the core output; one mask value per position.
    n_units : number of neurons.
    gamma : weight of the regularizer ``gamma * sum_n ||m_n||_1 ||w_n||_1``.
    bias : (n_units,) initial bias (the encoder passes the inverse output nonlinearity of the mean
        responses), zeros when None.
    init_mask_std, init_feature_std : std of the normal initialisation of masks (before |.|) and
        feature weights.
    positive : keep the feature weights >= 0 (projected before every use).

    With a shift, the feature maps are translated by ``shift`` (bilinear, zero padding) before the
    masks are applied, which moves every neuron's receptive field by the same amount.
    """

    def __init__(
        self,
        in_channels: int,
        spatial: tuple[int, int],
        n_units: int,
        gamma: float = 0.017,
        bias: np.ndarray | torch.Tensor | None = None,
        init_mask_std: float = 0.01,
        init_feature_std: float = 0.01,
        positive: bool = False,
    ):
        super().__init__()
        self.in_channels, self.spatial, self.n_units, self.gamma = in_channels, tuple(spatial), n_units, gamma
        self.positive = positive
        self.mask = nn.Parameter(torch.randn(n_units, *self.spatial) * init_mask_std)
        self.features = nn.Parameter(torch.randn(n_units, in_channels) * init_feature_std)
        self.bias = _bias_parameter(n_units, bias)

    def forward(self, x: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
        """Features (B, C, h, w), optional shift (B, 2) -> drive (B, n_units)."""
        _check_input(x, self.in_channels, self.spatial, "FactorizedReadout")
        _check_shift(shift, len(x), "FactorizedReadout")
        if shift is not None:
            x = translate(x, shift)
        # Pool space first: (B, C, n) is smaller than (B, h*w, n) whenever h*w > C.
        pooled = torch.einsum("bcs,ns->bcn", x.flatten(2), self.mask.abs().flatten(1))
        return torch.einsum("bcn,nc->bn", pooled, _feature_weights(self.features, self.positive)) + self.bias

    def regularizer(self) -> torch.Tensor:
        return self.gamma * (self.mask.abs().flatten(1).sum(1) * self.features.abs().sum(1)).sum()

    def feature_weights(self) -> np.ndarray:
        """(n_units, C) feature vectors w_n (>= 0 with ``positive``)."""
        weights = self.features.detach().cpu().numpy().copy()
        return np.maximum(weights, 0) if self.positive else weights

    def positions(self) -> np.ndarray:
        """(n_units, 2) mask centre of mass (x, y) in grid units."""
        mask = self.mask.detach().abs().cpu()
        h, w = self.spatial
        ys = (torch.arange(h) + 0.5) / h * 2 - 1
        xs = (torch.arange(w) + 0.5) / w * 2 - 1
        total = mask.sum((1, 2)).clamp_min(1e-12)
        return torch.stack([(mask.sum(1) * xs).sum(1) / total, (mask.sum(2) * ys).sum(1) / total], 1).numpy()


class GaussianReadout(nn.Module):
    """Point readout at a learned position per neuron (Lurz et al. 2021).

    drive_n = sum_c features[c](mu_n + sigma_n * eps) * w_n[c] + b_n, features sampled bilinearly
    with ``grid_sample``.  During training ``eps ~ N(0, I)`` per trial and neuron, so the position
    is jittered and ``sigma_n`` (learned through this reparametrisation) tends to shrink as the
    position becomes certain; in eval mode the mean position ``mu_n`` is used.

    Parameters
    ----------
    in_channels : channels C of the core output.
    n_units : number of neurons.
    gamma : weight of the L1 penalty ``gamma * sum |w|`` on the feature vectors.
    bias : (n_units,) initial bias, zeros when None.
    init_mu_range : initial positions uniform in [-init_mu_range, init_mu_range]^2.
    init_sigma : initial jitter std (grid units, same for x and y).
    init_feature_std : std of the normal initialisation of the feature vectors.
    positive : keep the feature weights >= 0 (projected before every use).
    """

    def __init__(
        self,
        in_channels: int,
        n_units: int,
        gamma: float = 0.017,
        bias: np.ndarray | torch.Tensor | None = None,
        init_mu_range: float = 0.1,
        init_sigma: float = 0.1,
        init_feature_std: float = 0.01,
        positive: bool = False,
    ):
        super().__init__()
        self.positive = positive
        if not 0 <= init_mu_range <= 1:
            raise ValueError(f"GaussianReadout: init_mu_range must lie in [0, 1], got {init_mu_range}")
        if init_sigma <= 0:
            raise ValueError(f"GaussianReadout: init_sigma must be positive, got {init_sigma}")
        self.in_channels, self.n_units, self.gamma = in_channels, n_units, gamma
        self.mu = nn.Parameter((torch.rand(n_units, 2) * 2 - 1) * init_mu_range)
        self.sigma = nn.Parameter(torch.full((n_units, 2), float(init_sigma)))
        self.features = nn.Parameter(torch.randn(n_units, in_channels) * init_feature_std)
        self.bias = _bias_parameter(n_units, bias)

    def sample_grid(self, batch: int, shift: torch.Tensor | None = None) -> torch.Tensor:
        """(B, n_units, 1, 2) sampling positions, jittered in training mode, clamped to [-1, 1]."""
        grid = self.mu.expand(batch, -1, -1)
        if self.training:
            grid = grid + self.sigma * torch.randn(batch, self.n_units, 2, device=grid.device)
        if shift is not None:
            grid = grid + shift[:, None, :].to(grid.dtype)
        return grid.clamp(-1, 1)[:, :, None, :]

    def forward(self, x: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
        """Features (B, C, h, w), optional shift (B, 2) -> drive (B, n_units)."""
        _check_input(x, self.in_channels, None, "GaussianReadout")
        _check_shift(shift, len(x), "GaussianReadout")
        sampled = F.grid_sample(
            x, self.sample_grid(len(x), shift), mode="bilinear", padding_mode="zeros", align_corners=False
        )  # (B, C, n, 1)
        return torch.einsum("bcn,nc->bn", sampled[..., 0], _feature_weights(self.features, self.positive)) + self.bias

    def regularizer(self) -> torch.Tensor:
        return self.gamma * self.features.abs().sum()

    def feature_weights(self) -> np.ndarray:
        """(n_units, C) feature vectors w_n (>= 0 with ``positive``)."""
        weights = self.features.detach().cpu().numpy().copy()
        return np.maximum(weights, 0) if self.positive else weights

    def positions(self) -> np.ndarray:
        """(n_units, 2) mean positions (x, y) in grid units."""
        return self.mu.detach().clamp(-1, 1).cpu().numpy().copy()


Readout = FactorizedReadout | GaussianReadout
"""Either readout: ``forward(x, shift=None)``, ``regularizer()``, ``feature_weights()`` and ``n_units``."""
