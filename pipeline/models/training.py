"""Training of an encoder on one scan: Adam, early stopping on validation, learning-rate decay.

Schedule (Ecker et al. 2019): evaluate on the validation trials every ``eval_every`` iterations;
after ``patience`` evaluations without improvement restore the best checkpoint and divide the
learning rate by 10 (``lr_decay_factor``), ``lr_decay_steps`` times; the next stall stops training.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import nn

from pipeline.config import Config, ConfigError
from pipeline.data.dataset import ScanTensors
from pipeline.device import resolve_device
from pipeline.models.losses import get_loss
from pipeline.models.metrics import single_trial_correlation
from pipeline.modules import cpu_state, evaluating
from pipeline.progress import progress_bar

if TYPE_CHECKING:
    from pipeline.models.encoder import Encoder


@dataclasses.dataclass(frozen=True)
class TrainerConfig(Config):
    """Optimisation settings.

    batch_size : clipped to the number of training trials.
    eval_every : iterations between validation evaluations; 0 means once per epoch.
    patience : evaluations without improvement before the learning rate drops (or training stops).
    lr_decay_steps, lr_decay_factor : number and factor of learning-rate drops.
    stop_on : validation criterion, "correlation" (mean single-trial Pearson over units, higher is
        better) or "loss" (validation loss without regularizers, lower is better).
    min_improvement : a score must beat the best by more than this to count as an improvement.
    seed : seeds torch (e.g. readout jitter) and the batch order.
    """

    lr: float = 0.002
    batch_size: int = 256
    eval_every: int = 50
    patience: int = 5
    lr_decay_steps: int = 2
    lr_decay_factor: float = 0.1
    max_iterations: int = 20000
    seed: int = 0
    loss: Literal["poisson"] = "poisson"
    stop_on: Literal["correlation", "loss"] = "correlation"
    min_improvement: float = 0.0

    def validate(self) -> None:
        if self.lr <= 0 or not 0 < self.lr_decay_factor < 1:
            raise ConfigError("lr must be positive and lr_decay_factor in (0, 1)")
        if self.batch_size < 1 or self.max_iterations < 1 or self.eval_every < 0:
            raise ConfigError("batch_size and max_iterations must be >= 1, eval_every >= 0")
        if self.patience < 1 or self.lr_decay_steps < 0 or self.min_improvement < 0:
            raise ConfigError("patience must be >= 1, lr_decay_steps and min_improvement >= 0")


@dataclasses.dataclass
class FitResult:
    """Outcome of :func:`fit`.

    state_dict : best parameters (on the CPU), also loaded into the model.
    best_correlation, best_loss : validation scores of that state.
    best_iteration : iteration at which it was reached (0 = the initial model).
    history : one dict per evaluation, the first of the initial model: iteration, lr, train_loss
        (mean since the last evaluation, regularizers included; None at iteration 0), val_loss,
        val_correlation.
    iterations : optimisation steps taken.
    stop_reason : "patience" or "max_iterations".
    """

    state_dict: dict[str, torch.Tensor]
    best_correlation: float
    best_loss: float
    best_iteration: int
    history: list[dict]
    iterations: int
    stop_reason: str


def _forward(model: nn.Module, batch) -> torch.Tensor:
    return model(batch.images, behavior=batch.behavior, pupil_center=batch.pupil_center)


@torch.no_grad()
def predict(
    model: nn.Module,
    data: ScanTensors,
    device: torch.device | str | None = None,
    batch_size: int = 512,
    original_units: bool = False,
) -> np.ndarray:
    """(n_trials, n_units) predicted rates for every trial of ``data``, in eval mode.

    Model units (responses divided by the training std) unless ``original_units``, which multiplies
    by ``data.response_std``.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    data = data.to(device)
    with evaluating(model):
        out = (
            torch.cat([_forward(model, batch).float().cpu() for batch in data.batches(batch_size)])
            if len(data)
            else torch.zeros(0, data.n_units)
        )
    pred = out.double().numpy()
    return pred * data.response_std if original_units else pred


def evaluate(model: nn.Module, data: ScanTensors, loss: str = "poisson", batch_size: int = 512) -> dict:
    """Validation scores of ``model`` on ``data`` (already on the model's device): loss, correlation."""
    pred = predict(model, data, batch_size=batch_size)
    target = data.responses.cpu().double().numpy()
    loss_value = float(get_loss(loss)(torch.from_numpy(pred), torch.from_numpy(target)))
    return {"loss": loss_value, "correlation": float(single_trial_correlation(pred, target).mean())}


@dataclasses.dataclass
class Plateau:
    """Early stopping with learning-rate drops: the best validation scores so far and the stalls since.

    best : scores (``loss``, ``correlation``) of ``best_state`` (on the CPU), reached at ``best_iteration``.
    stalls : evaluations since the last improvement; decays : learning-rate drops taken.
    """

    config: TrainerConfig
    best: dict
    best_state: dict[str, torch.Tensor]
    best_iteration: int = 0
    stalls: int = 0
    decays: int = 0

    def score(self, scores: dict) -> float:
        """The criterion ``config.stop_on``, signed so that higher is better."""
        sign = 1.0 if self.config.stop_on == "correlation" else -1.0
        return sign * scores[self.config.stop_on]

    def update(self, scores: dict, iteration: int, model: nn.Module) -> Literal["go on", "drop lr", "stop"]:
        """Record one evaluation of ``model``: keep its state if it improved, count a stall if not.

        After ``patience`` stalls the learning rate drops (``lr_decay_steps`` times), then training stops.
        """
        if self.score(scores) > self.score(self.best) + self.config.min_improvement:
            self.best, self.best_iteration, self.stalls = scores, iteration, 0
            self.best_state = cpu_state(model)
            return "go on"
        self.stalls += 1
        if self.stalls < self.config.patience:
            return "go on"
        if self.decays == self.config.lr_decay_steps:
            return "stop"
        self.decays, self.stalls = self.decays + 1, 0
        return "drop lr"


def fit(
    model: Encoder,
    data: ScanTensors,
    config: TrainerConfig = TrainerConfig(),
    device: torch.device | str | None = None,
    progress: bool = True,
) -> FitResult:
    """Train ``model`` on the "train" trials of ``data``, early-stopping on the "validation" trials.

    The model ends in eval mode holding the best state.  Deterministic for a given seed and
    initial model on the CPU.
    """
    device = resolve_device(device)
    train, validation = data.split("train"), data.split("validation")
    if len(train) == 0:
        raise ValueError("fit: the data has no (non-withheld) training trials")
    if len(validation) < 2:
        raise ValueError(f"fit: needs at least two validation trials, found {len(validation)}")
    torch.manual_seed(config.seed)
    model.to(device)
    train, validation = train.to(device), validation.to(device)
    initial = evaluate(model, validation, config.loss)
    plateau = Plateau(config, initial, cpu_state(model))
    history = [
        dict(
            iteration=0, lr=config.lr, train_loss=None, val_loss=initial["loss"], val_correlation=initial["correlation"]
        )
    ]
    bar = progress_bar(total=config.max_iterations, enabled=progress, desc="fit", leave=False)
    iterations, stop_reason = optimise(model, train, validation, config, plateau, history, bar)
    bar.close()
    model.load_state_dict(plateau.best_state)
    model.eval()
    return FitResult(
        state_dict=plateau.best_state,
        best_correlation=plateau.best["correlation"],
        best_loss=plateau.best["loss"],
        best_iteration=plateau.best_iteration,
        history=history,
        iterations=iterations,
        stop_reason=stop_reason,
    )


def optimise(
    model: Encoder,
    train: ScanTensors,
    validation: ScanTensors,
    config: TrainerConfig,
    plateau: Plateau,
    history: list[dict],
    bar: Any,
) -> tuple[int, str]:
    """Adam steps on shuffled training batches, evaluated every ``eval_every`` iterations until the
    plateau stops training or ``max_iterations`` is reached.

    Appends one entry per evaluation to ``history``; returns the iterations taken and the stop reason.
    """
    order = torch.Generator().manual_seed(config.seed)
    loss_fn = get_loss(config.loss)
    batch_size = min(config.batch_size, len(train))
    eval_every = config.eval_every or math.ceil(len(train) / batch_size)
    lr = config.lr
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    iteration, running, steps = 0, 0.0, 0
    model.train()
    while iteration < config.max_iterations:
        for batch in train.batches(batch_size, shuffle=True, generator=order):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(_forward(model, batch), batch.responses) + model.regularizer()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"fit: training loss became {loss.item()} at iteration {iteration}")
            loss.backward()
            optimizer.step()
            iteration += 1
            running, steps = running + loss.item(), steps + 1
            bar.update()
            if iteration % eval_every and iteration < config.max_iterations:
                continue
            scores = evaluate(model, validation, config.loss)
            history.append(
                dict(
                    iteration=iteration,
                    lr=lr,
                    train_loss=running / steps,
                    val_loss=scores["loss"],
                    val_correlation=scores["correlation"],
                )
            )
            running, steps = 0.0, 0
            bar.set_postfix(val_corr=f"{scores['correlation']:.3f}", lr=f"{lr:.0e}")
            action = plateau.update(scores, iteration, model)
            if action == "stop":
                return iteration, "patience"
            if action == "drop lr":
                # A stall means the current trajectory overshot: continue from the best state with a
                # smaller step and fresh Adam moments.
                model.load_state_dict(plateau.best_state)
                lr *= config.lr_decay_factor
                optimizer = torch.optim.Adam(model.parameters(), lr=lr)
            model.train()
            if iteration >= config.max_iterations:
                break
    return iteration, "max_iterations"
