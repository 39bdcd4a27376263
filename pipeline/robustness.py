"""Robustness of image classifiers: accuracy under pixel noise, under PGD attacks, and the minimal
adversarial perturbation found by the decision-based Boundary attack (Li et al. 2019, Methods B).

Conventions
-----------
- Images are float tensors in [0, 1] of shape (N, 1, 32, 32); labels are int64 (N,).
- ``model`` maps such images to logits (N, n_classes); any input normalisation is the model's job.
  Functions move the model to ``device``, run it in eval mode and restore its train/eval mode after.
- ``device=None`` picks ``cuda`` when available, else ``cpu``.
- Noise is drawn on the CPU from seeded generators, so every model, on every device, is evaluated on
  exactly the same noisy images.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.device import resolve_device
from pipeline.progress import progress_bar

NOISE_KINDS = ("gaussian", "uniform", "salt_pepper")

# The paper gives no numeric levels; these span clean accuracy down to near chance for a standard
# CIFAR ResNet.  gaussian: standard deviation; uniform: half-width a of U(-a, a) (std a/sqrt(3), so
# its range matches gaussian's in std up to ~0.29); salt_pepper: fraction of pixels replaced.
NOISE_LEVELS: dict[str, tuple[float, ...]] = {
    "gaussian": (0.0, 0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.13, 0.16, 0.2, 0.25, 0.3),
    "uniform": (0.0, 0.02, 0.04, 0.06, 0.09, 0.12, 0.17, 0.22, 0.28, 0.35, 0.43, 0.5),
    "salt_pepper": (0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.14, 0.18, 0.24, 0.3),
}


@contextlib.contextmanager
def _evaluating(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode inside the block, the model's previous mode after it."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _check_batch(images: torch.Tensor, labels: torch.Tensor | None = None) -> None:
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        raise TypeError("images must be a floating-point tensor")
    if images.ndim != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
    if images.numel() and (images.min() < 0 or images.max() > 1):
        raise ValueError(f"images must lie in [0, 1], got {images.min().item():.3g}..{images.max().item():.3g}")
    if labels is not None:
        if labels.ndim != 1 or len(labels) != len(images):
            raise ValueError(f"labels must have shape ({len(images)},), got {tuple(labels.shape)}")
        if labels.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"labels must be an integer tensor, got {labels.dtype}")


@torch.no_grad()
def predict(model: torch.nn.Module, images: torch.Tensor, device=None, batch_size: int = 512) -> torch.Tensor:
    """Predicted classes (N,) int64 on the CPU, evaluated in batches."""
    device = resolve_device(device)
    model.to(device)
    with _evaluating(model):
        out = [model(images[i : i + batch_size].to(device)).argmax(1).cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(out) if out else torch.empty(0, dtype=torch.int64)


# --------------------------------------------------------------------------------------------------
# noise


def add_noise(
    images: torch.Tensor, kind: str, strength: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Corrupt [0, 1] images with pixel noise and clip back to [0, 1].

    kind ``"gaussian"``: add N(0, strength^2); ``"uniform"``: add U(-strength, strength);
    ``"salt_pepper"``: a fraction ``strength`` of pixels (each independently) set to 0 or 1 with equal
    probability.  Noise is drawn on ``generator``'s device (CPU when None) in one fixed order, so the same
    generator state gives common random numbers across strengths: gaussian and uniform noise scale
    one draw, and salt-and-pepper pixel sets grow nested with ``strength``.
    """
    if kind not in NOISE_KINDS:
        raise ValueError(f"noise kind must be one of {NOISE_KINDS}, got {kind!r}")
    if not math.isfinite(strength) or strength < 0 or (kind == "salt_pepper" and strength > 1):
        raise ValueError(f"bad {kind} noise strength {strength!r}")
    draw_device = generator.device if generator is not None else torch.device("cpu")
    shape, dtype = images.shape, images.dtype
    # always drawn in float32, so the noise does not depend on the images' dtype
    if kind == "gaussian":
        noise = torch.randn(shape, generator=generator, device=draw_device) * strength
        return (images + noise.to(images.device, dtype)).clamp_(0, 1)
    if kind == "uniform":
        noise = (torch.rand(shape, generator=generator, device=draw_device) * 2 - 1) * strength
        return (images + noise.to(images.device, dtype)).clamp_(0, 1)
    hit = torch.rand(shape, generator=generator, device=draw_device) < strength
    salt = torch.rand(shape, generator=generator, device=draw_device) < 0.5
    return torch.where(hit.to(images.device), salt.to(images.device, dtype), images)


def noise_seed(seed: int, kind: str) -> int:
    """Generator seed for one noise kind; the same for every strength and every model."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{kind}".encode()).digest()[:8], "little") & (2**63 - 1)


@torch.no_grad()
def noise_accuracy(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    kinds: Sequence[str] = NOISE_KINDS,
    strengths: Sequence[float] | dict[str, Sequence[float]] | None = None,
    seed: int = 0,
    device=None,
    batch_size: int = 512,
    progress: bool = False,
) -> list[dict]:
    """Accuracy on noisy copies of ``images`` for every (kind, strength).

    strengths : one sequence for every kind, a dict per kind, or None for :data:`NOISE_LEVELS`.
    Returns rows ``{"kind": str, "strength": float, "accuracy": float}`` in kind-then-strength order.
    The noise for a kind is seeded by (seed, kind) only and drawn over the whole set at once, so it
    does not depend on the model, the device, the batch size or the other strengths evaluated.
    """
    _check_batch(images, labels)
    labels = labels.cpu()
    rows = []
    for kind in kinds:
        if kind not in NOISE_KINDS:
            raise ValueError(f"noise kind must be one of {NOISE_KINDS}, got {kind!r}")
        if strengths is None:
            levels = NOISE_LEVELS[kind]
        elif isinstance(strengths, dict):
            levels = strengths.get(kind, ())
        else:
            levels = strengths
        for strength in progress_bar(levels, desc=f"noise {kind}", enabled=progress):
            generator = torch.Generator().manual_seed(noise_seed(seed, kind))
            noisy = add_noise(images.cpu(), kind, float(strength), generator)
            correct = (predict(model, noisy, device, batch_size) == labels).double().mean().item()
            rows.append({"kind": kind, "strength": float(strength), "accuracy": correct})
    return rows


# --------------------------------------------------------------------------------------------------
# PGD


def _project(delta: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    if norm == "linf":
        return delta.clamp(-eps, eps)
    norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
    return delta * (eps / norms).clamp(max=1.0).view(-1, *[1] * (delta.ndim - 1))


def _pgd_batch(model, x, y, norm, eps, steps, step_size, random_start, generator):
    """One batch of PGD.  Returns (adversarial, robust): robust is True where the model was correct at
    the clean image and at every iterate; adversarial is the first misclassified iterate where there
    was one, else the last iterate."""
    view = (-1, *[1] * (x.ndim - 1))
    with torch.no_grad():
        robust = model(x).argmax(1) == y
    best = x.clone()
    if eps == 0 or steps == 0:
        return best, robust
    delta = torch.zeros_like(x)
    if random_start:  # drawn on the CPU so that the start does not depend on the device
        if norm == "linf":
            delta = (torch.rand(x.shape, generator=generator) * 2 - 1).to(x.device, x.dtype) * eps
        else:  # uniform in the L2 ball: gaussian direction, radius eps * U^(1/d)
            direction = torch.randn(x.shape, generator=generator).to(x.device, x.dtype)
            direction = direction / direction.flatten(1).norm(dim=1).clamp_min(1e-12).view(view)
            radius = eps * torch.rand(len(x), generator=generator).to(x.device, x.dtype) ** (1.0 / x[0].numel())
            delta = direction * radius.view(view)
        delta = (x + delta).clamp(0, 1) - x

    def keep_first_fooled(logits: torch.Tensor) -> None:
        fooled = robust & (logits.argmax(1) != y)
        best[fooled] = (x + delta)[fooled]
        robust.logical_and_(~fooled)

    for _ in range(steps):
        delta.requires_grad_(True)
        with torch.enable_grad():
            logits = model(x + delta)
            loss = F.cross_entropy(logits, y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta = delta.detach()
            keep_first_fooled(logits)
            if norm == "linf":
                step = grad.sign()
            else:
                step = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(view)
            delta = _project(delta + step_size * step, norm, eps)
            # clipping to the image box moves each pixel towards x, so it never leaves the ball
            delta = (x + delta).clamp(0, 1) - x
    with torch.no_grad():
        keep_first_fooled(model(x + delta))
        best[robust] = (x + delta)[robust]
    return best, robust


def pgd_attack(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    norm: str = "linf",
    eps: float = 2 / 255,
    steps: int = 20,
    step_size: float | None = None,
    device=None,
    batch_size: int = 256,
    random_start: bool = True,
    seed: int = 0,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Projected gradient ascent on the cross-entropy loss inside an eps-ball around each image.

    norm : ``"linf"`` (signed-gradient steps, projection onto the L_inf ball) or ``"l2"``
        (normalised-gradient steps, projection onto the L2 ball); eps is the ball's radius in [0, 1]
        pixel units.  step_size defaults to 2.5 * eps / steps.  Every iterate stays inside [0, 1].
        The random start (uniform in the ball) is seeded by ``seed``.
    Returns (adversarials (N, C, H, W) on the CPU, robust (N,) bool): robust is True where the model
    classified the clean image and every iterate correctly; elsewhere the adversarial is the first
    misclassified point found.
    """
    _check_batch(images, labels)
    if norm not in ("linf", "l2"):
        raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
    if not (math.isfinite(eps) and eps >= 0) or steps < 0:
        raise ValueError(f"need eps >= 0 and steps >= 0, got eps={eps!r}, steps={steps!r}")
    step_size = 2.5 * eps / max(steps, 1) if step_size is None else step_size
    device = resolve_device(device)
    model.to(device)
    generator = torch.Generator().manual_seed(seed)
    adversarials, robust = [], []
    with _evaluating(model):
        for i in progress_bar(range(0, len(images), batch_size), desc=f"PGD {norm}", enabled=progress):
            x = images[i : i + batch_size].to(device)
            y = labels[i : i + batch_size].to(device, torch.int64)
            adversarial, ok = _pgd_batch(model, x, y, norm, eps, steps, step_size, random_start, generator)
            adversarials.append(adversarial.cpu())
            robust.append(ok.cpu())
    return torch.cat(adversarials), torch.cat(robust)


def pgd_accuracy(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    norm: str = "linf",
    eps: float = 2 / 255,
    steps: int = 20,
    step_size: float | None = None,
    device=None,
    batch_size: int = 256,
    random_start: bool = True,
    seed: int = 0,
    progress: bool = False,
) -> float:
    """Accuracy under :func:`pgd_attack`: the share of images classified correctly at the clean image
    and at every PGD iterate (the attack keeps its best result, so this never exceeds clean accuracy)."""
    _, robust = pgd_attack(
        model, images, labels, norm, eps, steps, step_size, device, batch_size, random_start, seed, progress
    )
    return robust.double().mean().item() if len(robust) else float("nan")


# --------------------------------------------------------------------------------------------------
# Boundary attack


FOOLBOX_VERSION = "3.3.4"


def import_foolbox():
    """Import foolbox lazily, insisting on the pinned version (attack results depend on it)."""
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")  # foolbox imports GitPython, which wants git
    try:
        import foolbox
    except ImportError as err:
        raise ImportError(
            f"the Boundary attack needs foolbox=={FOOLBOX_VERSION} (pip install 'foolbox=={FOOLBOX_VERSION}', "
            f"or the project's 'robustness' extra): {err}"
        ) from err
    if foolbox.__version__ != FOOLBOX_VERSION:
        raise RuntimeError(f"foolbox {foolbox.__version__} is installed; the pipeline is pinned to {FOOLBOX_VERSION}")
    return foolbox


def boundary_starting_points(
    images: torch.Tensor, labels: torch.Tensor, predictions: torch.Tensor, chunk: int = 1024
) -> torch.Tensor:
    """For each image, the index of the nearest (L2) image in the same set that the model assigns to a
    class other than that image's label, or -1 where there is none."""
    flat = images.flatten(1).double()
    nearest = torch.full((len(images),), -1, dtype=torch.int64)
    for i in range(0, len(images), chunk):  # bounded memory: chunk x N distances at a time
        distances = torch.cdist(flat[i : i + chunk], flat)
        distances[predictions[None, :] == labels[i : i + chunk, None]] = math.inf
        best, index = distances.min(1)
        nearest[i : i + chunk] = torch.where(torch.isinf(best), -1, index)
    return nearest


def minimal_perturbations(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    steps: int = 25000,
    seed: int = 0,
    device=None,
    batch_size: int = 256,
    progress: bool = False,
) -> dict:
    """Minimal adversarial perturbations found by foolbox's (3.3.4) decision-based Boundary attack.

    Only images the model classifies correctly are attacked.  The Boundary attack must start from an
    image that is already misclassified: for each attacked image we start from the nearest (L2) image
    of ``images`` that the model assigns to a class other than its label (the model's own output
    decides, so every start is adversarial).  The attack minimises L2; ``linf`` is the L_inf norm of
    that same adversarial (no separate L_inf attack).  Its random proposals use torch's global RNG,
    which is seeded with ``seed`` inside a forked RNG state (the caller's state is left as it was).

    Returns a dict of numpy arrays over all N input images:
    ``l2``, ``linf`` (N,) float64: norms of (adversarial - image); NaN where not attacked (the clean
    image is misclassified), where no starting point exists, or where no adversarial was found.
    ``correct`` (N,) bool: clean image classified correctly.
    ``success`` (N,) bool: attacked and an adversarial found (checked by re-classifying it).
    ``start_l2`` (N,) float64: L2 distance of the starting point (NaN where not attacked).
    ``adversarials`` (N, C, H, W) float32: the adversarial images (NaN where ``success`` is False).
    ``median_l2``, ``median_linf``: medians over the correctly classified images, an image without a
    found adversarial counting as +inf (NaN when no image is correct).
    """
    _check_batch(images, labels)
    foolbox = import_foolbox()
    device = resolve_device(device)
    images, labels = images.cpu(), labels.cpu().to(torch.int64)
    n = len(images)
    predictions = predict(model, images, device, batch_size)
    correct = predictions == labels
    starts = boundary_starting_points(images, labels, predictions)
    attacked = torch.nonzero(correct & (starts >= 0))[:, 0]

    l2 = np.full(n, np.nan)
    linf = np.full(n, np.nan)
    start_l2 = np.full(n, np.nan)
    success = np.zeros(n, dtype=bool)
    adversarials = np.full(tuple(images.shape), np.nan, dtype=np.float32)
    attack = foolbox.attacks.BoundaryAttack(steps=steps)
    devices = (
        [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    )
    with _evaluating(model), torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        fmodel = foolbox.PyTorchModel(model.to(device), bounds=(0, 1), device=device)
        for i in progress_bar(range(0, len(attacked), batch_size), desc="Boundary attack", enabled=progress):
            index = attacked[i : i + batch_size]
            x = images[index].to(device)
            y = labels[index].to(device)
            start = images[starts[index]].to(device)
            adversarial = attack.run(fmodel, x, foolbox.criteria.Misclassification(y), starting_points=start)
            with torch.no_grad():
                fooled = (model(adversarial).argmax(1) != y).cpu().numpy()
            delta = (adversarial - x).flatten(1).double().cpu()
            # numpy indices: a one-element tensor would index like a scalar
            rows = index.numpy()
            l2[rows] = np.where(fooled, delta.norm(dim=1).numpy(), np.nan)
            linf[rows] = np.where(fooled, delta.abs().amax(dim=1).numpy(), np.nan)
            start_l2[rows] = (start - x).flatten(1).double().norm(dim=1).cpu().numpy()
            success[rows] = fooled
            adversarials[rows[fooled]] = adversarial.cpu().numpy()[fooled]
    correct = correct.numpy()

    def median(values: np.ndarray) -> float:
        values = np.where(success, values, np.inf)[correct]
        return float(np.median(values)) if len(values) else float("nan")

    return {
        "l2": l2,
        "linf": linf,
        "correct": correct,
        "success": success,
        "start_l2": start_l2,
        "adversarials": adversarials,
        "median_l2": median(l2),
        "median_linf": median(linf),
    }
