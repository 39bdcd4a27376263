"""Convolutional cores of the V1 predictive models: a plain CNN and the rotation-equivariant core.

A core maps images ``(B, C_in, H, W)`` to feature maps ``(B, out_channels, H, W)`` ('same'
padding, stride 1).  Both kinds share one layer stack (Ecker et al. 2019):

    conv -> batch norm -> softplus      (layers 1 .. L-1)
    conv -> batch norm without scale    (layer L: linear, affine bias only)

The rotation-equivariant core (``kind="rotation"``) learns ``features`` filters per layer in a
steerable Hermite basis (:mod:`pipeline.models.hermite`) and applies each at ``rotations``
orientations, so its channels are rotation-major: channel ``r * features + f`` is feature ``f`` at
orientation ``2 pi r / R`` (counter-clockwise).  Batch-norm statistics, scales and biases are shared
by the rotations of a feature, which keeps the whole stack equivariant: rotating the input by
``2 pi / R`` rotates every feature map and shifts the rotation groups by one
(:func:`roll_rotations`); exact for multiples of 90 degrees when R is a multiple of 4.

The CNN (``kind="cnn"``) is the same stack with ordinary convolutions and ``rotations = 1``; a CNN
with "the same feature maps" as a rotation core of F features x R rotations has ``features = F*R``.

With ``skip = n > 1`` layer ``l`` sees the outputs of the previous ``min(n, l)`` layers,
concatenated per rotation (still rotation-major); the core's output is the last layer's.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, cast

import torch
from torch import nn

from pipeline.config import Config, ConfigError, omitted_at_default
from pipeline.layout import standard_layout
from pipeline.models.hermite import HermiteConv2d
from pipeline.models.regularizers import filter_regularizer

CNN_WEIGHT_STD = 0.01  # initial std of CNN filters (truncated normal, as in the published code)

NONLINEARITIES = {"softplus": nn.Softplus, "elu": nn.ELU, "relu": nn.ReLU}


@dataclasses.dataclass(frozen=True)
class CoreConfig(Config):
    """Architecture and filter regularization of a core.

    kind : "rotation" (Hermite rotation-equivariant core) or "cnn".
    layers : number of convolutional layers.
    features : learned filters per layer; for "rotation" features per rotation
        (channels = features * rotations), for "cnn" channels.  With ``layer_features`` it is the
        last layer's count (the features the readout sees).
    layer_features : optional features of every layer (length ``layers``, the last equal to
        ``features``), e.g. (16, 16, 32) as in the paper's sweep; None: ``features`` in every layer.
    rotations : orientations per feature (only "rotation"; the CNN has 1).
    kernel_sizes : odd filter size (pixels) of every layer; length ``layers``.
    hermite_rank : Hermite rank of every layer ("rotation" only), capped at each layer's kernel size;
        None uses the kernel size (``k (k+1) / 2`` coefficients per filter).
    batch_norm : batch norm after every convolution (else only a learned bias per feature).
    nonlinearity : after layers 1 .. L-1; the last layer is linear.
    skip : layer l sees the outputs of the previous ``skip`` layers concatenated (0 and 1: plain stack).
    gamma_laplace, gamma_sparsity : weights of the filter smoothness and group-sparsity penalties
        (relative layer weights [1, .5, .5, ...] and [0, 1, 1, ...]).
    input_channels : channels of the input images.
    """

    kind: Literal["cnn", "rotation"] = "rotation"
    layers: int = 3
    features: int = 16
    rotations: int = 8
    kernel_sizes: tuple[int, ...] = (13, 5, 5)
    hermite_rank: int | None = None
    batch_norm: bool = True
    nonlinearity: Literal["softplus", "elu", "relu"] = "softplus"
    skip: int = 0
    gamma_laplace: float = 0.025
    gamma_sparsity: float = 0.015
    input_channels: int = 1
    layer_features: tuple[int, ...] | None = omitted_at_default(None)

    def __post_init__(self):
        # direct construction is validated too, not only from_dict
        self.validate()

    def validate(self) -> None:
        if self.kind not in ("cnn", "rotation"):
            raise ConfigError(f"kind: {self.kind!r} is not one of ['cnn', 'rotation']")
        if self.nonlinearity not in NONLINEARITIES:
            raise ConfigError(f"nonlinearity: {self.nonlinearity!r} is not one of {list(NONLINEARITIES)}")
        for name in ("layers", "features", "rotations", "input_channels"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if len(self.kernel_sizes) != self.layers:
            raise ConfigError(
                f"kernel_sizes has {len(self.kernel_sizes)} entries {tuple(self.kernel_sizes)} "
                f"but layers = {self.layers}; give one kernel size per layer"
            )
        bad = [k for k in self.kernel_sizes if k < 1 or k % 2 != 1]
        if bad:
            raise ConfigError(f"kernel_sizes must be odd and >= 1 ('same' padding), got {tuple(self.kernel_sizes)}")
        if self.layer_features is not None:
            if len(self.layer_features) != self.layers or min(self.layer_features) < 1:
                raise ConfigError(
                    f"layer_features {tuple(self.layer_features)} must give layers = {self.layers} counts, each >= 1"
                )
            if self.layer_features[-1] != self.features:
                raise ConfigError(
                    f"layer_features {tuple(self.layer_features)} must end with features = "
                    f"{self.features} (the last layer's, read out)"
                )
        if self.hermite_rank is not None and self.hermite_rank < 1:
            raise ConfigError(f"hermite_rank must be >= 1 or None, got {self.hermite_rank}")
        if self.skip < 0:
            raise ConfigError(f"skip must be >= 0, got {self.skip}")
        for name in ("gamma_laplace", "gamma_sparsity"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")

    def features_of(self, layer: int) -> int:
        """Features of layer ``layer`` (0-based)."""
        return self.features if self.layer_features is None else self.layer_features[layer]

    @property
    def channels(self) -> int:
        """Channels of every layer's output (features * rotations for "rotation")."""
        return self.features * (self.rotations if self.kind == "rotation" else 1)


def roll_rotations(x: torch.Tensor, shift: int, rotations: int) -> torch.Tensor:
    """Cyclically shift the rotation groups of rotation-major channels by ``shift``.

    ``x``: (B, R*F, ...) -> same shape, with channel group ``r`` of the result equal to group
    ``(r - shift) mod R`` of ``x``.  A core's output for an input rotated by ``shift * 2 pi / R``
    equals its spatially rotated output rolled by ``shift``.
    """
    b, c = x.shape[:2]
    if c % rotations:
        raise ValueError(f"{c} channels are not divisible into {rotations} rotation groups")
    grouped = x.reshape(b, rotations, c // rotations, *x.shape[2:])
    return grouped.roll(shift, dims=1).reshape(x.shape)


class SameConv2d(nn.Conv2d):
    """Bias-free ``nn.Conv2d`` with 'same' padding for odd kernels; ``filters`` is its weight."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        nn.init.trunc_normal_(self.weight, std=CNN_WEIGHT_STD, a=-2 * CNN_WEIGHT_STD, b=2 * CNN_WEIGHT_STD)

    @property
    def filters(self) -> torch.Tensor:
        """(out_channels, in_channels, k, k): every filter is learned independently."""
        return self.weight


class FeatureNorm(nn.Module):
    """Batch norm and bias per feature, shared by the rotations of the feature.

    Input and output (B, R*F, H, W), rotation-major.  Statistics are taken over batch, rotations
    and space.  ``scale=False`` (last layer) keeps the affine bias but learns no scale; without
    batch norm only the bias is applied.
    """

    def __init__(self, features: int, rotations: int, batch_norm: bool = True, scale: bool = True):
        super().__init__()
        self.features = features
        self.rotations = rotations
        self.norm = nn.BatchNorm2d(features, affine=False) if batch_norm else None
        self.scale = nn.Parameter(torch.ones(features)) if batch_norm and scale else None
        self.bias = nn.Parameter(torch.zeros(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        # rotation-major channels: (B, R*F) -> (B*R, F) is a free view that puts rotations in the batch
        x = x.reshape(b * self.rotations, self.features, h, w)
        if self.norm is not None:
            x = self.norm(x)
        if self.scale is not None:
            x = x * self.scale[:, None, None]
        x = x + self.bias[:, None, None]
        return x.reshape(b, c, h, w)


class Core(nn.Module):
    """Stack of convolution, feature norm and nonlinearity layers; see the module docstring.

    Attributes
    ----------
    config : the :class:`CoreConfig`.
    out_channels : channels of the output feature map (features * rotations).
    rotations : orientations per feature (1 for the CNN).
    features : out_channels // rotations.
    convs : the convolution layers (``SameConv2d`` or ``HermiteConv2d``); each has ``filters``
        (unrotated, learned filters) and, for the rotation core, ``weight`` (all rotations).
    """

    def __init__(self, config: CoreConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.rotations = config.rotations if config.kind == "rotation" else 1
        self.features = config.features
        self.out_channels = self.features * self.rotations
        n_layers = config.layers
        convs, norms = [], []
        for layer, kernel_size in enumerate(config.kernel_sizes):
            features = config.features_of(layer)
            in_features = (
                config.input_channels
                if layer == 0
                else sum(config.features_of(source) for source in range(layer - self._sources(layer), layer))
            )
            conv: HermiteConv2d | SameConv2d
            if config.kind == "rotation":
                rank = kernel_size if config.hermite_rank is None else min(config.hermite_rank, kernel_size)
                conv = HermiteConv2d(
                    in_features, features, kernel_size, self.rotations, rank=rank, rotation_input=layer > 0
                )
            else:
                conv = SameConv2d(in_features, features, kernel_size)
            convs.append(conv)
            norms.append(FeatureNorm(features, self.rotations, config.batch_norm, scale=layer < n_layers - 1))
        self.convs = nn.ModuleList(convs)
        self.norms = nn.ModuleList(norms)
        self.nonlinearity = NONLINEARITIES[config.nonlinearity]()

    def _sources(self, layer: int) -> int:
        """How many previous layers' outputs layer ``layer`` (>= 1) sees."""
        return min(max(self.config.skip, 1), layer)

    def _concatenate(self, outputs: list[torch.Tensor]) -> torch.Tensor:
        """Concatenate rotation-major outputs along features, keeping the rotation-major layout."""
        if len(outputs) == 1:
            return outputs[0]
        b, _, h, w = outputs[0].shape
        grouped = [o.reshape(b, self.rotations, -1, h, w) for o in outputs]
        return torch.cat(grouped, dim=2).reshape(b, -1, h, w)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, input_channels, H, W) -> (B, out_channels, H, W)."""
        if images.ndim != 4 or images.shape[1] != self.config.input_channels:
            raise ValueError(
                f"core expects images of shape (B, {self.config.input_channels}, H, W), got {tuple(images.shape)}"
            )
        outputs: list[torch.Tensor] = []
        x = standard_layout(images)
        for layer, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            if layer:
                x = self._concatenate(outputs[-self._sources(layer) :])
            x = norm(conv(x))
            if layer < len(self.convs) - 1:
                x = self.nonlinearity(x)
            outputs.append(x)
        return x

    def filters(self) -> list[torch.Tensor]:
        """Learned filters of every layer, (features, in_channels, k, k) each (rotation 0 for the
        rotation core; the other rotations are rotated copies)."""
        # nn.ModuleList yields plain Modules; __init__ fills it with HermiteConv2d / SameConv2d only
        return [cast("HermiteConv2d | SameConv2d", conv).filters for conv in self.convs]

    def regularizer(self) -> torch.Tensor:
        """Smoothness + group sparsity penalty of the filters; a scalar tensor.

        For the rotation core the penalty is computed on the unrotated filters and multiplied by
        R: the rotated copies have the same penalties (exactly for multiples of 90 degrees, up to
        resampling otherwise), so this equals the penalty over all R * F filters as in the published
        code, and ``gamma`` values mean the same for a CNN and a rotation core with equal feature maps.
        """
        return filter_regularizer(
            self.filters(), self.config.gamma_laplace, self.config.gamma_sparsity, multiplicity=self.rotations
        )


def build_core(config: CoreConfig, device: torch.device | str | None = None) -> Core:
    """The core described by ``config``, on ``device`` (default: torch's default device)."""
    core = Core(config)
    return core.to(device) if device is not None else core
