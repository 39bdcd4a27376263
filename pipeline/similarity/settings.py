"""How a similarity matrix over an image set is made: the config behind ``SimilarityConfig``."""

from __future__ import annotations

import dataclasses
from typing import Literal

from pipeline.classifier.resnet import FEATURE_LAYERS
from pipeline.classifier.teacher import TEACHER_LAYERS
from pipeline.config import Config, ConfigError, omitted_at_default

IMAGE_METHODS = ("pixel", "lowpass")
"""Similarity methods computed from the images alone (no ensemble)."""


@dataclasses.dataclass(frozen=True)
class SimilaritySettings(Config):
    """How a similarity matrix over an image set is made.

    method : "model" (denoised: ensemble predictions, Li et al.), "single_trial" (the raw-data
        control: one random trial per image and scan), "pixel" (cosine of centred pixel vectors) or
        "lowpass" (the same after a Gaussian blur of ``lowpass_sigma`` pixels: the positive control,
        a target that pixel noise barely changes) or "teacher" (the layer similarity of a trained
        classifier, the teacher, over the images: the positive control's target,
        :mod:`pipeline.classifier.teacher`; the teacher is named with the task).
    teacher_layers : the teacher's layers whose similarities are averaged ("teacher" only).
    scale_units : weight units by signal-to-noise x prediction correlation ("model" and
        "single_trial"; single-trial uses the same weights as the model it is compared with).
    dtype : storage precision of the matrix.
    block_rows : rows computed and stored per block (bounds memory: block_rows x n_images).
    seed : draws the single trials.
    """

    method: Literal["model", "single_trial", "pixel", "lowpass", "teacher"] = "model"
    lowpass_sigma: float = omitted_at_default(3.0)  # pixels of the image set; "lowpass" only
    teacher_layers: tuple[str, ...] = omitted_at_default(TEACHER_LAYERS)  # "teacher" only
    scale_units: bool = True
    dtype: Literal["float16", "float32"] = "float16"
    block_rows: int = 1024
    seed: int = 0

    def validate(self) -> None:
        if self.block_rows < 1:
            raise ConfigError(f"block_rows must be >= 1, got {self.block_rows}")
        if not self.lowpass_sigma > 0:
            raise ConfigError(f"lowpass_sigma must be > 0, got {self.lowpass_sigma}")
        layers = self.teacher_layers
        if not layers or len(set(layers)) != len(layers) or not set(layers) <= set(FEATURE_LAYERS):
            raise ConfigError(f"teacher_layers: {list(layers)} must be distinct names from {list(FEATURE_LAYERS)}")

    @property
    def pixel_sigma(self) -> float:
        """Gaussian blur (pixels) of an image method: ``lowpass_sigma`` for "lowpass", 0 for "pixel"."""
        return self.lowpass_sigma if self.method == "lowpass" else 0.0
