"""Denoised responses: an ensemble of fitted encoders predicts each unit's mean response to images.

Li et al. (2019) replace the variable single-trial responses by the predictions of models fitted to
them.  Behaviour and eye position are held at their training means (zeros in standardised units),
so a prediction is the response of an average trial.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from pipeline.data.dataset import ScanTensors, downsample_images
from pipeline.models import metrics
from pipeline.stats import NormalizationStats

if TYPE_CHECKING:
    from pipeline.models.encoder import Encoder


def model_inputs(images: np.ndarray, stats: NormalizationStats, image_shape: tuple[int, int]) -> torch.Tensor:
    """(N, H, W) grey-level images -> (N, 1, h, w) float32 model inputs, z-scored like training."""
    small = downsample_images(np.asarray(images), image_shape)
    return torch.from_numpy((small - np.float32(stats.image_mean)) / np.float32(stats.image_std))[:, None]


@torch.no_grad()
def ensemble_predict(
    models: Sequence[Encoder],
    inputs: torch.Tensor,
    behavior: torch.Tensor | None = None,
    pupil_center: torch.Tensor | None = None,
    batch_size: int = 256,
) -> np.ndarray:
    """(N, n_units) mean over ``models`` of the predicted rates (model units).

    inputs : (N, 1, h, w) model inputs; behavior (N, 3) and pupil_center (N, 2) standardised,
        zeros (the training means) when None.
    """
    if not models:
        raise ValueError("ensemble_predict: no models")
    n = len(inputs)
    behavior = torch.zeros(n, 3) if behavior is None else behavior
    pupil_center = torch.zeros(n, 2) if pupil_center is None else pupil_center
    total = torch.zeros(0)
    for k, model in enumerate(models):
        device = next(model.parameters()).device
        model.eval()
        parts = [
            model(
                inputs[s : s + batch_size].to(device),
                behavior=behavior[s : s + batch_size].to(device),
                pupil_center=pupil_center[s : s + batch_size].to(device),
            )
            .double()
            .cpu()
            for s in range(0, n, batch_size)
        ]
        prediction = torch.cat(parts) if parts else torch.zeros(0, model.n_units, dtype=torch.float64)
        total = prediction if k == 0 else total + prediction
    return (total / len(models)).numpy()


def ensemble_test_correlation(models: Sequence[Encoder], data: ScanTensors) -> np.ndarray:
    """(n_units,) test correlation (repeat-averaged) of the ensemble's averaged prediction."""
    test = data.split("test")
    prediction = ensemble_predict(models, test.images, test.behavior, test.pupil_center)
    return metrics.test_correlation(prediction, test.responses.double().numpy(), test.image_ids)


def unit_scale(snr: np.ndarray, prediction_correlation: np.ndarray) -> np.ndarray:
    """(n_units,) weight w_a * v_a of Li et al.: signal-to-noise ratio times prediction correlation.

    Negative correlations are clipped to 0: a unit its model cannot predict carries no signal.
    """
    snr = np.asarray(snr, dtype=np.float64)
    correlation = np.clip(np.asarray(prediction_correlation, dtype=np.float64), 0.0, None)
    if snr.shape != correlation.shape:
        raise ValueError(f"unit_scale: snr {snr.shape} and correlation {correlation.shape} differ")
    return np.nan_to_num(snr, nan=0.0) * np.nan_to_num(correlation, nan=0.0)


def classifier_inputs(images: np.ndarray, side: int = 32) -> torch.Tensor:
    """(N, H, W) grey-level stimuli -> (N, 1, side, side) float32 in [0, 1] for the classifiers.

    The central square (side min(H, W)) is kept and area-averaged to ``side`` pixels, so wide
    stimuli (36 x 64) are not distorted.
    """
    images = np.asarray(images, dtype=np.float32)
    h, w = images.shape[1:]
    square = min(h, w)
    top, left = (h - square) // 2, (w - square) // 2
    crop = images[:, top : top + square, left : left + square]
    return torch.from_numpy(np.clip(downsample_images(crop, (side, side)) / 255.0, 0.0, 1.0))[:, None]
