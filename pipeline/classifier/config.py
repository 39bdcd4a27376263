"""Settings of one classifier training run (:class:`ClassifierConfig`, defaults: Li et al. 2019)."""

from __future__ import annotations

import dataclasses
from typing import Literal, Optional

from pipeline.classifier.resnet import FEATURE_LAYERS
from pipeline.config import Config, ConfigError, omitted_at_default


@dataclasses.dataclass(frozen=True)
class ClassifierConfig(Config):
    """Settings of one classifier training run (defaults: the paper's)."""

    width: int = 64  # channels of the first ResNet stage
    n_classes: int = 10
    layers: tuple[str, ...] = FEATURE_LAYERS  # layers entering S_model
    alpha: float = 20.0  # weight of the similarity loss; 0 = unregularized baseline
    control: Literal["none", "neural", "shuffled", "single_trial", "pixel", "lowpass", "teacher"] = "neural"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 64  # classification images per step
    pair_batch: int = 16  # stimulus-image pairs per training step
    epochs: int = 40
    lr_decay: float = 0.3
    decay_every: int = 4  # epochs
    reset_every: int = 20  # epochs; the learning rate returns to ``lr``
    holdout_fraction: float = 0.01  # of the training images, for validation
    augment: bool = True  # random crop (reflect pad 4) + horizontal flip
    running_momentum: float = 0.9  # of the regularizer's per-channel running means
    clamp_eps: float = 1e-4  # similarities are clamped to [-1 + eps, 1 - eps] before arctanh
    pair_bn_update: bool = False  # whether stimulus batches update batch-norm running statistics
    seed: int = 0
    max_steps_per_epoch: Optional[int] = None  # cap for CPU-sized runs; None = full epochs
    # early stopping: end after this many epochs without a higher validation accuracy and keep the
    # weights of the best epoch (``epochs`` is then the cap); None trains all ``epochs``
    patience: Optional[int] = omitted_at_default(None)
    # stimulus images per step whose every pair enters the similarity loss; None: ``pair_batch``
    # independent pairs, as in the paper
    pair_images: Optional[int] = omitted_at_default(None)
    # Gaussian-noise augmentation of the classification images (never of the stimulus images): each
    # training image gets noise of a std drawn uniformly from [0, noise_std] (image range [0, 1]),
    # after the crop and flip, clipped to [0, 1]; None: no noise.  The upper bound of the robustness
    # experiment and its teacher train with it.
    noise_std: Optional[float] = omitted_at_default(None)

    def validate(self) -> None:
        if not self.layers:
            raise ConfigError("layers: at least one layer is needed")
        unknown = [name for name in self.layers if name not in FEATURE_LAYERS]
        if unknown or len(set(self.layers)) != len(self.layers):
            raise ConfigError(f"layers: {list(self.layers)} must be distinct names from {list(FEATURE_LAYERS)}")
        if self.alpha < 0:
            raise ConfigError(f"alpha must be >= 0, got {self.alpha}")
        if (self.alpha == 0) != (self.control == "none"):
            raise ConfigError(
                f"alpha={self.alpha} with control={self.control!r}: the baseline has alpha 0 and "
                "control 'none'; every regularized run has alpha > 0 and names its similarity target"
            )
        for name in ("width", "n_classes", "batch_size", "pair_batch", "epochs", "decay_every", "reset_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch < 1:
            raise ConfigError(f"max_steps_per_epoch must be >= 1 or None, got {self.max_steps_per_epoch}")
        if not self.lr > 0 or not 0 < self.lr_decay <= 1:
            raise ConfigError(f"need lr > 0 and 0 < lr_decay <= 1, got {self.lr}, {self.lr_decay}")
        if not 0 <= self.momentum < 1 or self.weight_decay < 0:
            raise ConfigError(f"need 0 <= momentum < 1 and weight_decay >= 0, got {self.momentum}, {self.weight_decay}")
        if not 0 <= self.holdout_fraction < 1:
            raise ConfigError(f"holdout_fraction must be in [0, 1), got {self.holdout_fraction}")
        if self.patience is not None and (self.patience < 1 or self.holdout_fraction == 0):
            raise ConfigError(
                f"patience must be >= 1 and needs holdout_fraction > 0, got {self.patience}, {self.holdout_fraction}"
            )
        if self.pair_images is not None and self.pair_images < 2:
            raise ConfigError(f"pair_images must be >= 2 or None, got {self.pair_images}")
        if self.noise_std is not None and not 0 < self.noise_std <= 1:
            raise ConfigError(f"noise_std must be in (0, 1] or None, got {self.noise_std}")
        if not 0 <= self.running_momentum < 1 or not 0 < self.clamp_eps < 1:
            raise ConfigError("need 0 <= running_momentum < 1 and 0 < clamp_eps < 1")

    @property
    def regularized(self) -> bool:
        return self.alpha > 0

    @property
    def pairs_per_step(self) -> int:
        """Stimulus pairs in each step's similarity loss."""
        n = self.pair_images
        return self.pair_batch if n is None else n * (n - 1) // 2
