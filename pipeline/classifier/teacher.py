"""The teacher target of the robustness experiment's positive control: a trained network's layer similarity.

A teacher is a ResNet of the students' architecture trained with Gaussian-noise augmentation
(``ClassifierConfig.noise_std``).  Its target over M stimulus images is, for each of ``layers``,
the cosine between two images' flattened feature maps after centring (minus the per-channel mean
over all M images and positions; network in eval mode), averaged over the layers with equal weights.
That is S_model of :mod:`pipeline.classifier.regularizer` with uniform layer weights and running
means equal to the stimulus means, the S_model that :func:`pipeline.classifier.measure.similarity_pairs`
and the classifiers' noise invariance measure: a student can match it exactly by matching its own
layers.

Default layer: ``layer3`` alone.  Li et al. found the learned layer weights collapse onto a middle
layer, and a single layer keeps the target one representation rather than a mix whose early layers
(conv1, layer1: nearly pixels) carry the noise the teacher learned to ignore.

The target's noise invariance (:func:`network_invariance`) is measured like every other target's
(:mod:`pipeline.classifier.invariance`): the correlation over random stimulus pairs of the similarity
of the clean stimuli with that of noisy copies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from pipeline.classifier.batches import check_images
from pipeline.classifier.invariance import invariance_levels, pair_similarity, random_pairs
from pipeline.classifier.measure import stimulus_channel_means
from pipeline.classifier.resnet import ResNet18
from pipeline.device import resolve_device
from pipeline.models.denoise import classifier_inputs
from pipeline.modules import evaluating
from pipeline.similarity.compute import write_similarity
from pipeline.similarity.pairs import SimilarityStore

TEACHER_LAYERS = ("layer3",)
"""The teacher's layer(s) whose similarity is the target (see the module docstring)."""


@torch.no_grad()
def layer_vectors(
    model: ResNet18,
    images: Any,
    layers: Sequence[str] = TEACHER_LAYERS,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> list[np.ndarray]:
    """Per layer, (M, C x H x W) float32 unit-length rows: each image's feature map minus the layer's
    per-channel mean over all M images and positions, flattened (network in eval mode, mode restored).

    images : (M, C, H, W) classifier inputs in [0, 1].  Row products are the layer's cosines.
    """
    images = check_images("images", images, model.in_channels)
    device = resolve_device(device)
    layers = tuple(layers)
    model.to(device)
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in layers}
    with evaluating(model):
        means = stimulus_channel_means(model, images, layers, batch_size)
        for lo in range(0, len(images), batch_size):
            _, features = model(images[lo : lo + batch_size].to(device), return_features=layers)
            for name in layers:
                flat = (features[name] - means[name].to(device).view(1, -1, 1, 1)).flatten(1)
                # the regularizer's normalisation: a constant image's zero vector stays zero
                chunks[name].append((flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-8)).float().cpu().numpy())
    return [np.concatenate(chunks[name]) for name in layers]


def teacher_similarity(
    model: ResNet18, images: Any, out_dir: str | Path, layers: Sequence[str] = TEACHER_LAYERS, **write_kwargs
) -> SimilarityStore:
    """Similarity store of a teacher's target over (M, C, H, W) classifier inputs ``images``: the mean over
    ``layers`` of :func:`layer_vectors`' cosines.

    write_kwargs : passed to :func:`pipeline.similarity.compute.write_similarity`, which averages the
        layers as it averages scans (equal weights).
    """
    vectors = layer_vectors(model, images, layers, device=write_kwargs.get("device"))
    meta = {"control": "teacher", "layers": list(layers), **write_kwargs.pop("metadata", {})}
    return write_similarity(vectors, out_dir, metadata=meta, **write_kwargs)


def pair_similarities(
    model: ResNet18, layers: Sequence[str], first: np.ndarray, second: np.ndarray, device=None
) -> Callable[[np.ndarray], np.ndarray]:
    """``f(stimuli) -> (P,)``: the network's layer similarity (as :func:`teacher_similarity`) of the pairs
    (first[p], second[p]) of (n, H, W) grey-level stimuli (0-255), which become classifier inputs
    (:func:`pipeline.models.denoise.classifier_inputs`) first."""

    def similarities(stimuli: np.ndarray) -> np.ndarray:
        vectors = layer_vectors(model, classifier_inputs(stimuli), layers, device=device)
        return np.mean([pair_similarity(v, first, second) for v in vectors], axis=0)

    return similarities


def network_invariance(
    model: ResNet18,
    stimuli: np.ndarray,
    noise_std: Sequence[float],
    layers: Sequence[str] = TEACHER_LAYERS,
    n_pairs: int = 2000,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> list[dict]:
    """Noise invariance of a network's layer similarity: per std, ``{noise_std, n_pairs, correlation}``
    (:func:`pipeline.classifier.invariance.invariance_levels`).

    stimuli : (n, H, W) grey-level images, 0-255; the noise is added at their resolution, before they
        become classifier inputs, as for the classifiers' own invariance (``NoiseEvaluation.Invariance``).
    layers : the layers averaged; ``FEATURE_LAYERS`` gives what ``NoiseEvaluation.Invariance`` measures
        for an unregularized classifier (uniform layer weights).
    seed : draws the ``n_pairs`` random pairs and the noise.
    """
    first, second = random_pairs(len(stimuli), n_pairs, seed)
    similarities = pair_similarities(model, layers, first, second, device)
    return invariance_levels(similarities, np.asarray(stimuli, dtype=np.float32), noise_std, seed)
