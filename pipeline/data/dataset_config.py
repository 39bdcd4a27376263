"""Which data a model is fitted to, and at what resolution."""

from __future__ import annotations

import dataclasses
import re

from pipeline.config import Config, ConfigError

_SCAN = re.compile(r"\d+-\d+-\d+")


@dataclasses.dataclass(frozen=True)
class DatasetConfig(Config):
    """A model's data.

    scan : the scan, written ``animal-session-scan``. One scan per model: each readout is
        specific to the units of one scan.
    image_shape : (height, width) in pixels the stimuli are resampled to (area averaging).
    normalization_tiers : tiers whose trials define the normalisation statistics (the stored
        per-scan statistics use the training tier; other choices are refused).
    """

    scan: str
    image_shape: tuple[int, ...] = (36, 64)
    normalization_tiers: tuple[str, ...] = ("train",)

    def validate(self) -> None:
        if not _SCAN.fullmatch(self.scan):
            raise ConfigError(f"scan {self.scan!r} is not written animal-session-scan, e.g. 11521-7-2")
        if len(self.image_shape) != 2 or min(self.image_shape) < 4:
            raise ConfigError(f"image_shape must be (height, width) of at least 4 pixels, got {self.image_shape}")
        if self.normalization_tiers != ("train",):
            raise ConfigError("normalization_tiers: only ('train',) is supported (the stored statistics)")

    @property
    def scan_key(self) -> dict[str, int]:
        animal, session, scan = map(int, self.scan.split("-"))
        return dict(animal_id=animal, session=session, scan_idx=scan)
