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
  falls by more than a tolerance;
- a **failed attack counts as failed**: an image has a finite distance only when the attack itself
  found an adversarial, the returned image is not the attack's fallback and the model, asked again,
  misclassifies it; :func:`failure_count` says how many images every median stands on;
- a second, independent L_inf attack (DeepFool, ``method="deepfool"``) cross-checks FMN's L_inf
  distances on a subset of images (:func:`linf_cross_check`).

Images are float tensors in [0, 1] of shape (N, C, H, W); distances are in those pixel units (L2
over all C x H x W pixels).  An image for which no adversarial was found has distance +inf.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Sequence

import numpy as np
import torch

from pipeline.device import resolve_device
from pipeline.modules import evaluating
from pipeline.progress import progress_bar

FOOLBOX_VERSION = "3.3.4"
NORMS = ("l2", "linf")
ATTACKS = {"l2": ("fmn", "cw"), "linf": ("fmn", "deepfool")}
"""The minimal attacks of each norm.  L2 FMN stalls on the pipeline's 32 x 32 classifiers: on the
robustness experiment's 20 models its median distance was flat against steps at 1.8-3.7 times
Carlini-Wagner's (foolbox's default step size, 1.0; larger on every one of the 2,000 model x image
pairs), and still 1.3 times with step sizes of 0.01-0.1 on one model (docs/results.md), so the
experiment uses "cw".  L_inf DeepFool (Moosavi-Dezfooli et al. 2016) is the cross-check of L_inf FMN
(:func:`linf_cross_check`): a different algorithm (linearise the decision boundary, step onto it)
that shares no code path with FMN's projected, annealed steps."""

# DeepFool steps 2 % past its linearised boundary (foolbox's default), so on a linear model its
# distance is the exact minimum times 1.02 (+ 1e-4 it adds for stability).
DEEPFOOL_OVERSHOOT = 0.02

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
    if method == "deepfool":
        return foolbox.attacks.LinfDeepFoolAttack(steps=steps, overshoot=DEEPFOOL_OVERSHOOT)
    return foolbox.attacks.LInfFMNAttack(steps=steps)


@functools.cache
def _recording_misclassification(foolbox):
    """foolbox's ``Misclassification`` criterion that also remembers, per image, whether the attack
    ever judged one of its candidates adversarial (``found``, (N,) bool torch tensor).

    Carlini-Wagner and FMN keep a best-so-far adversarial that starts as a fallback (CW: the all-zero
    image; FMN: the clean image) and is replaced only by a candidate this criterion called
    adversarial, so ``found`` is exactly "the attack succeeded" (foolbox 3.3.4 returns no such flag:
    the success of ``Attack.__call__`` re-classifies the returned image, which calls CW's black
    fallback a success whenever the model misclassifies a black image)."""

    class RecordingMisclassification(foolbox.criteria.Misclassification):
        def __init__(self, labels: torch.Tensor):
            super().__init__(labels)
            self.found = torch.zeros(len(labels), dtype=torch.bool, device=labels.device)

        def __call__(self, perturbed, outputs):
            is_adversarial = super().__call__(perturbed, outputs)
            self.found |= getattr(is_adversarial, "raw", is_adversarial).to(self.found.device)
            return is_adversarial

    return RecordingMisclassification


def _attack_succeeded(method: str, found: torch.Tensor, adversarial: torch.Tensor) -> torch.Tensor:
    """(N,) bool: whether the attack reports success for each image and did not return its fallback.

    DeepFool returns its last iterate, which it never judges (its loop checks an iterate before the
    next step), so only the re-classification the caller does can tell; CW and FMN report ``found``.
    CW's fallback is additionally recognised as the image that is exactly zero everywhere: every
    candidate CW makes is ``(tanh(w) + 1) / 2`` with ``w`` started at ``arctanh(0.999999 (2x - 1))``,
    strictly above 0 in float32 unless a pixel was driven far past the lower bound, so an all-zero
    result is the untouched fallback in practice and at most the trivial perturbation otherwise."""
    if method == "deepfool":
        return torch.ones_like(found)
    succeeded = found.clone()
    if method == "cw":
        succeeded &= adversarial.flatten(1).ne(0).any(dim=1)
    return succeeded


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
    binary search, so a longer run is a different run).  An image counts as attacked only when the
    attack reports success, the returned image is not the attack's fallback (CW returns an all-zero
    image for a failed one) and the model, asked again, misclassifies it (:func:`_attack_succeeded`);
    every other image is a failure, +inf.  Row k keeps, per image, the smallest verified
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
            criterion = _recording_misclassification(foolbox)(y)
            adversarial = attack.run(fmodel, x, criterion)
            with torch.no_grad():
                fooled = model(adversarial).argmax(1) != y
            # a guard: the attacks divide by gradient norms, and a non-finite image is no adversarial
            valid = torch.isfinite(adversarial).flatten(1).all(dim=1)
            attacked = (_attack_succeeded(method, criterion.found, adversarial) & fooled & valid).cpu().numpy()
            distance = _norm(adversarial - x, norm).cpu().numpy()
            best[k, lo : lo + len(x)] = np.where(attacked, distance, np.inf)
    return np.minimum.accumulate(best, axis=0)


def failure_count(distances: np.ndarray) -> np.ndarray:
    """Images without a verified adversarial (+inf) along the last axis: (len(schedule),) int for the
    (len(schedule), N) result of :func:`minimal_perturbations`, a 0-d int for (N,) distances.  NaN
    (an image not attacked at all) is not a failure."""
    return np.isposinf(np.asarray(distances, dtype=np.float64)).sum(axis=-1)


def median_curve(distances: np.ndarray) -> np.ndarray:
    """(len(schedule),) median over images of each schedule row (+inf counts as larger than any, so a
    row is +inf, stored as null, once half or more of its images failed: :func:`failure_count`).
    Over no images (a comparison without common images) every row is NaN, without numpy's
    empty-slice warning."""
    distances = np.asarray(distances, dtype=np.float64)
    if distances.ndim != 2:
        raise ValueError(f"distances (len(schedule), n_images) expected, got shape {distances.shape}")
    if distances.shape[1] == 0:
        return np.full(len(distances), np.nan)
    return np.median(distances, axis=1)


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


@dataclasses.dataclass(frozen=True)
class CrossCheck:
    """Per image, the L_inf distance FMN found (``fmn``) and the one DeepFool found (``deepfool``),
    (n,) float64 each, +inf where that attack failed (:func:`linf_cross_check`)."""

    fmn: np.ndarray
    deepfool: np.ndarray

    @property
    def ratio(self) -> np.ndarray:
        """(n,) DeepFool's distance over FMN's: 1 where both failed, +inf where only DeepFool failed,
        0 where only FMN failed.  Below 1, DeepFool found a smaller perturbation than FMN did."""
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = self.deepfool / self.fmn
        return np.where(np.isinf(self.fmn) & np.isinf(self.deepfool), 1.0, np.where(np.isinf(self.fmn), 0.0, ratio))

    def agreement(self, factor: float) -> float:
        """Fraction of the images on which the attacks agree within ``factor`` (>= 1): both failed, or
        each distance is at most ``factor`` times the other."""
        ratio = self.ratio
        return float(np.mean((ratio <= factor) & (ratio >= 1 / factor)))

    def fmn_beaten(self, factor: float) -> float:
        """Fraction of the images on which DeepFool's perturbation is smaller than FMN's by more than
        ``factor`` (FMN's L_inf distance is then not the minimal one it claims to be)."""
        return float(np.mean(self.ratio < 1 / factor))


def linf_cross_check(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    n_images: int | None = None,
    fmn_steps: int = 200,
    deepfool_steps: int = 50,
    **kwargs,
) -> CrossCheck:
    """FMN's L_inf distances against DeepFool's on the first ``n_images`` images (all by default).

    images, labels : as for :func:`minimal_perturbations` (correctly classified images); kwargs go
    to it (``device``, ``batch_size``).  ``fmn_steps``: the experiment's longest L_inf attack;
    ``deepfool_steps``: foolbox's default (DeepFool stops once every image is adversarial).
    """
    images, labels = images[:n_images], labels[:n_images]
    fmn = minimal_perturbations(model, images, labels, "linf", (fmn_steps,), method="fmn", **kwargs)[-1]
    deepfool = minimal_perturbations(model, images, labels, "linf", (deepfool_steps,), method="deepfool", **kwargs)[-1]
    return CrossCheck(fmn=fmn, deepfool=deepfool)
