"""Filter regularizers of the convolutional cores (Ecker et al. 2019, after Klindt et al. 2017).

Both penalties are ratios, so they do not depend on the overall scale of a filter (batch norm
follows every convolution, so only the filters' shapes matter):

- smoothness: for every output filter ``W_o`` (all its input channels), ``||Laplace * W_o||^2 /
  ||W_o||^2`` with the 3x3 kernel below and zero ('same') padding, so that mass at the kernel
  border is penalised like a step to zero;
- group sparsity: for every output filter, ``sum_i ||W_o,i||_2 / ||W_o||_2`` over its input
  channels ``i``, which drives whole input channels of a filter to zero.

Weight tensors are ``(out_channels, in_channels, k, k)`` as in :class:`torch.nn.Conv2d`.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

LAPLACE_KERNEL = ((0.25, 0.5, 0.25), (0.5, -3.0, 0.5), (0.25, 0.5, 0.25))

# Relative weights of the first and of every further layer (paper: [1, .5, .5] and [0, 1, 1]).
SMOOTHNESS_LAYER_WEIGHTS = (1.0, 0.5)
SPARSITY_LAYER_WEIGHTS = (0.0, 1.0)

EPS = 1e-8  # keeps ratios and square roots finite (and differentiable) for all-zero filters


def _check_filters(filters: torch.Tensor) -> None:
    if filters.ndim != 4 or filters.shape[-1] != filters.shape[-2]:
        raise ValueError(f"filters must be (out, in, k, k), got shape {tuple(filters.shape)}")


def laplace_smoothness(filters: torch.Tensor) -> torch.Tensor:
    """Sum over output filters of ``||Laplace * W_o||^2 / ||W_o||^2``; a scalar tensor.

    ``filters``: (out, in, k, k).  The Laplace filter is applied to each 2-D slice with zero padding
    ('same' output size).
    """
    _check_filters(filters)
    out_channels, in_channels, k, _ = filters.shape
    laplace = filters.new_tensor(LAPLACE_KERNEL)[None, None]
    smoothed = F.conv2d(filters.reshape(out_channels * in_channels, 1, k, k), laplace, padding=1)
    numerator = smoothed.reshape(out_channels, -1).square().sum(dim=1)
    denominator = filters.reshape(out_channels, -1).square().sum(dim=1)
    return (numerator / (denominator + EPS)).sum()


def group_sparsity(filters: torch.Tensor) -> torch.Tensor:
    """Sum over output filters and input channels of ``||W_o,i||_2 / ||W_o||_2``; a scalar tensor."""
    _check_filters(filters)
    squares = filters.square().sum(dim=(2, 3))  # (out, in)
    group_norms = (squares + EPS).sqrt()
    filter_norms = (squares.sum(dim=1, keepdim=True) + EPS).sqrt()
    return (group_norms / filter_norms).sum()


def layer_weights(n_layers: int, first_and_rest: tuple[float, float]) -> tuple[float, ...]:
    """Relative weights ``(first, rest, rest, ...)`` for ``n_layers`` layers."""
    first, rest = first_and_rest
    return (first,) + (rest,) * (n_layers - 1)


def filter_regularizer(
    filters: Sequence[torch.Tensor],
    gamma_laplace: float,
    gamma_sparsity: float,
    multiplicity: float = 1.0,
) -> torch.Tensor:
    """Weighted smoothness + group sparsity penalty of a stack of layers; a scalar tensor.

    ``filters[l]``: (out, in, k, k) filters of layer ``l``.  Layer ``l`` enters the smoothness term
    with weight ``gamma_laplace * SMOOTHNESS_LAYER_WEIGHTS`` and the sparsity term with
    ``gamma_sparsity * SPARSITY_LAYER_WEIGHTS`` (first layer, further layers).  ``multiplicity``
    scales the whole penalty, e.g. by the number of rotated copies each given filter stands for.
    """
    if len(filters) == 0:
        raise ValueError("filter_regularizer needs at least one layer")
    smooth = layer_weights(len(filters), SMOOTHNESS_LAYER_WEIGHTS)
    sparse = layer_weights(len(filters), SPARSITY_LAYER_WEIGHTS)
    total = filters[0].new_zeros(())
    for w, a, b in zip(filters, smooth, sparse):
        if gamma_laplace * a:
            total = total + gamma_laplace * a * laplace_smoothness(w)
        if gamma_sparsity * b:
            total = total + gamma_sparsity * b * group_sparsity(w)
    return multiplicity * total
