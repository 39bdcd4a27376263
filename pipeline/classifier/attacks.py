"""Minimal adversarial perturbations on a common image set, with evidence that the attack converged.

Li et al. (2019) compare arms by the size of the smallest perturbation that flips a model's decision.
A reviewer accepts such a comparison when

- every model is attacked on the **same images** (:func:`common_images`: those that every compared
  model classifies correctly), so medians are paired per image;
- the attack is a maintained minimal-norm attack from foolbox 3, run separately for L2 and L_inf
  (:data:`ATTACKS`): Carlini-Wagner (``L2CarliniWagnerAttack``) or Fast Minimum Norm
  (``L2FMNAttack``; Pintor et al. 2021) for L2, Fast Minimum Norm (``LInfFMNAttack``) for L_inf;
- the attack has **converged**: :func:`minimal_perturbations` runs it at every step count of a
  schedule and keeps, per image, the smallest perturbation found so far, so the median distance can
  only fall with more steps; :func:`flattening_step` picks the step count after which it no longer
  falls by more than a tolerance.

Images are float tensors in [0, 1] of shape (N, C, H, W); distances are in those pixel units (L2
over all C x H x W pixels).  An image for which no adversarial was found has distance +inf.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch

from pipeline.device import resolve_device
from pipeline.modules import evaluating
from pipeline.progress import progress_bar

FOOLBOX_VERSION = "3.3.4"
NORMS = ("l2", "linf")
ATTACKS = {"l2": ("fmn", "cw"), "linf": ("fmn",)}
"""The minimal attacks of each norm.  L2 FMN stalls on the pipeline's 32 x 32 classifiers: on the
robustness experiment's 20 models its median distance was flat against steps at 1.8-3.7 times
Carlini-Wagner's (foolbox's default step size, 1.0; larger on every one of the 2,000 model x image
pairs), and still 1.3 times with step sizes of 0.01-0.1 on one model (docs/results.md), so the
experiment uses "cw"."""

# Binary-search steps over Carlini-Wagner's trade-off constant: on the experiment's classifiers 7
# reached the median distance of 9 (within 0.5 %) and 5 stayed 2-10 % above it.
CW_BINARY_SEARCH_STEPS = 7


def import_foolbox():
    """Import foolbox lazily, insisting on the pinned version (attack results depend on it)."""
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")  # foolbox imports GitPython, which wants git
    try:
        import foolbox
    except ImportError as err:
        raise ImportError(
            f"the attacks need foolbox=={FOOLBOX_VERSION} (pip install 'foolbox=={FOOLBOX_VERSION}', "
            f"or the project's 'robustness' extra): {err}"
        ) from err
    if foolbox.__version__ != FOOLBOX_VERSION:
        raise RuntimeError(f"foolbox {foolbox.__version__} is installed; the pipeline is pinned to {FOOLBOX_VERSION}")
    return foolbox


def common_images(correct: np.ndarray, n: int | None = None) -> np.ndarray:
    """Indices of the images every model classifies correctly, in candidate order, at most ``n``.

    correct : (n_models, n_candidates) bool, model m classifies candidate i correctly.
    """
    correct = np.asarray(correct, dtype=bool)
    if correct.ndim != 2 or correct.shape[0] < 1:
        raise ValueError(f"correct must be (n_models >= 1, n_candidates), got shape {correct.shape}")
    index = np.flatnonzero(correct.all(axis=0))
    return index if n is None else index[:n]


def _attack(foolbox, norm: str, steps: int, method: str):
    if method not in ATTACKS.get(norm, ()):
        raise ValueError(f"no attack {method!r} for norm {norm!r}: choose from {ATTACKS}")
    if norm == "l2" and method == "cw":
        return foolbox.attacks.L2CarliniWagnerAttack(steps=steps, binary_search_steps=CW_BINARY_SEARCH_STEPS)
    if norm == "l2":
        return foolbox.attacks.L2FMNAttack(steps=steps)
    return foolbox.attacks.LInfFMNAttack(steps=steps)


def _norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    flat = delta.flatten(1).double()
    return flat.norm(dim=1) if norm == "l2" else flat.abs().amax(dim=1)


def minimal_perturbations(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    norm: str,
    schedule: Sequence[int],
    device=None,
    batch_size: int = 250,
    progress: bool = False,
    method: str = "fmn",
) -> np.ndarray:
    """Smallest adversarial perturbation per image found within each step count of ``schedule``.

    The foolbox attack ``method`` of ``norm`` (:data:`ATTACKS`) runs once per step count (FMN's
    step-size annealing depends on the step count, and Carlini-Wagner's step count is per step of its
    binary search, so a longer run is a different run).  Each
    adversarial is checked by classifying it again; row k keeps, per image, the smallest verified
    perturbation over the runs with at most ``schedule[k]`` steps, so every image's distance, and
    hence any median, is non-increasing along the schedule by construction.

    Parameters
    ----------
    images : (N, C, H, W) float in [0, 1], images the model classifies correctly.
    labels : (N,) int64 true classes.
    schedule : increasing step counts, e.g. (10, 25, 50, 100).

    Returns (len(schedule), N) float64 distances in pixel units; +inf where no adversarial was found.
    Both attacks are deterministic (they start from the clean image), so the result does not depend on a seed.
    """
    schedule = [int(s) for s in schedule]
    if not schedule or any(s < 1 for s in schedule) or sorted(set(schedule)) != schedule:
        raise ValueError(f"schedule must be increasing step counts >= 1, got {schedule}")
    if images.ndim != 4 or labels.shape != (len(images),):
        raise ValueError(
            f"images (N, C, H, W) and labels (N,) expected, got {tuple(images.shape)}, {tuple(labels.shape)}"
        )
    foolbox = import_foolbox()
    _attack(foolbox, norm, 1, method)  # an unknown norm or method fails before any work
    device = resolve_device(device)
    best = np.full((len(schedule), len(images)), np.inf)
    with evaluating(model):
        fmodel = foolbox.PyTorchModel(model.to(device), bounds=(0, 1), device=device)
        runs = [(k, lo) for k in range(len(schedule)) for lo in range(0, len(images), batch_size)]
        for k, lo in progress_bar(runs, desc=f"{norm} attack", enabled=progress):
            x = images[lo : lo + batch_size].to(device)
            y = labels[lo : lo + batch_size].to(device, torch.int64)
            attack = _attack(foolbox, norm, schedule[k], method)
            adversarial = attack.run(fmodel, x, foolbox.criteria.Misclassification(y))
            with torch.no_grad():
                fooled = (model(adversarial).argmax(1) != y).cpu().numpy()
            distance = _norm(adversarial - x, norm).cpu().numpy()
            best[k, lo : lo + len(x)] = np.where(fooled, distance, np.inf)
    return np.minimum.accumulate(best, axis=0)


def median_curve(distances: np.ndarray) -> np.ndarray:
    """(len(schedule),) median over images of each schedule row (+inf counts as larger than any)."""
    return np.median(np.asarray(distances, dtype=np.float64), axis=1)


def flattening_step(schedule: Sequence[int], medians: Sequence[float], tolerance: float = 0.02) -> int:
    """The first step count whose median is within ``tolerance`` (relative) of the last one's.

    If that is the last step count of the schedule, the curve had not yet flattened before it and
    the schedule should be extended.
    """
    values = np.asarray(medians, dtype=np.float64)
    if len(values) != len(schedule) or not len(values):
        raise ValueError("schedule and medians must be non-empty and of equal length")
    final = values[-1]
    for steps, value in zip(schedule, values):
        if np.isfinite(value) and value <= final * (1 + tolerance):
            return int(steps)
    return int(schedule[-1])
