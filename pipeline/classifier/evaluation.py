"""Settings of the robustness evaluation of trained classifiers (noise curves and minimal attacks), and the
seeded draw of the images an evaluation uses."""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from pipeline.classifier.attacks import ATTACKS, NORMS
from pipeline.classifier.robustness import NOISE_KINDS, NOISE_LEVELS
from pipeline.config import Config, ConfigError, omitted_at_default


@dataclasses.dataclass(frozen=True)
class EvaluationSettings(Config):
    """How every classifier of a comparison is evaluated; the same images and noise for all of them.

    noise_images : test images for the noise curves, a seeded draw (None: all test images).
    gaussian, uniform, salt_pepper : strengths per noise kind (std, half-width, pixel fraction; image
        range [0, 1]); an empty tuple skips that kind.
    attack_candidates : test images (seeded draw, None: all) scanned for the common attack set.
    attack_images : size of the common set: the first candidates every compared model classifies
        correctly.
    attack_schedule : increasing step counts of the minimal attacks; the reported distance is the
        smallest found within the last, and the median against steps is the convergence evidence.
    linf_schedule : step counts of the L-infinity attack when it needs a longer schedule than
        ``attack_schedule`` (its median still falls where the L2 attack's is flat); None: the same.
    norms : the minimal attacks to run ("l2", "linf"), each a separate foolbox attack.
    l2_attack : "fmn" (Fast Minimum Norm) or "cw" (Carlini-Wagner, what the experiment uses: FMN
        stalls above the minimal L2 distance on small classifiers, :data:`pipeline.classifier.attacks.ATTACKS`).
    flatten_tolerance : relative distance from the final median within which the curve counts as flat.
    invariance_std : Gaussian noise stds at which the noise invariance of each similarity target and
        each classifier's own layer similarity is measured (:mod:`pipeline.classifier.invariance`).
    invariance_images, invariance_pairs : stimulus images (seeded draw, None: all) and random pairs
        of them for that measurement.
    seed : image draws and noise.
    """

    noise_images: Optional[int] = None
    gaussian: tuple[float, ...] = NOISE_LEVELS["gaussian"]
    uniform: tuple[float, ...] = ()
    salt_pepper: tuple[float, ...] = NOISE_LEVELS["salt_pepper"]
    attack_candidates: Optional[int] = None
    attack_images: int = 1000
    attack_schedule: tuple[int, ...] = (10, 25, 50, 100, 200)
    norms: tuple[str, ...] = NORMS
    flatten_tolerance: float = 0.02
    invariance_std: tuple[float, ...] = (0.05, 0.1, 0.2)
    invariance_images: Optional[int] = 500
    invariance_pairs: int = 5000
    seed: int = 0
    linf_schedule: Optional[tuple[int, ...]] = omitted_at_default(None)
    l2_attack: str = omitted_at_default("fmn")

    def validate(self) -> None:
        if self.attack_images < 1:
            raise ConfigError(f"attack_images must be >= 1, got {self.attack_images}")
        if any(s < 0 for s in self.invariance_std) or self.invariance_pairs < 3:
            raise ConfigError("invariance_std must be >= 0 and invariance_pairs >= 3")
        for name in ("noise_images", "attack_candidates", "invariance_images"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1 or None, got {getattr(self, name)}")
        for name in ("attack_schedule", "linf_schedule"):
            schedule = getattr(self, name)
            if schedule is not None and (not schedule or schedule[0] < 1 or sorted(set(schedule)) != list(schedule)):
                raise ConfigError(f"{name} must be increasing step counts >= 1, got {list(schedule)}")
        if not self.norms or set(self.norms) - set(NORMS) or len(set(self.norms)) != len(self.norms):
            raise ConfigError(f"norms must be distinct names from {list(NORMS)}, got {list(self.norms)}")
        for kind in NOISE_KINDS:
            levels = getattr(self, kind)
            if any(s < 0 for s in levels) or (kind == "salt_pepper" and any(s > 1 for s in levels)):
                raise ConfigError(f"{kind}: strengths must be >= 0 (<= 1 for salt_pepper), got {list(levels)}")
        if self.l2_attack not in ATTACKS["l2"]:
            raise ConfigError(f"l2_attack must be one of {list(ATTACKS['l2'])}, got {self.l2_attack!r}")
        if not 0 <= self.flatten_tolerance < 1:
            raise ConfigError(f"flatten_tolerance must be in [0, 1), got {self.flatten_tolerance}")

    def schedule(self, norm: str) -> tuple[int, ...]:
        """Step counts of the minimal attack of ``norm``."""
        if norm == "linf" and self.linf_schedule is not None:
            return self.linf_schedule
        return self.attack_schedule

    def attack(self, norm: str) -> str:
        """The foolbox attack (a key of :data:`pipeline.classifier.attacks.ATTACKS`) measuring the minimal ``norm``
        distance."""
        return self.l2_attack if norm == "l2" else "fmn"

    @property
    def noise_levels(self) -> dict[str, tuple[float, ...]]:
        """{kind: strengths} of the kinds evaluated."""
        return {kind: getattr(self, kind) for kind in NOISE_KINDS if getattr(self, kind)}


def seeded_subset(n_total: int, n: int | None, seed: int) -> np.ndarray:
    """Sorted (n,) indices drawn without replacement from ``range(n_total)`` with ``seed``; all
    ``n_total`` indices when ``n`` is None or not smaller."""
    index = np.arange(n_total)
    if n is not None and n < n_total:
        index = np.sort(np.random.default_rng(seed).choice(n_total, n, replace=False))
    return index
