"""How much pixel noise changes a similarity target: the noise invariance of a representation.

A similarity target can only teach a classifier robustness to noise if the target itself barely
changes when its images are noisy.  For ``n_pairs`` random image pairs, the invariance is the
Pearson correlation of the pairs' similarity computed from the clean images with that computed
from noisy copies of the same images (Gaussian noise of a given std, image range [0, 1]).  The same
measure applies to the neural target (the ensemble's predicted responses to noisy stimuli), the
pixel targets and a classifier's own layer similarity.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from pipeline.classifier.robustness import add_noise, noise_seed


def noisy_images(images: np.ndarray, std: float, seed: int = 0, scale: float = 255.0) -> np.ndarray:
    """(N, H, W) grey-level images (range [0, ``scale``]) plus Gaussian noise of ``std`` x ``scale``, clipped.

    The noise is drawn from the generator of :func:`pipeline.classifier.robustness.noise_seed` for (seed,
    "gaussian"), so every target sees the same noisy images for a given seed.
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 3:
        raise ValueError(f"images must be (N, H, W), got shape {images.shape}")
    generator = torch.Generator().manual_seed(noise_seed(seed, "gaussian"))
    unit = torch.from_numpy(np.clip(images / scale, 0, 1))[:, None]
    return add_noise(unit, "gaussian", float(std), generator)[:, 0].numpy() * scale


def random_pairs(n: int, n_pairs: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n_pairs`` random pairs (i, j) of distinct indices below ``n``."""
    if n < 2:
        raise ValueError(f"need at least 2 images to form pairs, got {n}")
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, n_pairs)
    return i, (i + rng.integers(1, n, n_pairs)) % n


def pair_similarity(vectors: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """(P,) dot products of rows i and j of (N, D) vectors (cosines for centred unit-norm vectors)."""
    vectors = np.asarray(vectors, dtype=np.float64)
    return np.einsum("pd,pd->p", vectors[i], vectors[j])


def invariance(clean: np.ndarray, noisy: np.ndarray) -> float:
    """Pearson correlation of a target's pair similarities on clean images with those on noisy ones (P,)."""
    clean, noisy = np.asarray(clean, dtype=np.float64), np.asarray(noisy, dtype=np.float64)
    if clean.shape != noisy.shape or clean.ndim != 1 or len(clean) < 3:
        raise ValueError(f"need two equal (P >= 3,) arrays, got {clean.shape} and {noisy.shape}")
    return float(np.corrcoef(clean, noisy)[0, 1])


def invariance_levels(
    similarities: Callable[[np.ndarray], np.ndarray], stimuli: np.ndarray, noise_std: Sequence[float], seed: int
) -> list[dict]:
    """Per noise level, ``{noise_std, n_pairs, correlation}``: :func:`invariance` of ``similarities(stimuli)``
    with ``similarities`` of the stimuli plus Gaussian noise of that std (image range [0, 1]).

    similarities : (n, H, W) grey-level images (0-255) -> (n_pairs,) similarities of fixed image pairs.
    stimuli : (n, H, W) grey-level images, 0-255.
    seed : draws the noise (:func:`noisy_images`).
    """
    clean = similarities(stimuli)
    return [
        dict(
            noise_std=float(std),
            n_pairs=len(clean),
            correlation=invariance(clean, similarities(noisy_images(stimuli, std, seed))),
        )
        for std in noise_std
    ]
