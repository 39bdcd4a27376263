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

from pipeline.checkpoint import Checkpointer, rng_state, set_rng_state
from pipeline.classifier.batches import PairBatch, PairLookup, augment_batch, check_images, pair_lookup, step_pairs
from pipeline.classifier.config import ClassifierConfig
from pipeline.classifier.measure import accuracy
from pipeline.classifier.regularizer import SimilarityRegularizer
from pipeline.classifier.resnet import ResNet18
from pipeline.classifier.step import training_step
from pipeline.device import resolve_device
from pipeline.modules import cpu_state
from pipeline.progress import progress_bar
from pipeline.training_log import ProgressLog


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
    model: ResNet18, train_images: Any, train_labels: Any, config: ClassifierConfig, split: str = "train"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, C, H, W) float32 and labels (N,) long of ``split``, checked against ``model`` and ``config``."""
    x_all = check_images(f"{split}_images", train_images, model.in_channels)
    y_all = torch.as_tensor(np.asarray(train_labels), dtype=torch.long)
    if y_all.shape != (len(x_all),):
        raise ValueError(f"{split}_labels must have shape ({len(x_all)},), got {tuple(y_all.shape)}")
    if len(y_all) and (y_all.min() < 0 or y_all.max() >= config.n_classes):
        raise ValueError(
            f"{split}_labels must lie in [0, {config.n_classes}), got [{int(y_all.min())}, {int(y_all.max())}]"
        )
    if len(x_all) < 2:
        raise ValueError(f"need at least 2 {split} images")
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


@dataclasses.dataclass
class PairSource:
    """Draws the stimulus pairs of the next step from ``stimuli`` (M, C, H, W, on the training device).

    rng : the pairs' generator, seeded by ``(config.seed, 1)``; a checkpoint saves its state.
    """

    stimuli: torch.Tensor
    lookup: PairLookup
    config: ClassifierConfig
    rng: np.random.Generator

    def __call__(self) -> PairBatch:
        return step_pairs(self.rng, self.stimuli, self.lookup, self.config)


def pair_source(
    stimulus_images: Any,
    similarity: Any,
    image_shape: tuple[int, ...],
    model: ResNet18,
    config: ClassifierConfig,
    device: torch.device,
) -> PairSource:
    """The source of every step's stimulus pairs, from the checked stimuli on ``device``.

    image_shape : (H, W) of the training images, which the stimuli must share.
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
    return PairSource(stimuli, pair_lookup(similarity, len(stimuli)), config, np.random.default_rng([config.seed, 1]))


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
    next_pairs : draws the stimulus pairs of the next step; None for the baseline.
    batch_size, steps : classification images per step and steps per epoch.
    """

    images: torch.Tensor
    labels: torch.Tensor
    order_rng: np.random.Generator
    augment_generator: torch.Generator
    next_pairs: PairSource | None
    batch_size: int
    steps: int


@dataclasses.dataclass
class EpochTally:
    """Where training stands within an epoch: what a checkpoint taken mid-epoch needs to go on.

    epoch : the current epoch (from 0); step : its steps taken.
    epoch_start : the batch-order generator's state before the epoch's permutation (redrawn on resume).
    ce_sum, correct, seen, sim_sum : the epoch's summed cross-entropy (per image), correct and seen
        images, and summed similarity loss so far.
    """

    epoch: int = 0
    step: int = 0
    epoch_start: dict | None = None
    ce_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    sim_sum: float = 0.0


def train_epoch(
    model: ResNet18,
    regularizer: SimilarityRegularizer,
    optimizer: torch.optim.Optimizer,
    data: EpochData,
    config: ClassifierConfig,
    bar: Any,
    tally: EpochTally | None = None,
    after_step: Callable[[], None] = lambda: None,
) -> tuple[float, float, float]:
    """The (remaining) training steps of the epoch ``tally`` stands in: mean cross-entropy, training accuracy
    and mean similarity loss (NaN for the baseline).  ``after_step`` runs after each step."""
    tally = tally or EpochTally()
    if tally.step == 0:
        tally.epoch_start = dict(data.order_rng.bit_generator.state)
    elif tally.epoch_start is not None:  # resumed mid-epoch: draw the epoch's order again
        data.order_rng.bit_generator.state = tally.epoch_start
    batches = data.order_rng.permutation(len(data.images))
    for step in range(tally.step, data.steps):
        idx = torch.as_tensor(batches[step * data.batch_size : (step + 1) * data.batch_size], device=data.images.device)
        x, y = data.images[idx], data.labels[idx]
        x = augment_batch(x, data.augment_generator, config)
        pairs = data.next_pairs() if data.next_pairs is not None else None
        logits, ce, sim = training_step(model, regularizer, optimizer, x, y, pairs, config)
        tally.ce_sum += ce * len(y)
        tally.correct += int((logits.argmax(1) == y).sum())
        tally.seen += len(y)
        if sim is not None:
            tally.sim_sum += sim
        tally.step += 1
        bar.update()
        after_step()
    similarity = tally.sim_sum / data.steps if config.regularized else float("nan")
    return tally.ce_sum / tally.seen, tally.correct / tally.seen, similarity


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
    checkpoint: Checkpointer | None = None,
    progress_log: ProgressLog | None = None,
    validation: tuple[Any, Any] | None = None,
    test: tuple[Any, Any] | None = None,
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
    checkpoint : saves the training state now and then and resumes from the latest saved one (the
        result equals an uninterrupted run's on the CPU); progress_log : writes progress lines.
    validation : (images, labels) of a validation split of the set's own (no source shared with the
        training images); then no ``holdout_fraction`` of the training images is held out, and early
        stopping, if any, scores these.
    test : (images, labels) scored after every epoch into the history (``test_accuracy``) to show
        convergence; never used to choose anything.

    Deterministic on CPU for a given ``config.seed``: data split, batch order, augmentation and pairs
    are drawn from generators seeded by it (the network's initialisation is the caller's; use
    :func:`build_classifier`).
    """
    device = resolve_device(device)
    x_all, y_all = check_training_data(model, train_images, train_labels, config)
    rng = np.random.default_rng(config.seed)
    augment_gen = torch.Generator().manual_seed(config.seed)
    if validation is None:
        val_idx, train_idx = holdout_split(rng, len(x_all), config)
        x_val, y_val = x_all[val_idx], y_all[val_idx]
    else:
        train_idx = np.arange(len(x_all))
        x_val, y_val = check_training_data(model, *validation, config, split="validation")
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
    run = ClassifierRun(model, regularizer, data, config, checkpoint or Checkpointer(), progress_log)
    scored = None if test is None else check_training_data(model, *test, config, split="test")
    history, best = run.train_epochs(x_val, y_val, progress, scored)
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


class ClassifierRun:
    """The epochs of one classifier training, started afresh or from the latest checkpoint of ``checkpoint``."""

    def __init__(
        self,
        model: ResNet18,
        regularizer: SimilarityRegularizer,
        data: EpochData,
        config: ClassifierConfig,
        checkpoint: Checkpointer,
        progress_log: ProgressLog | None,
    ) -> None:
        self.model, self.regularizer, self.data, self.config = model, regularizer, data, config
        self.checkpoint, self.progress_log = checkpoint, progress_log
        self.optimizer = build_optimizer(model, regularizer, config)
        self.history: list[dict[str, Any]] = []
        self.best: BestEpoch | None = None
        self.tally = EpochTally()
        saved = checkpoint.resume()
        if saved is not None:
            self.restore(saved)
        if progress_log is not None:
            progress_log.start(self.steps_taken, config.epochs * data.steps)

    @property
    def steps_taken(self) -> int:
        return self.tally.epoch * self.data.steps + self.tally.step

    def state(self) -> dict:
        """Everything the next step depends on (see :mod:`pipeline.checkpoint`)."""
        data = self.data
        return dict(
            model=cpu_state(self.model),
            regularizer=cpu_state(self.regularizer),
            optimizer=self.optimizer.state_dict(),
            history=self.history,
            best=None if self.best is None else vars(self.best),
            tally=vars(self.tally),
            order=data.order_rng.bit_generator.state,
            augment=data.augment_generator.get_state(),
            pairs=None if data.next_pairs is None else data.next_pairs.rng.bit_generator.state,
            rng=rng_state(),
        )

    def restore(self, saved: dict) -> None:
        """Continue from a state :meth:`state` returned."""
        self.model.load_state_dict(saved["model"])
        self.regularizer.load_state_dict(saved["regularizer"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.history = saved["history"]
        self.best = None if saved["best"] is None else BestEpoch(**saved["best"])
        self.tally = EpochTally(**saved["tally"])
        self.data.order_rng.bit_generator.state = saved["order"]
        self.data.augment_generator.set_state(saved["augment"])
        if self.data.next_pairs is not None:
            self.data.next_pairs.rng.bit_generator.state = saved["pairs"]
        set_rng_state(saved["rng"])

    def after_step(self) -> None:
        """Save a checkpoint and write a progress line when due."""
        step = self.steps_taken
        if step < self.config.epochs * self.data.steps:  # a finished run needs no checkpoint
            self.checkpoint.maybe_save(step, self.state)
        if self.progress_log is not None:
            tally = self.tally
            validation = self.history[-1]["validation_accuracy"] if self.history else None
            self.progress_log.update(
                step, epoch=tally.epoch, loss=tally.ce_sum / max(tally.seen, 1), validation_accuracy=validation
            )

    def train_epochs(
        self, x_val: torch.Tensor, y_val: torch.Tensor, progress: bool, test: tuple | None = None
    ) -> tuple[list[dict[str, Any]], BestEpoch | None]:
        """The epochs left of ``config.epochs``, each scored on the held-out images (x_val, y_val on CPU)
        and, when given, on the ``test`` images (monitoring only: ``test_accuracy`` in the history).

        Returns the history (see :class:`ClassifierFit`) and, with ``patience``, the best epoch.
        """
        config, model, history = self.config, self.model, self.history
        bar = progress_bar(total=config.epochs * self.data.steps, desc="classifier", enabled=progress)
        bar.update(self.steps_taken)
        while self.tally.epoch < config.epochs:
            epoch = self.tally.epoch
            lr = learning_rate(config, epoch)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            start = time.perf_counter()
            train_loss, train_accuracy, similarity_loss = train_epoch(
                model, self.regularizer, self.optimizer, self.data, config, bar, self.tally, self.after_step
            )
            val_acc = accuracy(model, x_val, y_val) if len(x_val) else None
            history.append(
                {
                    "epoch": epoch,
                    "lr": lr,
                    "steps": self.data.steps,
                    "train_loss": train_loss,
                    "train_accuracy": train_accuracy,
                    "similarity_loss": similarity_loss,
                    "validation_accuracy": val_acc,
                    **({} if test is None else {"test_accuracy": accuracy(model, *test)}),
                    "layer_weights": self.regularizer.layer_weights(),
                    "seconds": time.perf_counter() - start,
                }
            )
            bar.set_postfix(loss=f"{train_loss:.3f}", val=val_acc)
            self.tally = EpochTally(epoch=epoch + 1)
            if config.patience is not None and val_acc is not None:  # with patience there is always a holdout
                if self.best is None or val_acc > self.best.validation_accuracy:
                    self.best = BestEpoch(val_acc, epoch, cpu_state(model), cpu_state(self.regularizer))
                elif epoch - self.best.epoch >= config.patience:
                    break
        bar.close()
        return history, self.best
