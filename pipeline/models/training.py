"""Training of an encoder on one scan: Adam, early stopping on validation, learning-rate decay.

Schedule (Ecker et al. 2019): evaluate on the validation trials every ``eval_every`` iterations;
after ``patience`` evaluations without improvement restore the best checkpoint and divide the
learning rate by 10 (``lr_decay_factor``), ``lr_decay_steps`` times; the next stall stops training.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import nn

from pipeline.checkpoint import Checkpointer, rng_state, set_rng_state
from pipeline.config import Config, ConfigError
from pipeline.data.dataset import ScanTensors
from pipeline.device import resolve_device
from pipeline.models.losses import get_loss
from pipeline.models.metrics import single_trial_correlation
from pipeline.modules import cpu_state, evaluating
from pipeline.progress import progress_bar
from pipeline.training_log import ProgressLog

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


@dataclasses.dataclass
class Cursor:
    """Where an optimisation stands, all a checkpoint needs besides the model, optimizer and plateau.

    iteration : steps taken; lr : the current learning rate.
    position : batches of the current epoch taken; epoch_start : the batch-order generator's state
        before the current epoch's permutation was drawn (redrawn on resume).
    running, steps : training loss summed over the steps since the last evaluation, and their number.
    """

    lr: float
    iteration: int = 0
    position: int = 0
    epoch_start: torch.Tensor | None = None
    running: float = 0.0
    steps: int = 0


def fit(
    model: Encoder,
    data: ScanTensors,
    config: TrainerConfig = TrainerConfig(),
    device: torch.device | str | None = None,
    progress: bool = True,
    checkpoint: Checkpointer | None = None,
    progress_log: ProgressLog | None = None,
) -> FitResult:
    """Train ``model`` on the "train" trials of ``data``, early-stopping on the "validation" trials.

    The model ends in eval mode holding the best state.  Deterministic for a given seed and
    initial model on the CPU.  ``checkpoint`` saves the training state now and then and resumes
    from the latest saved one (the result equals an uninterrupted run's on the CPU);
    ``progress_log`` writes progress lines.
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
    run = Run(model, train, validation, config, checkpoint or Checkpointer(), progress_log)
    bar = progress_bar(total=config.max_iterations, enabled=progress, desc="fit", leave=False)
    bar.update(run.cursor.iteration)
    stop_reason = run.optimise(bar)
    bar.close()
    model.load_state_dict(run.plateau.best_state)
    model.eval()
    plateau = run.plateau
    return FitResult(
        state_dict=plateau.best_state,
        best_correlation=plateau.best["correlation"],
        best_loss=plateau.best["loss"],
        best_iteration=plateau.best_iteration,
        history=run.history,
        iterations=run.cursor.iteration,
        stop_reason=stop_reason,
    )


class Run:
    """One optimisation of an encoder: Adam steps on shuffled training batches, evaluated every
    ``eval_every`` iterations until the plateau stops training or ``max_iterations`` is reached;
    started afresh or from the latest checkpoint of ``checkpoint``.

    ``history`` gets one entry per evaluation.
    """

    def __init__(
        self,
        model: Encoder,
        train: ScanTensors,
        validation: ScanTensors,
        config: TrainerConfig,
        checkpoint: Checkpointer,
        progress_log: ProgressLog | None,
    ) -> None:
        self.model, self.train, self.validation, self.config = model, train, validation, config
        self.checkpoint, self.progress_log = checkpoint, progress_log
        self.order = torch.Generator().manual_seed(config.seed)
        saved = checkpoint.resume()
        if saved is None:
            initial = evaluate(model, validation, config.loss)
            self.plateau = Plateau(config, initial, cpu_state(model))
            self.history = [
                dict(
                    iteration=0,
                    lr=config.lr,
                    train_loss=None,
                    val_loss=initial["loss"],
                    val_correlation=initial["correlation"],
                )
            ]
            self.cursor = Cursor(lr=config.lr)
            self.optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        else:
            self.restore(saved)
        if progress_log is not None:
            progress_log.start(self.cursor.iteration, config.max_iterations)

    def state(self) -> dict:
        """Everything the next step depends on (see :mod:`pipeline.checkpoint`)."""
        plateau = self.plateau
        return dict(
            model=cpu_state(self.model),
            optimizer=self.optimizer.state_dict(),
            plateau=dict(
                best=plateau.best,
                best_state=plateau.best_state,
                best_iteration=plateau.best_iteration,
                stalls=plateau.stalls,
                decays=plateau.decays,
            ),
            history=self.history,
            cursor=vars(self.cursor),
            rng=rng_state(),
        )

    def restore(self, saved: dict) -> None:
        """Continue from a state :meth:`state` returned."""
        self.model.load_state_dict(saved["model"])
        self.plateau = Plateau(self.config, **saved["plateau"])
        self.history = saved["history"]
        self.cursor = Cursor(**saved["cursor"])
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.cursor.lr)
        self.optimizer.load_state_dict(saved["optimizer"])
        set_rng_state(saved["rng"])

    def optimise(self, bar: Any) -> str:
        """Train until the plateau or ``max_iterations`` stops it; return the stop reason."""
        config, cursor = self.config, self.cursor
        loss_fn = get_loss(config.loss)
        batch_size = min(config.batch_size, len(self.train))
        eval_every = config.eval_every or math.ceil(len(self.train) / batch_size)
        self.model.train()
        while cursor.iteration < config.max_iterations:
            if cursor.position == 0:
                cursor.epoch_start = self.order.get_state()
            elif cursor.epoch_start is not None:  # resumed mid-epoch: the epoch's order again, less the batches taken
                self.order.set_state(cursor.epoch_start)
            batches = self.train.batches(batch_size, shuffle=True, generator=self.order)
            for batch in itertools.islice(batches, cursor.position, None):
                self.step(loss_fn, batch)
                bar.update()
                if cursor.iteration % eval_every == 0 or cursor.iteration >= config.max_iterations:
                    if self.evaluate(bar) == "stop":
                        return "patience"
                if cursor.iteration < config.max_iterations:  # a finished run needs no checkpoint
                    self.checkpoint.maybe_save(cursor.iteration, self.state)
                if self.progress_log is not None:
                    last = self.history[-1]
                    self.progress_log.update(
                        cursor.iteration,
                        loss=self.last_loss,
                        val_correlation=last["val_correlation"],
                        val_loss=last["val_loss"],
                    )
                if cursor.iteration >= config.max_iterations:
                    break
            cursor.position = 0
        return "max_iterations"

    last_loss: float | None = None
    """The training loss of the latest step (regularizers included)."""

    def step(self, loss_fn, batch) -> None:
        """One Adam step on ``batch``."""
        model, cursor = self.model, self.cursor
        self.optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(_forward(model, batch), batch.responses) + model.regularizer()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"fit: training loss became {loss.item()} at iteration {cursor.iteration}")
        loss.backward()
        self.optimizer.step()
        self.last_loss = loss.item()
        cursor.iteration += 1
        cursor.position += 1
        cursor.running, cursor.steps = cursor.running + self.last_loss, cursor.steps + 1

    def evaluate(self, bar: Any) -> str:
        """Score the model on the validation trials, record it and act on the plateau's verdict."""
        cursor, config = self.cursor, self.config
        scores = evaluate(self.model, self.validation, config.loss)
        self.history.append(
            dict(
                iteration=cursor.iteration,
                lr=cursor.lr,
                train_loss=cursor.running / cursor.steps,
                val_loss=scores["loss"],
                val_correlation=scores["correlation"],
            )
        )
        cursor.running, cursor.steps = 0.0, 0
        bar.set_postfix(val_corr=f"{scores['correlation']:.3f}", lr=f"{cursor.lr:.0e}")
        action = self.plateau.update(scores, cursor.iteration, self.model)
        if action == "drop lr":
            # A stall means the current trajectory overshot: continue from the best state with a
            # smaller step and fresh Adam moments.
            self.model.load_state_dict(self.plateau.best_state)
            cursor.lr *= config.lr_decay_factor
            self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cursor.lr)
        self.model.train()
        return action
