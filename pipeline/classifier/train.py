"""Training image classifiers with and without neural-similarity regularization (Li et al. 2019).

The loss is the paper's ``L = cross-entropy + alpha * similarity loss``.  Each iteration puts an
augmented batch of training images through the network and, when ``alpha > 0``, a batch of
stimulus pairs (:mod:`pipeline.classifier.batches`), then takes **one** SGD update on the summed
loss (:func:`~pipeline.classifier.step.training_step`).  So every arm, baseline included, gets the
same number of updates, with momentum and weight decay applied once per iteration, and the arms
differ only by the similarity term: with ``alpha = 0`` the regularized path reproduces the
baseline's weights.

One SGD optimiser (momentum, weight decay on the network but not on the
layer-weight logits ``gamma``) and the step schedule
``lr(epoch) = lr * lr_decay ** ((epoch % reset_every) // decay_every)``.

``control`` only labels what the caller passes as ``similarity`` (neural, shuffled, single-trial
or pixel similarity); training is identical for all of them.  ``alpha == 0`` (control ``"none"``)
is the unregularized baseline.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import numpy as np
import torch

from pipeline.classifier.batches import PairBatch, augment, check_images, pair_lookup, step_pairs
from pipeline.classifier.config import ClassifierConfig
from pipeline.classifier.measure import accuracy
from pipeline.classifier.regularizer import SimilarityRegularizer
from pipeline.classifier.resnet import ResNet18
from pipeline.classifier.step import training_step
from pipeline.device import resolve_device
from pipeline.modules import cpu_state
from pipeline.progress import progress_bar


@dataclasses.dataclass
class ClassifierFit:
    """Result of :func:`fit_classifier`.

    state_dict : the network's final parameters and buffers, on CPU.
    regularizer_state : the regularizer's ``gamma``, running means and update count, on CPU
        (never updated for the baseline).
    history : one dict per epoch: epoch, lr, steps, train_loss, train_accuracy, similarity_loss
        (unweighted regularizer loss, NaN for the baseline), validation_accuracy, layer_weights, seconds.
    validation_accuracy : accuracy on the held-out images after the last epoch, or with ``patience``
        after the best epoch, whose weights are kept (None without holdout).
    layer_weights : final softmax(gamma) per layer.
    n_steps : classification steps taken (with ``patience``: up to the kept epoch).
    """

    state_dict: dict[str, torch.Tensor]
    regularizer_state: dict[str, torch.Tensor]
    history: list[dict[str, Any]]
    validation_accuracy: float | None
    layer_weights: dict[str, float]
    n_steps: int


def build_classifier(config: ClassifierConfig, in_channels: int = 1) -> ResNet18:
    """ResNet18 of ``config``, initialised from ``config.seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return ResNet18(width=config.width, n_classes=config.n_classes, in_channels=in_channels)


def build_regularizer(model: ResNet18, config: ClassifierConfig) -> SimilarityRegularizer:
    """The untrained similarity regularizer over ``config.layers`` of ``model``."""
    return SimilarityRegularizer(
        {name: model.feature_channels[name] for name in config.layers},
        momentum=config.running_momentum,
        eps=config.clamp_eps,
    )


def restore(
    fit: ClassifierFit, config: ClassifierConfig, in_channels: int = 1
) -> tuple[ResNet18, SimilarityRegularizer]:
    """Network and regularizer of a finished fit, on CPU, in eval mode."""
    model = build_classifier(config, in_channels)
    model.load_state_dict(fit.state_dict)
    regularizer = build_regularizer(model, config)
    regularizer.load_state_dict(fit.regularizer_state)
    return model.eval(), regularizer.eval()


def learning_rate(config: ClassifierConfig, epoch: int) -> float:
    """Step schedule: ``lr * lr_decay ** ((epoch % reset_every) // decay_every)`` (epoch from 0)."""
    return config.lr * config.lr_decay ** ((epoch % config.reset_every) // config.decay_every)


def check_training_data(
    model: ResNet18, train_images: Any, train_labels: Any, config: ClassifierConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Training images (N, C, H, W) float32 and labels (N,) long, checked against ``model`` and ``config``."""
    x_all = check_images("train_images", train_images, model.in_channels)
    y_all = torch.as_tensor(np.asarray(train_labels), dtype=torch.long)
    if y_all.shape != (len(x_all),):
        raise ValueError(f"train_labels must have shape ({len(x_all)},), got {tuple(y_all.shape)}")
    if len(y_all) and (y_all.min() < 0 or y_all.max() >= config.n_classes):
        raise ValueError(
            f"train_labels must lie in [0, {config.n_classes}), got [{int(y_all.min())}, {int(y_all.max())}]"
        )
    if len(x_all) < 2:
        raise ValueError("need at least 2 training images")
    if model.fc.out_features != config.n_classes:
        raise ValueError(f"model has {model.fc.out_features} classes, config says {config.n_classes}")
    return x_all, y_all


def holdout_split(rng: np.random.Generator, n_images: int, config: ClassifierConfig) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the held-out (validation) and the training images: a random ``holdout_fraction`` split."""
    order = rng.permutation(n_images)
    n_val = int(round(config.holdout_fraction * n_images))
    if config.patience is not None and n_val == 0:
        raise ValueError(
            f"patience needs held-out images: holdout_fraction {config.holdout_fraction} of {n_images} images is 0"
        )
    return order[:n_val], order[n_val:]


def pair_source(
    stimulus_images: Any,
    similarity: Any,
    image_shape: tuple[int, ...],
    model: ResNet18,
    config: ClassifierConfig,
    device: torch.device,
) -> Callable[[], PairBatch]:
    """A draw of the next step's stimulus pairs, from the checked stimuli on ``device``.

    image_shape : (H, W) of the training images, which the stimuli must share.  The pairs are drawn
    from a generator seeded by ``(config.seed, 1)``.
    """
    stimuli = check_images("stimulus_images", stimulus_images, model.in_channels).to(device)
    if len(stimuli) < max(2, config.pair_images or 0):
        raise ValueError(
            f"need at least {max(2, config.pair_images or 0)} stimulus images to form the pairs, got {len(stimuli)}"
        )
    if stimuli.shape[2:] != image_shape:
        raise ValueError(
            f"stimulus images {tuple(stimuli.shape[2:])} and training images {tuple(image_shape)} "
            "differ in size; resize the stimuli first"
        )
    lookup = pair_lookup(similarity, len(stimuli))
    pair_rng = np.random.default_rng([config.seed, 1])
    return lambda: step_pairs(pair_rng, stimuli, lookup, config)


def build_optimizer(
    model: ResNet18, regularizer: SimilarityRegularizer, config: ClassifierConfig
) -> torch.optim.Optimizer:
    """SGD with momentum; weight decay on the network, none on the regularizer's layer-weight logits."""
    return torch.optim.SGD(
        [
            {"params": list(model.parameters()), "weight_decay": config.weight_decay},
            {"params": list(regularizer.parameters()), "weight_decay": 0.0},
        ],
        lr=config.lr,
        momentum=config.momentum,
    )


def epoch_size(n_train: int, config: ClassifierConfig) -> tuple[int, int]:
    """Classification batch size and steps per epoch; the incomplete last batch is dropped."""
    batch_size = min(config.batch_size, n_train)
    steps = max(1, n_train // batch_size)
    if config.max_steps_per_epoch is not None:
        steps = min(steps, config.max_steps_per_epoch)
    return batch_size, steps


@dataclasses.dataclass
class EpochData:
    """What every epoch of one run draws from.

    images : (N, C, H, W) training images and labels : (N,), on the training device.
    order_rng, augment_generator : the batch order and the augmentation draws.
    next_pairs : the stimulus pairs of the next step; None for the baseline.
    batch_size, steps : classification images per step and steps per epoch.
    """

    images: torch.Tensor
    labels: torch.Tensor
    order_rng: np.random.Generator
    augment_generator: torch.Generator
    next_pairs: Callable[[], PairBatch] | None
    batch_size: int
    steps: int


def train_epoch(
    model: ResNet18,
    regularizer: SimilarityRegularizer,
    optimizer: torch.optim.Optimizer,
    data: EpochData,
    config: ClassifierConfig,
    bar: Any,
) -> tuple[float, float, float]:
    """One epoch of training steps: mean cross-entropy, training accuracy and mean similarity loss
    (NaN for the baseline)."""
    batches = data.order_rng.permutation(len(data.images))
    ce_sum, correct, seen, sim_sum = 0.0, 0, 0, 0.0
    for step in range(data.steps):
        idx = torch.as_tensor(batches[step * data.batch_size : (step + 1) * data.batch_size], device=data.images.device)
        x, y = data.images[idx], data.labels[idx]
        if config.augment:
            x = augment(x, data.augment_generator)
        pairs = data.next_pairs() if data.next_pairs is not None else None
        logits, ce, sim = training_step(model, regularizer, optimizer, x, y, pairs, config)
        ce_sum += ce * len(y)
        correct += int((logits.argmax(1) == y).sum())
        seen += len(y)
        if sim is not None:
            sim_sum += sim
        bar.update()
    return ce_sum / seen, correct / seen, sim_sum / data.steps if config.regularized else float("nan")


@dataclasses.dataclass
class BestEpoch:
    """Early stopping: the epoch of highest validation accuracy so far and its weights (on CPU)."""

    validation_accuracy: float
    epoch: int
    model_state: dict[str, torch.Tensor]
    regularizer_state: dict[str, torch.Tensor]


def fit_classifier(
    model: ResNet18,
    train_images: Any,
    train_labels: Any,
    stimulus_images: Any,
    similarity: Any,
    config: ClassifierConfig,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> ClassifierFit:
    """Train ``model`` on classification, regularized towards ``similarity`` when ``config.alpha > 0``.

    Parameters
    ----------
    model : a :class:`ResNet18` (see :func:`build_classifier`); trained in place.
    train_images : (N, C, H, W) float in [0, 1]; ``holdout_fraction`` of them is held out.
    train_labels : (N,) int class labels in [0, n_classes).
    stimulus_images : (M, C, H, W) float in [0, 1], the neural stimuli resized to the training
        resolution, in the row order of ``similarity``; unused (may be None) for the baseline.
    similarity : S_neural over the stimulus images: a SimilarityStore, an (M, M) array or a
        callable ``f(i, j) -> S[i, j]``; unused (may be None) for the baseline.
    config : :class:`ClassifierConfig`.
    device : torch device; CUDA when available by default.

    Deterministic on CPU for a given ``config.seed``: data split, batch order, augmentation and pairs
    are drawn from generators seeded by it (the network's initialisation is the caller's; use
    :func:`build_classifier`).
    """
    device = resolve_device(device)
    x_all, y_all = check_training_data(model, train_images, train_labels, config)
    rng = np.random.default_rng(config.seed)
    augment_gen = torch.Generator().manual_seed(config.seed)
    val_idx, train_idx = holdout_split(rng, len(x_all), config)
    x_train = x_all[train_idx].to(device)
    model.to(device).train()
    regularizer = build_regularizer(model, config).to(device).train()
    next_pairs = (
        pair_source(stimulus_images, similarity, x_train.shape[2:], model, config, device)
        if config.regularized
        else None
    )
    data = EpochData(
        x_train, y_all[train_idx].to(device), rng, augment_gen, next_pairs, *epoch_size(len(train_idx), config)
    )
    history, best = train_epochs(model, regularizer, data, x_all[val_idx], y_all[val_idx], config, progress)
    model.eval()
    if best is not None:
        model.load_state_dict(best.model_state)
        regularizer.load_state_dict(best.regularizer_state)
    kept = len(history) if best is None else best.epoch + 1
    return ClassifierFit(
        state_dict=cpu_state(model),
        regularizer_state=cpu_state(regularizer),
        history=history,
        validation_accuracy=history[kept - 1]["validation_accuracy"] if history else None,
        layer_weights=regularizer.layer_weights(),
        n_steps=kept * data.steps,
    )


def train_epochs(
    model: ResNet18,
    regularizer: SimilarityRegularizer,
    data: EpochData,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    config: ClassifierConfig,
    progress: bool,
) -> tuple[list[dict[str, Any]], BestEpoch | None]:
    """Up to ``config.epochs`` epochs, each scored on the held-out images (x_val, y_val on CPU).

    Returns the history (see :class:`ClassifierFit`) and, with ``patience``, the best epoch.
    """
    optimizer = build_optimizer(model, regularizer, config)
    history: list[dict[str, Any]] = []
    best: BestEpoch | None = None
    bar = progress_bar(total=config.epochs * data.steps, desc="classifier", enabled=progress)
    for epoch in range(config.epochs):
        lr = learning_rate(config, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        start = time.perf_counter()
        train_loss, train_accuracy, similarity_loss = train_epoch(model, regularizer, optimizer, data, config, bar)
        val_acc = accuracy(model, x_val, y_val) if len(x_val) else None
        history.append(
            {
                "epoch": epoch,
                "lr": lr,
                "steps": data.steps,
                "train_loss": train_loss,
                "train_accuracy": train_accuracy,
                "similarity_loss": similarity_loss,
                "validation_accuracy": val_acc,
                "layer_weights": regularizer.layer_weights(),
                "seconds": time.perf_counter() - start,
            }
        )
        bar.set_postfix(loss=f"{train_loss:.3f}", val=val_acc)
        if config.patience is not None and val_acc is not None:  # with patience there is always a holdout
            if best is None or val_acc > best.validation_accuracy:
                best = BestEpoch(val_acc, epoch, cpu_state(model), cpu_state(regularizer))
            elif epoch - best.epoch >= config.patience:
                break
    bar.close()
    return history, best
