"""Helpers every torch network of the pipeline shares: eval mode for a block, a CPU copy of the weights."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode inside the block, the model's previous mode after it (also when the block raises)."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of ``model.state_dict()``: a snapshot later steps do not change."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
