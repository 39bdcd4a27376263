"""Settings of a simulated scan (:class:`SimulationConfig`) and their checks."""

from __future__ import annotations

import dataclasses
from typing import NoReturn

from pipeline.config import Config, ConfigError, omitted_at_default
from pipeline.data.simulate.templates import TYPE_NAMES, cell_type_of


def _fail(message: str) -> NoReturn:
    raise ConfigError(f"SimulationConfig: {message}")


@dataclasses.dataclass(frozen=True)
class SimulationConfig(Config):
    """Settings of a simulated scan.  Sizes: ``n_units``; images shown once ``n_single_images``
    (a ``validation_fraction`` of them in the validation tier); ``n_test_images`` shown
    ``test_repeats`` times each (a ``final_test_fraction`` of them marked ``final_test`` with zeroed,
    withheld responses)."""

    n_units: int = 200
    n_single_images: int = 2000
    validation_fraction: float = 0.1
    n_test_images: int = 50
    test_repeats: int = 10
    final_test_fraction: float = 0.0
    image_shape: tuple[int, int] = (36, 64)
    patch_scale: tuple[float, float] = (2.0, 6.0)  # photograph pixels per stimulus pixel
    calibration_images: int = 1000
    # Units
    cell_types: tuple[str, ...] = TYPE_NAMES
    type_fractions: tuple[float, ...] = (0.2, 0.2, 0.15, 0.15, 0.15, 0.15)
    rf_region: tuple[float, float] = (0.5, 0.5)  # central fraction of (height, width) holding RF centres
    rf_scatter: float = 2.0  # pixels of scatter around the retinotopic map
    rf_size: tuple[float, float] = (2.5, 4.5)  # pixels
    cortex_extent: float = 500.0  # micrometres, side of the imaged field
    l23_fraction: float = 0.7
    mean_rate: float = 1.0  # median over units of the mean rate (arbitrary units)
    mean_rate_spread: float = 0.5  # log-s.d. of the mean rate across units
    baseline: float = 0.05
    exponent: float = 1.5
    # Harder variants (VARIANTS), each breaking one assumption of the rotation-equivariant model.
    # A type name "name@f" is type "name" at f times the size (see cell_type_of).
    orientation_bias: float = omitted_at_default(0.0)  # in [0, 1): orientation density 1 + bias cos(4 theta)
    unrotated_types: tuple[str, ...] = omitted_at_default(())  # types seen at one orientation only (rotation 0)
    mixture_types: tuple[str, ...] = omitted_at_default(())  # two types whose units form a graded continuum
    # Behaviour
    behavior_timescale: float = 60.0  # trials
    running_gain: tuple[float, float] = (0.4, 0.25)  # mean, s.d. across units
    pupil_gain: tuple[float, float] = (0.1, 0.1)
    eye_center: tuple[float, float] = (300.0, 240.0)  # eye-camera pixels
    eye_std: float = 4.0  # eye-camera pixels
    eye_timescale: float = 10.0  # trials
    eye_to_stimulus: float = 0.3  # stimulus pixels per eye-camera pixel
    # Noise
    reliability_range: tuple[float, float] = (0.05, 0.85)
    reliability_beta: tuple[float, float] = (2.0, 2.0)
    overdispersion: tuple[float, float] = (0.2, 0.5)  # range of the log-normal noise s.d. across units
    shared_noise_fraction: float = 0.2
    reliability_samples: int = 10
    # Identity
    animal_id: int = 1
    session: int = 1
    scan_idx: int = 1

    def validate(self) -> None:
        self._validate_design()
        self._validate_types()
        self._validate_ranges()

    def _validate_design(self) -> None:
        """Sizes of the trial design and the shapes of the paired settings."""
        for name in ("n_units", "n_single_images", "n_test_images", "calibration_images", "reliability_samples"):
            if getattr(self, name) < 1:
                _fail(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.test_repeats < 2:
            _fail(f"test_repeats must be >= 2 (oracle correlations need repeats), got {self.test_repeats}")
        if not 0 <= self.validation_fraction < 1:
            _fail(f"validation_fraction must be in [0, 1), got {self.validation_fraction}")
        if not 0 <= self.final_test_fraction < 1:
            _fail(f"final_test_fraction must be in [0, 1), got {self.final_test_fraction}")
        if self.n_test_images - round(self.final_test_fraction * self.n_test_images) < 2:
            _fail("at least 2 test images must stay in the 'test' tier (reduce final_test_fraction)")
        if len(self.image_shape) != 2 or min(self.image_shape) < 8:
            _fail(f"image_shape must be (height, width) with both >= 8, got {self.image_shape}")
        pairs = ("patch_scale", "rf_region", "rf_size", "running_gain", "pupil_gain", "eye_center",
                 "reliability_range", "reliability_beta", "overdispersion")  # fmt: skip
        for name in pairs:
            if len(getattr(self, name)) != 2:
                _fail(f"{name} must have two entries, got {getattr(self, name)}")

    def _validate_types(self) -> None:
        """The cell types, their fractions and the harder variants' settings."""
        for name in self.cell_types:
            try:
                cell_type_of(name)
            except ConfigError as err:
                _fail(str(err))
        if len(set(self.cell_types)) != len(self.cell_types):
            _fail(f"cell_types has duplicates: {self.cell_types}")
        if not 0 <= self.orientation_bias < 1:
            _fail(f"orientation_bias must be in [0, 1), got {self.orientation_bias}")
        for name in ("unrotated_types", "mixture_types"):
            unknown = sorted(set(getattr(self, name)) - set(self.cell_types))
            if unknown:
                _fail(f"{name} {unknown} are not in cell_types {list(self.cell_types)}")
        if self.mixture_types:
            pair = [cell_type_of(t)[0] for t in self.mixture_types]
            if len(set(self.mixture_types)) != 2:
                _fail(f"mixture_types must name two different types, got {self.mixture_types}")
            if pair[0].full_turn != pair[1].full_turn or pair[0].oriented != pair[1].oriented:
                _fail(f"mixture_types {self.mixture_types}: both must be oriented (or not) with the same period")
            if set(self.mixture_types) & set(self.unrotated_types):
                _fail("a type cannot be both in mixture_types and in unrotated_types")
        if len(self.type_fractions) != len(self.cell_types):
            _fail(f"type_fractions has {len(self.type_fractions)} entries for {len(self.cell_types)} cell_types")
        if min(self.type_fractions) < 0 or sum(self.type_fractions) <= 0:
            _fail(f"type_fractions must be >= 0 with a positive sum, got {self.type_fractions}")

    def _validate_ranges(self) -> None:
        """Ranges of the continuous settings."""
        if not (0 < self.patch_scale[0] <= self.patch_scale[1]):
            _fail(f"patch_scale must satisfy 0 < low <= high, got {self.patch_scale}")
        if not (0 < self.rf_size[0] <= self.rf_size[1]):
            _fail(f"rf_size must satisfy 0 < low <= high, got {self.rf_size}")
        if not all(0 < r <= 1 for r in self.rf_region):
            _fail(f"rf_region fractions must be in (0, 1], got {self.rf_region}")
        lo, hi = self.reliability_range
        if not 0 < lo <= hi < 1:
            _fail(f"reliability_range must satisfy 0 < low <= high < 1, got {self.reliability_range}")
        if min(self.reliability_beta) <= 0:
            _fail(f"reliability_beta parameters must be > 0, got {self.reliability_beta}")
        if not 0 <= self.overdispersion[0] <= self.overdispersion[1]:
            _fail(f"overdispersion must satisfy 0 <= low <= high, got {self.overdispersion}")
        if not 0 <= self.shared_noise_fraction <= 1:
            _fail(f"shared_noise_fraction must be in [0, 1], got {self.shared_noise_fraction}")
        if not 0 <= self.l23_fraction <= 1:
            _fail(f"l23_fraction must be in [0, 1], got {self.l23_fraction}")
        for name in ("mean_rate", "exponent", "behavior_timescale", "eye_timescale", "cortex_extent"):
            if getattr(self, name) <= 0:
                _fail(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("baseline", "mean_rate_spread", "rf_scatter", "eye_std", "eye_to_stimulus"):
            if getattr(self, name) < 0:
                _fail(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.baseline == 0:
            _fail("baseline must be > 0 (Gamma noise needs a positive mean on every trial)")

    @property
    def n_trials(self) -> int:
        return self.n_single_images + self.n_test_images * self.test_repeats
