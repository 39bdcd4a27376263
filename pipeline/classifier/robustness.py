"""Robustness of image classifiers to pixel noise (Li et al. 2019, Methods B); the minimal adversarial
perturbations are in :mod:`pipeline.classifier.attacks`.

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

import hashlib
import math
from typing import Sequence

import torch

from pipeline.device import resolve_device
from pipeline.modules import evaluating
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
    with evaluating(model):
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
        levels: Sequence[float]
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
