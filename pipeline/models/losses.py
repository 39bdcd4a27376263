"""Losses between predicted rates and recorded responses (model units)."""

from __future__ import annotations

from typing import Callable

import torch

EPS = 1e-5


def poisson_loss(prediction: torch.Tensor, target: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Poisson negative log-likelihood up to constants (Ecker et al. 2019).

    Mean over the batch of the sum over neurons of ``r_hat - r * log(r_hat + eps)``;
    ``prediction`` and ``target`` are (B, n_units), ``prediction`` > 0.
    """
    if prediction.shape != target.shape or prediction.dim() != 2:
        raise ValueError(
            f"poisson_loss: prediction {tuple(prediction.shape)} and target {tuple(target.shape)} "
            "must both be (B, n_units)"
        )
    return (prediction - target * torch.log(prediction + eps)).sum(dim=1).mean()


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {"poisson": poisson_loss}


def get_loss(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; known: {sorted(LOSSES)}") from None
