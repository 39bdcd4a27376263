"""One predictive-model experiment: build an encoder, fit it, score it on the test tier.

This is what ``TrainedModel.make`` runs; benchmarks compare it with a bare PyTorch loop.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch

from pipeline import stats
from pipeline.checkpoint import Checkpointer
from pipeline.data.dataset import ScanTensors
from pipeline.device import resolve_device
from pipeline.models import metrics
from pipeline.models.encoder import ModelConfig, build_encoder
from pipeline.models.training import FitResult, TrainerConfig, fit, predict
from pipeline.training_log import ProgressLog


@dataclasses.dataclass
class TestScores:
    """Per-unit scores on the test tier (repeated images).

    correlation : (n_units,) Pearson correlation of image-averaged predictions with
        repeat-averaged responses.
    single_trial : (n_units,) Pearson correlation over single test trials.
    feve : (n_units,) fraction of explainable variance explained.
    explainable : (n_units,) fraction of explainable variance of the test responses.
    """

    correlation: np.ndarray
    single_trial: np.ndarray
    feve: np.ndarray
    explainable: np.ndarray

    @property
    def mean_feve(self) -> float:
        """FEVE over the units with enough explainable variance (see :func:`metrics.population_feve`)."""
        return metrics.population_feve(self.feve, self.explainable)


@dataclasses.dataclass
class Experiment:
    """A fitted encoder and its scores."""

    model: torch.nn.Module
    fit: FitResult
    test: TestScores
    seconds: float
    device: str


def score(model: torch.nn.Module, data: ScanTensors, device: torch.device | str | None = None) -> TestScores:
    """Scores of ``model`` on the non-withheld test trials of ``data`` (model units)."""
    test = data.split("test")
    if len(test) == 0:
        raise ValueError("score: the data has no (non-withheld) test trials")
    pred = predict(model, test, device=device)
    target = test.responses.double().numpy()
    return TestScores(
        correlation=metrics.test_correlation(pred, target, test.image_ids),
        single_trial=metrics.single_trial_correlation(pred, target),
        feve=metrics.feve(pred, target, test.image_ids),
        explainable=stats.explainable_variance(target, test.image_ids),
    )


def run(
    model_config: ModelConfig,
    trainer_config: TrainerConfig,
    data: ScanTensors,
    seed: int,
    device: str | torch.device | None = None,
    progress: bool = True,
    checkpoint: Checkpointer | None = None,
    progress_log: ProgressLog | None = None,
) -> Experiment:
    """Initialise an encoder with ``seed``, fit it on ``data`` and score it on the test tier.

    ``checkpoint`` and ``progress_log``: see :func:`~pipeline.models.training.fit`.
    """
    device = resolve_device(device)
    start = time.perf_counter()
    torch.manual_seed(seed)
    train = data.split("train")
    model = build_encoder(model_config, data.n_units, data.image_shape, mean_responses=train.mean_responses())
    settings = trainer_config.replace(seed=seed)
    result = fit(
        model, data, settings, device=device, progress=progress, checkpoint=checkpoint, progress_log=progress_log
    )
    scores = score(model, data, device=device)
    return Experiment(model=model, fit=result, test=scores, seconds=time.perf_counter() - start, device=str(device))


def state_to_arrays(state_dict: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """A state dict as plain numpy arrays: storable without pickle, loadable anywhere."""
    return {name: tensor.detach().cpu().numpy() for name, tensor in state_dict.items()}


def arrays_to_state(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(np.array(value)) for name, value in arrays.items()}


def load_encoder(
    model_config: ModelConfig,
    n_units: int,
    image_shape: tuple[int, int],
    weights: dict[str, np.ndarray],
    device: str | torch.device | None = None,
) -> torch.nn.Module:
    """Rebuild a stored encoder from its config, size and weights, in eval mode on ``device``."""
    model = build_encoder(model_config, n_units, (image_shape[0], image_shape[1]))
    model.load_state_dict(arrays_to_state(weights))
    return model.to(resolve_device(device)).eval()
