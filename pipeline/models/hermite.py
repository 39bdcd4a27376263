"""Steerable 2-D Hermite filter basis and the rotation-equivariant convolution built on it.

Ecker et al. (ICLR 2019) express every filter of the rotation-equivariant core as a linear
combination of 2-D Hermite functions.  In polar coordinates ``(rho, theta)`` (in units of the
basis' Gaussian envelope) the functions of rank ``n`` are

    psi_{mu, nu}(rho, theta) = rho**mu * L_nu^(mu)(rho**2 / 2) * exp(-rho**2 / 4) * {cos, sin}(mu theta)

with angular order ``mu`` in ``{n, n-2, ..., >= 0}``, radial order ``nu = (n - mu) / 2`` and
``L`` the generalised Laguerre polynomial (Cartesian products of 1-D Hermite functions span the
same space).  ``mu = 0`` gives one rotationally symmetric function, ``mu > 0`` a quadrature pair
(cosine, sine part), so ranks ``0 .. k-1`` give ``k (k + 1) / 2`` functions.

Rotating a filter by ``alpha`` only turns each quadrature pair ``(a, b)`` of coefficients by
``mu * alpha``; the rotation is exact for the continuous functions and the sampled basis is
*defined* as the samples of those functions, so the rotated filters are the samples of the exactly
rotated continuous filter.  On the pixel grid, rotations by multiples of 90 degrees are exact to
float precision (the sampling grid is symmetric under them).  Other angles are approximate: the
square kernel truncates the top ranks, which reach its border, and a 45-degree turn moves that mass
between corners and edges; filters that decay inside the kernel (low rank, or smooth after the
Laplace penalty) rotate up to resampling error.

Sampling follows the paper: the functions are evaluated at ``upsampling`` (2) times the pixel
resolution and each ``upsampling x upsampling`` block is summed, which integrates a function over
a pixel and tempers aliasing of the high angular orders.  The envelope is scaled so that the
kernel's outer pixel edge sits at ``rho = 2 sqrt(k)`` for a ``k x k`` kernel, about the turning
radius of rank ``k`` (as in the published code, which always uses rank ``k``).  A lower rank keeps
the first functions of that basis rather than stretching its own to the border.

Conventions: arrays are indexed ``[row, column]`` with row 0 at the top; angles are counter-clockwise
as an image is displayed, so a rotation by +90 degrees is ``torch.rot90(w, 1, dims=(-2, -1))``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import eval_genlaguerre
from torch import nn

COEFFICIENT_STD = 0.1  # initial std of the basis coefficients (paper: N(0, 0.1))


def hermite_orders(rank: int) -> list[tuple[int, int, str]]:
    """Orders ``(mu, nu, part)`` of the 2-D Hermite functions of ranks ``0 .. rank-1``.

    ``part`` is ``"even"`` for the rotationally symmetric ``mu = 0`` function, else ``"cos"`` or
    ``"sin"``; the two parts of a quadrature pair are adjacent (cosine first).  Length
    ``rank (rank + 1) / 2``.
    """
    if rank < 1:
        raise ValueError(f"Hermite rank must be >= 1, got {rank}")
    orders = []
    for n in range(rank):
        for mu in range(n % 2, n + 1, 2):
            nu = (n - mu) // 2
            if mu == 0:
                orders.append((0, nu, "even"))
            else:
                orders += [(mu, nu, "cos"), (mu, nu, "sin")]
    return orders


def hermite_basis(rank: int, size: int, upsampling: int = 2) -> np.ndarray:
    """The 2-D Hermite basis of ranks ``0 .. rank-1`` on a ``size x size`` pixel kernel.

    The envelope is scaled by the kernel size (outer pixel edge at ``rho = 2 sqrt(size)``), so a
    lower rank keeps the first functions of the full basis, which are concentrated nearer the centre
    (smoother, and closer to exactly rotatable since they decay before the square's border).

    Returns
    -------
    (K, size, size) float64 with ``K = rank (rank + 1) / 2``, in the order of
    :func:`hermite_orders`.  The functions are sampled at ``upsampling`` times the resolution,
    block-summed to pixels and scaled to unit norm; both parts of a quadrature pair get the *same*
    scale factor (the RMS of their norms) so that coefficient-space rotations stay exact.
    """
    if size < 1 or upsampling < 1:
        raise ValueError(f"kernel size and upsampling must be >= 1, got {size}, {upsampling}")
    n = size * upsampling
    # sub-pixel centres in pixels from the kernel centre, then in envelope units: edge -> 2 sqrt(size)
    u = ((np.arange(n) + 0.5) / upsampling - size / 2) * (2 * math.sqrt(size) / (size / 2))
    x, y = u[None, :], -u[:, None]  # y points up: counter-clockwise angles as displayed
    rho2 = x**2 + y**2
    theta = np.arctan2(y, x)
    orders = hermite_orders(rank)
    basis = np.empty((len(orders), size, size))
    for i, (mu, nu, part) in enumerate(orders):
        radial = rho2 ** (mu / 2) * eval_genlaguerre(nu, mu, rho2 / 2) * np.exp(-rho2 / 4)
        angular = {"even": 1.0, "cos": np.cos(mu * theta), "sin": np.sin(mu * theta)}[part]
        fine = radial * angular
        basis[i] = fine.reshape(size, upsampling, size, upsampling).sum(axis=(1, 3))
    norms = np.sqrt((basis**2).sum(axis=(1, 2)))
    for i, (_mu, _nu, part) in enumerate(orders):
        if part == "cos":
            pair = math.sqrt((norms[i] ** 2 + norms[i + 1] ** 2) / 2)
            basis[i : i + 2] /= pair
        elif part == "even":
            basis[i] /= norms[i]
    return basis


def coefficient_rotation(rank: int, angle: float) -> np.ndarray:
    """(K, K) matrix ``M`` such that coefficients ``M @ c`` describe filter ``c`` rotated by ``angle``.

    ``angle`` in radians, counter-clockwise.  For a pair ``a cos(mu t) + b sin(mu t)`` the rotated
    function ``f(t - angle)`` has ``(a', b') = (a cos(mu angle) - b sin(mu angle),
    a sin(mu angle) + b cos(mu angle))``.
    """
    orders = hermite_orders(rank)
    rotation = np.zeros((len(orders), len(orders)))
    for i, (mu, _, part) in enumerate(orders):
        if part == "even":
            rotation[i, i] = 1.0
        elif part == "cos":
            c, s = math.cos(mu * angle), math.sin(mu * angle)
            rotation[i : i + 2, i : i + 2] = [[c, -s], [s, c]]
    return rotation


def rotated_hermite_basis(rank: int, size: int, rotations: int, upsampling: int = 2) -> np.ndarray:
    """The basis at ``rotations`` orientations: (R, K, size, size) float64.

    Entry ``[r, i]`` is the filter that coefficient vector ``e_i`` produces after rotation by
    ``2 pi r / R``, so a filter with coefficients ``c`` at rotation ``r`` is
    ``sum_i c_i basis[r, i]``.  ``basis[0]`` is :func:`hermite_basis`.
    """
    if rotations < 1:
        raise ValueError(f"rotations must be >= 1, got {rotations}")
    basis = hermite_basis(rank, size, upsampling)
    # filter = sum_j (M c)_j H_j = sum_i c_i (sum_j M_ji H_j)
    return np.stack(
        [
            np.einsum("ji,jkl->ikl", coefficient_rotation(rank, 2 * math.pi * r / rotations), basis)
            for r in range(rotations)
        ]
    )


class HermiteConv2d(nn.Module):
    """Rotation-equivariant 2-D convolution with filters in a steerable Hermite basis.

    Each of ``out_features`` learned filters is applied at ``rotations`` orientations, giving
    ``rotations * out_features`` output channels in rotation-major order (channel
    ``r * out_features + f``).  With ``rotation_input`` the input is the output of such a layer
    (``rotations * in_features`` channels, rotation-major); the filter of output rotation ``r``
    is then the rotated filter with its input rotation groups cyclically shifted by ``r``, which
    makes the layer equivariant: rotating the input by ``2 pi / R`` (and shifting its rotation
    groups by one) rotates the output and shifts its rotation groups by one.  Without
    ``rotation_input`` (the image) the ``in_features`` input channels are used as they are.

    'same' zero padding; no bias (the core's normalisation adds one per feature).

    Parameters
    ----------
    in_features, out_features : features per rotation (or plain input channels).
    kernel_size : odd filter size in pixels.
    rotations : number R of orientations, spaced ``2 pi / R``.
    rank : Hermite rank (``rank (rank+1)/2`` basis functions); default ``kernel_size``.
    rotation_input : whether the input carries R rotation groups.
    upsampling : resolution factor at which the basis is sampled before block summing.
    """

    basis: torch.Tensor  # (R, n_coefficients, k, k) rotated basis, buffer
    group_index: torch.Tensor  # (R, in_groups) long, buffer

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int,
        rotations: int,
        rank: int | None = None,
        rotation_input: bool = True,
        upsampling: int = 2,
    ):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd for 'same' padding, got {kernel_size}")
        self.in_features = in_features
        self.out_features = out_features
        self.kernel_size = kernel_size
        self.rotations = rotations
        self.rank = kernel_size if rank is None else rank
        self.rotation_input = rotation_input
        in_groups = rotations if rotation_input else 1
        self.in_channels = in_groups * in_features
        self.out_channels = rotations * out_features

        # derived from the constructor arguments, so kept out of the state dict
        basis = rotated_hermite_basis(self.rank, kernel_size, rotations, upsampling)
        self.register_buffer("basis", torch.as_tensor(basis, dtype=torch.float32), persistent=False)
        # group_index[r, s]: which learned input group feeds input group s at output rotation r
        r, s = np.meshgrid(np.arange(rotations), np.arange(in_groups), indexing="ij")
        group_index = (s - r) % in_groups if rotation_input else np.zeros_like(s)
        self.register_buffer("group_index", torch.as_tensor(group_index, dtype=torch.long), persistent=False)

        self.coefficients = nn.Parameter(torch.empty(out_features, in_groups, in_features, basis.shape[1]))
        nn.init.trunc_normal_(self.coefficients, std=COEFFICIENT_STD, a=-2 * COEFFICIENT_STD, b=2 * COEFFICIENT_STD)

    @property
    def n_coefficients(self) -> int:
        """Basis functions per filter, ``rank (rank + 1) / 2``."""
        return self.basis.shape[1]

    @property
    def weight(self) -> torch.Tensor:
        """Assembled filters of all rotations: (R * out_features, in_channels, k, k)."""
        # [f, r, s] = coefficients of learned group (s - r) mod R, used at output rotation r
        shifted = self.coefficients[:, self.group_index]
        weight = torch.einsum("frsgi,rikl->rfsgkl", shifted, self.basis)
        k = self.kernel_size
        return weight.reshape(self.out_channels, self.in_channels, k, k)

    @property
    def filters(self) -> torch.Tensor:
        """Unrotated filters (rotation 0) of each feature: (out_features, in_channels, k, k).

        The other rotations are rotated copies of these (with shifted input groups).
        """
        weight = torch.einsum("fsgi,ikl->fsgkl", self.coefficients, self.basis[0])
        k = self.kernel_size
        return weight.reshape(self.out_features, self.in_channels, k, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, H, W) -> (B, R * out_features, H, W)."""
        return F.conv2d(x, self.weight, padding=self.kernel_size // 2)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"kernel_size={self.kernel_size}, rotations={self.rotations}, rank={self.rank}, "
            f"rotation_input={self.rotation_input}"
        )
