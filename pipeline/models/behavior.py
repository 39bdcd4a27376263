"""Behavioural modules of the encoder: eye-position shifter and behavioural gain modulator.

Both start as the identity (no shift, gain 1), so a model with them begins where one without them
does, and learns the behavioural effects on top.
"""

from __future__ import annotations

import torch
from torch import nn


def _mlp(n_inputs: int, hidden: int, layers: int, n_outputs: int, activation: type[nn.Module]) -> nn.Sequential:
    """``layers`` hidden layers of width ``hidden`` and a zero-initialised output layer."""
    modules: list[nn.Module] = []
    width = n_inputs
    for _ in range(layers):
        modules += [nn.Linear(width, hidden), activation()]
        width = hidden
    last = nn.Linear(width, n_outputs)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(*modules, last)


class Shifter(nn.Module):
    """Pupil centre (B, 2), standardised -> receptive-field shift (B, 2) in readout grid units.

    A small tanh MLP (Sinz et al. 2018 use 3 layers of width 5); the output passes through
    ``max_shift * tanh`` so a shift never exceeds ``max_shift`` grid units per axis (the feature map
    spans 2 units).  The output layer starts at zero: no shift.
    """

    def __init__(self, hidden: int = 5, layers: int = 2, max_shift: float = 0.5):
        super().__init__()
        if max_shift <= 0:
            raise ValueError(f"Shifter: max_shift must be positive, got {max_shift}")
        self.max_shift = max_shift
        self.mlp = _mlp(2, hidden, layers, 2, nn.Tanh)

    def forward(self, pupil_center: torch.Tensor) -> torch.Tensor:
        if pupil_center.dim() != 2 or pupil_center.shape[1] != 2:
            raise ValueError(f"Shifter: pupil_center must be (B, 2), got {tuple(pupil_center.shape)}")
        return self.max_shift * torch.tanh(self.mlp(pupil_center))


class Modulator(nn.Module):
    """Behaviour (B, n_inputs), standardised -> positive multiplicative gain per neuron (B, n_units).

    ``gain = exp(f(behaviour))`` with ``f`` linear (``hidden=0``) or an ELU MLP; ``f`` starts at zero
    (gain 1).  A log-linear gain keeps the effect of running or pupil dilation multiplicative and
    positive; ``f`` is clamped to [-max_log_gain, max_log_gain] to rule out overflow.
    """

    def __init__(self, n_units: int, n_inputs: int = 3, hidden: int = 0, max_log_gain: float = 5.0):
        super().__init__()
        self.n_inputs = n_inputs
        self.max_log_gain = max_log_gain
        self.mlp = _mlp(n_inputs, hidden, 1 if hidden else 0, n_units, nn.ELU)

    def forward(self, behavior: torch.Tensor) -> torch.Tensor:
        if behavior.dim() != 2 or behavior.shape[1] != self.n_inputs:
            raise ValueError(f"Modulator: behavior must be (B, {self.n_inputs}), got {tuple(behavior.shape)}")
        return torch.exp(self.mlp(behavior).clamp(-self.max_log_gain, self.max_log_gain))
