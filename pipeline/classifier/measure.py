"""Measurements of a trained classifier: accuracy, and how its layer similarity matches S_neural."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.classifier.batches import check_images, pair_lookup, sample_pairs
from pipeline.classifier.regularizer import SimilarityRegularizer
from pipeline.classifier.resnet import ResNet18
from pipeline.device import resolve_device
from pipeline.modules import evaluating


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 512) -> float:
    """Fraction of correctly classified images (model in eval mode; the mode is restored)."""
    device = next(model.parameters()).device
    correct = 0
    with evaluating(model):
        for lo in range(0, len(images), batch_size):
            logits = model(images[lo : lo + batch_size].to(device))
            correct += int((logits.argmax(1).cpu() == labels[lo : lo + batch_size].cpu()).sum())
    return correct / max(len(images), 1)


@torch.no_grad()
def stimulus_channel_means(
    model: ResNet18, stimulus_images: torch.Tensor, layers: tuple[str, ...], batch_size: int = 256
) -> dict[str, torch.Tensor]:
    """Per-channel mean of each layer's features over all stimulus images and positions (eval mode)."""
    device = next(model.parameters()).device
    sums: dict[str, torch.Tensor] = {}
    for lo in range(0, len(stimulus_images), batch_size):
        _, feats = model(stimulus_images[lo : lo + batch_size].to(device), return_features=layers)
        for name, f in feats.items():
            s = f.double().sum(dim=[0, 2, 3]) / (f.shape[2] * f.shape[3])
            sums[name] = sums.get(name, 0) + s
    return {name: (s / len(stimulus_images)).float() for name, s in sums.items()}


@torch.no_grad()
def similarity_pairs(
    model: ResNet18,
    regularizer: SimilarityRegularizer,
    stimulus_images: Any,
    similarity: Any,
    n_pairs: int = 2000,
    seed: int = 0,
    device: str | torch.device | None = None,
    batch_pairs: int = 128,
    recentre: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """S_model and S_neural, each (n_pairs,), over ``n_pairs`` random pairs of stimuli.

    The network runs in eval mode; S_model uses the regularizer's layer weights (uniform for the
    baseline, whose regularizer is never trained).  Centring: with ``recentre=True`` (default) every
    classifier is centred the same way, by the exact per-channel means of its eval-mode features
    over all stimulus images (the running means were tracked on train-mode features, which batch
    norm makes different); with ``recentre=False`` the regularizer's running means are used, except
    for a regularizer that was never updated.  Works on a copy; the inputs are not changed.
    """
    device = resolve_device(device)
    stimuli = check_images("stimulus_images", stimulus_images, model.in_channels)
    lookup = pair_lookup(similarity, len(stimuli))
    model.to(device)
    reg = copy.deepcopy(regularizer).to(device).eval()
    i, j = sample_pairs(np.random.default_rng(seed), len(stimuli), n_pairs)
    s_model = []
    with evaluating(model):
        if recentre or int(reg.n_updates) == 0:
            for name, mean in stimulus_channel_means(model, stimuli, reg.layers).items():
                reg.running_mean(name).copy_(mean)
        for lo in range(0, n_pairs, batch_pairs):
            a, b = i[lo : lo + batch_pairs], j[lo : lo + batch_pairs]
            _, features = model(stimuli[np.concatenate([a, b])].to(device), return_features=reg.layers)
            p = len(a)
            s, _ = reg.similarities({k: v[:p] for k, v in features.items()}, {k: v[p:] for k, v in features.items()})
            s_model.append(s.double().cpu().numpy())
    return np.concatenate(s_model), np.asarray(lookup(i, j), dtype=np.float64)


def similarity_fidelity(
    model: ResNet18, regularizer: SimilarityRegularizer, stimulus_images: Any, similarity: Any, **kwargs
) -> float:
    """Pearson correlation between S_model and S_neural over the pairs of :func:`similarity_pairs`."""
    s_model, s_neural = similarity_pairs(model, regularizer, stimulus_images, similarity, **kwargs)
    return float(np.corrcoef(s_model, s_neural)[0, 1])
