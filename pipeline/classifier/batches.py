"""The batches of one classifier training step: checked images, augmentation, stimulus pairs.

Augmentation (:func:`augment_batch`) changes the classification images only: random crop and flip,
then, with ``noise_std``, Gaussian pixel noise.  The stimulus images enter the similarity loss as
they are.

The stimulus pairs of a step are either the paper's ``pair_batch`` independent random pairs of
distinct images (``2 * pair_batch`` images through the network) or, with ``pair_images = n``, every
one of the ``n (n - 1) / 2`` pairs among ``n`` distinct random images.  Both estimate the same loss,
the mean over pairs of distinct stimulus images; the second gets 120 pairs from 16 images where the
first gets 16 from 32, so it costs half the network passes and averages over more pairs.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.classifier.config import ClassifierConfig
from pipeline.layout import standard_layout

PairLookup = Callable[[np.ndarray, np.ndarray], np.ndarray]


def check_images(name: str, images: Any, channels: int | None = None) -> torch.Tensor:
    """``images`` as a float32 (N, C, H, W) tensor, refusing another shape, ``channels`` other than C,
    non-finite values or values outside [0, 1]."""
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images, dtype=torch.float32)
    if x.ndim != 4 or (channels is not None and x.shape[1] != channels):
        raise ValueError(f"{name} must be (N, {channels or 'C'}, H, W), got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contain non-finite values")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"{name} must lie in [0, 1], got range [{float(x.min()):.3g}, {float(x.max()):.3g}]")
    return x


def augment(images: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop after reflect padding by ``pad`` pixels, and random horizontal flip.

    images : (B, C, H, W); offsets and flips are drawn on CPU from ``generator`` (reproducible on
    any device).
    """
    b, _, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(images.device)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(images.device)
    flip = (torch.rand(b, generator=generator) < 0.5).to(images.device)
    rows = dy[:, None] + torch.arange(h, device=images.device)  # (B, H)
    cols = dx[:, None] + torch.arange(w, device=images.device)  # (B, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    batch = torch.arange(b, device=images.device)[:, None, None]
    # (B, H, W, C) after advanced indexing on dims 0, 2, 3
    crops = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return standard_layout(crops.permute(0, 3, 1, 2))


def add_training_noise(images: torch.Tensor, generator: torch.Generator, max_std: float) -> torch.Tensor:
    """``images`` (B, C, H, W) in [0, 1] plus Gaussian noise whose std is drawn per image uniformly
    from [0, ``max_std``], clipped to [0, 1].

    Stds and noise are drawn on CPU from ``generator`` (reproducible on any device).  Hand-written
    rather than :func:`pipeline.classifier.robustness.add_noise`, which takes one std for the batch.
    """
    b = len(images)
    std = torch.rand(b, generator=generator) * max_std
    noise = torch.randn(images.shape, generator=generator) * std.view(b, *([1] * (images.ndim - 1)))
    return (images + noise.to(images.device, images.dtype)).clamp_(0, 1)


def augment_batch(images: torch.Tensor, generator: torch.Generator, config: ClassifierConfig) -> torch.Tensor:
    """The augmented classification batch of one step: :func:`augment` when ``config.augment``, then
    :func:`add_training_noise` when ``config.noise_std`` is set.

    Without noise the generator draws exactly what :func:`augment` alone draws, so runs configured
    before ``noise_std`` existed see the same images.
    """
    if config.augment:
        images = augment(images, generator)
    if config.noise_std is not None:
        images = add_training_noise(images, generator, config.noise_std)
    return images


def pair_lookup(similarity: Any, n_stimuli: int) -> PairLookup:
    """Turn ``similarity`` into ``f(i, j) -> (P,) float32 S[i, j]``.

    Accepts a :class:`~pipeline.similarity.pairs.SimilarityStore` (or anything with ``.pairs`` and ``.n``),
    a dense (M, M) array, or a callable ``f(i, j)``.
    """
    if hasattr(similarity, "pairs") and hasattr(similarity, "n"):
        if similarity.n != n_stimuli:
            raise ValueError(f"similarity covers {similarity.n} images, but {n_stimuli} stimulus images were given")
        return similarity.pairs
    if isinstance(similarity, (np.ndarray, torch.Tensor)):
        matrix = np.asarray(similarity, dtype=np.float32)
        if matrix.shape != (n_stimuli, n_stimuli):
            raise ValueError(f"similarity matrix has shape {matrix.shape}, expected ({n_stimuli}, {n_stimuli})")
        return lambda i, j: matrix[i, j]
    if callable(similarity):
        return similarity
    raise TypeError(f"similarity must be a SimilarityStore, an (M, M) array or a callable, got {type(similarity)}")


def sample_pairs(rng: np.random.Generator, n: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` uniformly random ordered pairs of distinct indices below ``n``."""
    i = rng.integers(0, n, count)
    j = (i + rng.integers(1, n, count)) % n  # never equal to i
    return i, j


@dataclasses.dataclass
class PairBatch:
    """Stimulus pairs of one training step.

    images : (N, C, H, W) in [0, 1], each put through the network once.
    target : (P,) the target (neural) similarity of each pair.
    first, second : (P,) long indices into ``images`` of each pair's members; None: N = 2P and
        image k pairs with image P + k.
    """

    images: torch.Tensor
    target: torch.Tensor
    first: torch.Tensor | None = None
    second: torch.Tensor | None = None

    def __post_init__(self) -> None:
        p = len(self.target)
        if self.first is None or self.second is None:
            if len(self.images) != 2 * p:
                raise ValueError(f"{len(self.images)} images for {p} pairs: give first and second")
            self.first = torch.arange(p, device=self.images.device)
            self.second = torch.arange(p, 2 * p, device=self.images.device)
        if self.first.shape != (p,) or self.second.shape != (p,):
            raise ValueError(f"first and second must have shape ({p},)")


def step_pairs(
    rng: np.random.Generator, stimuli: torch.Tensor, lookup: PairLookup, config: ClassifierConfig
) -> PairBatch:
    """The stimulus pairs of one training step (see the module docstring for the two designs).

    stimuli : (M, C, H, W) all stimulus images, on the training device.
    """
    m = len(stimuli)
    if config.pair_images is None:
        i, j = sample_pairs(rng, m, config.pair_batch)
        chosen = np.concatenate([i, j])
        first, second = np.arange(len(i)), np.arange(len(i), 2 * len(i))
    else:
        chosen = rng.choice(m, config.pair_images, replace=False)
        first, second = np.triu_indices(config.pair_images, 1)
        i, j = chosen[first], chosen[second]
    device = stimuli.device
    return PairBatch(
        images=stimuli[torch.as_tensor(chosen, device=device)],
        target=torch.as_tensor(np.asarray(lookup(i, j), dtype=np.float32), device=device),
        first=torch.as_tensor(first, device=device),
        second=torch.as_tensor(second, device=device),
    )
