"""Training image classifiers with and without neural-similarity regularization (Li et al. 2019).

The loss is the paper's ``L = cross-entropy + alpha * similarity loss``.  Each iteration puts an
augmented batch of training images through the network and, when ``alpha > 0``, a batch of
stimulus pairs, then takes **one** SGD update on the summed loss (:func:`training_step`).  So every
arm, baseline included, gets the same number of updates, with momentum and weight decay applied
once per iteration, and the arms differ only by the similarity term: with ``alpha = 0`` the
regularized path reproduces the baseline's weights.

The stimulus pairs of a step are either the paper's ``pair_batch`` independent random pairs of
distinct images (``2 * pair_batch`` images through the network) or, with ``pair_images = n``, every
one of the ``n (n - 1) / 2`` pairs among ``n`` distinct random images.  Both estimate the same loss,
the mean over pairs of distinct stimulus images; the second gets 120 pairs from 16 images where the
first gets 16 from 32, so it costs half the network passes and averages over more pairs.

One SGD optimiser (momentum, weight decay on the network but not on the
layer-weight logits ``gamma``) and the step schedule
``lr(epoch) = lr * lr_decay ** ((epoch % reset_every) // decay_every)``.

Batch norm: the running statistics, which test-time evaluation uses, come from the classification
batches in every arm.  The stimulus batch is normalised with its own batch statistics (train mode)
and by default (``pair_bn_update=False``) leaves the running statistics alone.

``control`` only labels what the caller passes as ``similarity`` (neural, shuffled, single-trial
or pixel similarity); training is identical for all of them.  ``alpha == 0`` (control ``"none"``)
is the unregularized baseline.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import time
from typing import Any, Callable, Literal, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.classifier.regularizer import SimilarityRegularizer
from pipeline.classifier.resnet import FEATURE_LAYERS, ResNet18
from pipeline.config import Config, ConfigError, added_field
from pipeline.device import resolve_device
from pipeline.layout import standard_layout
from pipeline.modules import cpu_state, evaluating
from pipeline.progress import progress_bar

PairLookup = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class ClassifierConfig(Config):
    """Settings of one classifier training run (defaults: the paper's)."""

    width: int = 64  # channels of the first ResNet stage
    n_classes: int = 10
    layers: tuple[str, ...] = FEATURE_LAYERS  # layers entering S_model
    alpha: float = 20.0  # weight of the similarity loss; 0 = unregularized baseline
    control: Literal["none", "neural", "shuffled", "single_trial", "pixel", "lowpass"] = "neural"
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
    patience: Optional[int] = added_field(None)
    # stimulus images per step whose every pair enters the similarity loss; None: ``pair_batch``
    # independent pairs, as in the paper
    pair_images: Optional[int] = added_field(None)

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


@contextlib.contextmanager
def frozen_batchnorm_statistics(model: nn.Module, frozen: bool = True):
    """Batch norm layers keep using batch statistics in train mode but leave running statistics as is.

    torch updates ``running = (1 - momentum) * running + momentum * batch``; momentum 0 keeps them.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)] if frozen else []
    saved = [m.momentum for m in norms]
    try:
        for m in norms:
            m.momentum = 0.0
        yield
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum


def _check_images(name: str, images: Any, channels: int | None = None) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images, dtype=torch.float32)
    if x.ndim != 4 or (channels is not None and x.shape[1] != channels):
        raise ValueError(f"{name} must be (N, {channels or 'C'}, H, W), got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contain non-finite values")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"{name} must lie in [0, 1], got range [{float(x.min()):.3g}, {float(x.max()):.3g}]")
    return x


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
    x_all = _check_images("train_images", train_images, model.in_channels)
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

    rng = np.random.default_rng(config.seed)
    augment_gen = torch.Generator().manual_seed(config.seed)
    order = rng.permutation(len(x_all))
    n_val = int(round(config.holdout_fraction * len(x_all)))
    if config.patience is not None and n_val == 0:
        raise ValueError(
            f"patience needs held-out images: holdout_fraction {config.holdout_fraction} of {len(x_all)} images is 0"
        )
    val_idx, train_idx = order[:n_val], order[n_val:]
    x_train, y_train = x_all[train_idx].to(device), y_all[train_idx].to(device)
    x_val, y_val = x_all[val_idx], y_all[val_idx]

    model.to(device).train()
    regularizer = build_regularizer(model, config).to(device).train()
    if config.regularized:
        stimuli = _check_images("stimulus_images", stimulus_images, model.in_channels).to(device)
        if len(stimuli) < max(2, config.pair_images or 0):
            raise ValueError(
                f"need at least {max(2, config.pair_images or 0)} stimulus images to form the pairs, got {len(stimuli)}"
            )
        if stimuli.shape[2:] != x_train.shape[2:]:
            raise ValueError(
                f"stimulus images {tuple(stimuli.shape[2:])} and training images {tuple(x_train.shape[2:])} "
                "differ in size; resize the stimuli first"
            )
        lookup = pair_lookup(similarity, len(stimuli))
        pair_rng = np.random.default_rng([config.seed, 1])

    optimizer = torch.optim.SGD(
        [
            {"params": list(model.parameters()), "weight_decay": config.weight_decay},
            {"params": list(regularizer.parameters()), "weight_decay": 0.0},
        ],
        lr=config.lr,
        momentum=config.momentum,
    )
    batch_size = min(config.batch_size, len(train_idx))
    steps_per_epoch = max(1, len(train_idx) // batch_size)  # the incomplete last batch is dropped
    if config.max_steps_per_epoch is not None:
        steps_per_epoch = min(steps_per_epoch, config.max_steps_per_epoch)

    history: list[dict[str, Any]] = []
    # (validation accuracy, epoch, network state, regularizer state) of the best epoch, with patience
    best: tuple[float, int, dict[str, torch.Tensor], dict[str, torch.Tensor]] | None = None
    bar = progress_bar(total=config.epochs * steps_per_epoch, desc="classifier", enabled=progress)
    for epoch in range(config.epochs):
        lr = learning_rate(config, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        start = time.perf_counter()
        batches = rng.permutation(len(train_idx))
        ce_sum, correct, seen, sim_sum = 0.0, 0, 0, 0.0
        for step in range(steps_per_epoch):
            idx = torch.as_tensor(batches[step * batch_size : (step + 1) * batch_size], device=device)
            x, y = x_train[idx], y_train[idx]
            if config.augment:
                x = augment(x, augment_gen)
            pairs = step_pairs(pair_rng, stimuli, lookup, config) if config.regularized else None
            logits, ce, sim = training_step(model, regularizer, optimizer, x, y, pairs, config)
            ce_sum += ce * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            if sim is not None:
                sim_sum += sim
            bar.update()
        val_acc = accuracy(model, x_val, y_val) if n_val else None
        history.append(
            {
                "epoch": epoch,
                "lr": lr,
                "steps": steps_per_epoch,
                "train_loss": ce_sum / seen,
                "train_accuracy": correct / seen,
                "similarity_loss": sim_sum / steps_per_epoch if config.regularized else float("nan"),
                "validation_accuracy": val_acc,
                "layer_weights": regularizer.layer_weights(),
                "seconds": time.perf_counter() - start,
            }
        )
        bar.set_postfix(loss=f"{history[-1]['train_loss']:.3f}", val=val_acc)
        if config.patience is not None and val_acc is not None:  # with patience there is always a holdout
            if best is None or val_acc > best[0]:
                best = (val_acc, epoch, cpu_state(model), cpu_state(regularizer))
            elif epoch - best[1] >= config.patience:
                break
    bar.close()
    model.eval()
    if best is not None:
        model.load_state_dict(best[2])
        regularizer.load_state_dict(best[3])
    kept = len(history) if best is None else best[1] + 1
    return ClassifierFit(
        state_dict=cpu_state(model),
        regularizer_state=cpu_state(regularizer),
        history=history,
        validation_accuracy=history[kept - 1]["validation_accuracy"] if history else None,
        layer_weights=regularizer.layer_weights(),
        n_steps=kept * steps_per_epoch,
    )


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


def training_step(
    model: ResNet18,
    regularizer: SimilarityRegularizer,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    pairs: PairBatch | None,
    config: ClassifierConfig,
) -> tuple[torch.Tensor, float, float | None]:
    """One optimizer update on ``cross-entropy + alpha * similarity loss`` (the baseline: ``pairs`` None).

    Every arm takes exactly one update per iteration, so weight decay and momentum act once per
    iteration in all of them; the arms differ only by the similarity term, and with ``alpha = 0``
    the regularized path gives the baseline's weights.  Batch norm: the running statistics come
    from the classification batches in every arm; the stimulus pairs are normalised with their
    own batch statistics and leave the running ones alone (unless ``config.pair_bn_update``).

    Returns the logits (B, n_classes, detached), the cross-entropy and the unweighted similarity
    loss (None for the baseline).
    """
    logits = model(images)
    loss = F.cross_entropy(logits, labels)
    similarity_loss = None
    total = loss
    if pairs is not None:
        with frozen_batchnorm_statistics(model, frozen=not config.pair_bn_update):
            _, features = model(pairs.images, return_features=config.layers)
        assert pairs.first is not None and pairs.second is not None  # filled in by PairBatch
        similarity_loss = regularizer.pair_loss(features, pairs.first, pairs.second, pairs.target)
        total = loss + config.alpha * similarity_loss
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()
    return (logits.detach(), float(loss.detach()), None if similarity_loss is None else float(similarity_loss.detach()))


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
    stimuli = _check_images("stimulus_images", stimulus_images, model.in_channels)
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
