"""The V1 encoding model: core -> readout (-> shift, gain) -> positive firing rates.

    rates = nonlinearity(readout(core(images), shift=shifter(pupil_center))) * modulator(behavior)

All inputs and outputs are in model units (:mod:`pipeline.data.dataset`).
"""

from __future__ import annotations

import dataclasses
from typing import Literal, TypedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config import Config, ConfigError, omitted_at_default
from pipeline.models.behavior import Modulator, Shifter
from pipeline.models.cores import Core, CoreConfig, build_core
from pipeline.models.readouts import FactorizedReadout, GaussianReadout, Readout
from pipeline.modules import evaluating

OutputNonlinearity = Literal["softplus", "elu1"]


@dataclasses.dataclass(frozen=True)
class ReadoutConfig(Config):
    """Readout settings.

    gamma_readout : factorized: weight of ``sum_n ||m_n||_1 ||w_n||_1`` (Ecker et al.: 0.017);
        gaussian: weight of the L1 norm of the feature vectors.
    init_mask_std, init_feature_std : normal initialisation of masks and feature vectors.
    init_mu_range, init_sigma : gaussian only, initial positions and position jitter (grid units).
    positive_weights : constrain the feature weights to be >= 0 (projected after every update, as the
        published code's ``positive`` option): a unit cannot read one feature with the opposite sign
        of another, so two anti-correlated features cannot stand in for one.
    """

    kind: Literal["factorized", "gaussian"] = "factorized"
    gamma_readout: float = 0.017
    init_mask_std: float = 0.01
    init_feature_std: float = 0.01
    init_mu_range: float = 0.1
    init_sigma: float = 0.1
    positive_weights: bool = omitted_at_default(False)

    def validate(self) -> None:
        if self.gamma_readout < 0:
            raise ConfigError(f"gamma_readout must be >= 0, got {self.gamma_readout}")
        if self.init_sigma <= 0 or self.init_mask_std <= 0 or self.init_feature_std <= 0:
            raise ConfigError("init_sigma, init_mask_std and init_feature_std must be positive")
        if not 0 <= self.init_mu_range <= 1:
            raise ConfigError(f"init_mu_range must lie in [0, 1], got {self.init_mu_range}")


@dataclasses.dataclass(frozen=True)
class ModelConfig(Config):
    """A full encoding model.

    shifter : shift receptive fields with the pupil centre (:class:`Shifter`).
    modulator : multiply rates by a behavioural gain (:class:`Modulator`).
    output_nonlinearity : "softplus" (Ecker et al.) or "elu1" (``elu(x) + 1``).
    """

    core: CoreConfig = dataclasses.field(default_factory=CoreConfig)
    readout: ReadoutConfig = dataclasses.field(default_factory=ReadoutConfig)
    shifter: bool = False
    shifter_hidden: int = 5
    shifter_layers: int = 2
    max_shift: float = 0.5
    modulator: bool = False
    modulator_hidden: int = 0
    output_nonlinearity: OutputNonlinearity = "softplus"

    def validate(self) -> None:
        if self.shifter and (self.shifter_hidden < 1 or self.shifter_layers < 0 or self.max_shift <= 0):
            raise ConfigError("shifter needs shifter_hidden >= 1, shifter_layers >= 0 and max_shift > 0")
        if self.modulator_hidden < 0:
            raise ConfigError(f"modulator_hidden must be >= 0, got {self.modulator_hidden}")


def output_nonlinearity(x: torch.Tensor, kind: OutputNonlinearity) -> torch.Tensor:
    return F.softplus(x) if kind == "softplus" else F.elu(x) + 1


def inverse_output_nonlinearity(rates: np.ndarray, kind: OutputNonlinearity) -> np.ndarray:
    """Drive that gives ``rates`` (> 0; clipped at 1e-3) through the output nonlinearity."""
    rates = np.maximum(np.asarray(rates, dtype=np.float64), 1e-3)
    if kind == "softplus":
        return rates + np.log(-np.expm1(-rates))
    return np.where(rates >= 1, rates - 1, np.log(rates))


class Encoder(nn.Module):
    """Core, readout and optional shifter/modulator; forward gives positive rates (B, n_units).

    ``core`` maps (B, C_in, h, w) to (B, C, h', w') and has ``regularizer()``; ``readout`` maps that
    and an optional shift (B, 2) to a drive (B, n_units) and has ``regularizer()``.
    """

    def __init__(
        self,
        core: Core,
        readout: Readout,
        shifter: Shifter | None = None,
        modulator: Modulator | None = None,
        nonlinearity: OutputNonlinearity = "softplus",
    ):
        super().__init__()
        if nonlinearity not in ("softplus", "elu1"):
            raise ValueError(f"Encoder: unknown output nonlinearity {nonlinearity!r}")
        self.core, self.readout, self.shifter, self.modulator = core, readout, shifter, modulator
        self.nonlinearity = nonlinearity

    @property
    def n_units(self) -> int:
        return self.readout.n_units

    def forward(
        self,
        images: torch.Tensor,
        behavior: torch.Tensor | None = None,
        pupil_center: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """images (B, C_in, h, w), behavior (B, 3), pupil_center (B, 2) -> rates (B, n_units) > 0."""
        shift = None
        if self.shifter is not None:
            if pupil_center is None:
                raise ValueError("Encoder: this model has a shifter and needs pupil_center")
            shift = self.shifter(pupil_center)
        rates = output_nonlinearity(self.readout(self.core(images), shift=shift), self.nonlinearity)
        if self.modulator is not None:
            if behavior is None:
                raise ValueError("Encoder: this model has a modulator and needs behavior")
            rates = rates * self.modulator(behavior)
        return rates

    def regularizer(self) -> torch.Tensor:
        """Core plus readout regularizers (scalar), to be added to the loss."""
        return self.core.regularizer() + self.readout.regularizer()

    def feature_weights(self) -> np.ndarray:
        """(n_units, C) readout feature vectors, channels in the core's (rotation-major) order."""
        return self.readout.feature_weights()


class _ReadoutArguments(TypedDict):
    """Keyword arguments that both readouts take."""

    gamma: float
    bias: np.ndarray | None
    init_feature_std: float
    positive: bool


def build_readout(
    config: ReadoutConfig, in_channels: int, spatial: tuple[int, int], n_units: int, bias: np.ndarray | None
) -> Readout:
    shared = _ReadoutArguments(
        gamma=config.gamma_readout,
        bias=bias,
        init_feature_std=config.init_feature_std,
        positive=config.positive_weights,
    )
    if config.kind == "factorized":
        return FactorizedReadout(in_channels, spatial, n_units, init_mask_std=config.init_mask_std, **shared)
    return GaussianReadout(
        in_channels, n_units, init_mu_range=config.init_mu_range, init_sigma=config.init_sigma, **shared
    )


def build_encoder(
    config: ModelConfig,
    n_units: int,
    image_shape: tuple[int, int],
    mean_responses: np.ndarray | None = None,
    core: Core | None = None,
) -> Encoder:
    """A fresh encoder for ``n_units`` neurons and images of ``image_shape`` (h, w).

    ``mean_responses`` (n_units,), in model units, initialises the readout biases so that the initial
    rates are about the mean responses.  ``core`` replaces ``build_core(config.core)`` (e.g. a
    pretrained core).  Seed torch beforehand for a reproducible initialisation.
    """
    if mean_responses is not None and np.shape(mean_responses) != (n_units,):
        raise ValueError(f"build_encoder: mean_responses must be ({n_units},), got {np.shape(mean_responses)}")
    core = build_core(config.core) if core is None else core
    parameter = next(core.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    with evaluating(core), torch.no_grad():  # probe the output shape without touching batch-norm statistics
        out = core(torch.zeros(1, config.core.input_channels, *image_shape, device=device))
    bias = None if mean_responses is None else inverse_output_nonlinearity(mean_responses, config.output_nonlinearity)
    readout = build_readout(config.readout, out.shape[1], tuple(out.shape[2:]), n_units, bias)
    shifter = Shifter(config.shifter_hidden, config.shifter_layers, config.max_shift) if config.shifter else None
    modulator = Modulator(n_units, hidden=config.modulator_hidden) if config.modulator else None
    return Encoder(core, readout, shifter, modulator, config.output_nonlinearity).to(device)
