"""Named simulation configs: the sizes (:data:`PRESETS`), the harder ground truths
(:data:`VARIANTS`) and the controls (:data:`CONTROLS`), each variant and control at the ``tiny`` and
``demo`` sizes; and :func:`resolve_config`, which turns a preset name or a mapping into a config."""

from __future__ import annotations

from typing import Mapping

from pipeline.config import ConfigError, canonical
from pipeline.data.simulate.config import SimulationConfig
from pipeline.data.simulate.templates import TYPE_NAMES

PRESETS: dict[str, SimulationConfig] = {
    # Unit tests: a few hundred trials, simulated in well under 2 s.
    "tiny": SimulationConfig(
        n_units=40, n_single_images=300, n_test_images=20, test_repeats=10, calibration_images=300
    ),
    # The default dataset: a model trains on it in minutes on 2 CPU cores.
    "demo": SimulationConfig(n_units=200, n_single_images=2000, n_test_images=50, test_repeats=10),
    # Sensorium-sized scan: 5000 images shown once + 100 x 10 test trials, 8000 units.
    "large": SimulationConfig(n_units=8000, n_single_images=5000, n_test_images=100, test_repeats=10),
}


VARIANTS: dict[str, tuple[dict, str]] = {
    # name: (changes to the default population, what the variant breaks); presets "demo-<name>"
    # (experiments) and "tiny-<name>" (tests).
    "ten-types": (
        dict(cell_types=TYPE_NAMES + ("edge", "cross", "long_contour", "off_center"), type_fractions=(0.1,) * 10),
        "10 functional types, more than a 6-feature core has features",
    ),
    "scales": (
        dict(
            cell_types=("simple", "simple@2", "complex", "complex@2", "texture", "texture@2"),
            type_fractions=(1 / 6,) * 6,
        ),
        "three templates at two sizes (x1, x2): types that differ only in scale and spatial frequency",
    ),
    "mixtures": (
        dict(mixture_types=("simple", "complex")),
        "simple and complex units form a graded continuum: each is driven by its own type and, with a "
        "weight uniform in [0, 0.5], by the other",
    ),
    "cardinal": (
        dict(orientation_bias=0.8),
        "orientations concentrated at the cardinals (density 1 + 0.8 cos(4 theta)), as in mouse V1",
    ),
    "unrotated": (
        dict(unrotated_types=("end_stopped",)),
        "every end-stopped unit at one orientation: a type with no rotated counterpart",
    ),
}
"""The harder ground truths: each breaks one assumption the rotation-equivariant model is built on
(one template per feature, at one scale, seen at every orientation equally often)."""

CONTROLS: dict[str, tuple[dict, str]] = {
    # name: (changes to the default population, what the control removes); presets "demo-<name>" and
    # "tiny-<name>".  The same seed draws the same units (types, orientations, positions) as the default.
    "one-size": (
        dict(rf_size=(3.5, 3.5)),
        "every unit at one receptive-field size (3.5 pixels, the middle of the default 2.5-4.5): the "
        "default population without its continuum of sizes within each type",
    ),
}
"""Controls: the default population with one source of within-type variation taken away, to test
what an analysis's outcome depends on (e.g. whether sizes are what splits types in
``benchmarks.experiment_celltypes``)."""

PRESETS.update(
    {
        f"{size}-{name}": PRESETS[size].replace(**changes)
        for size in ("tiny", "demo")
        for name, (changes, _) in (VARIANTS | CONTROLS).items()
    }
)

_VARIANT_FIELDS = ("cell_types", "type_fractions", "orientation_bias", "unrotated_types", "mixture_types")


def variant_changes(config: SimulationConfig) -> dict:
    """The settings of ``config`` that the harder variants change and that differ from the default
    population's (empty for the default)."""
    default = SimulationConfig()
    return {
        name: canonical(getattr(config, name))
        for name in _VARIANT_FIELDS
        if canonical(getattr(config, name)) != canonical(getattr(default, name))
    }


def resolve_config(config: SimulationConfig | str | Mapping) -> SimulationConfig:
    """A preset name, a mapping of settings or a config -> a validated :class:`SimulationConfig`."""
    if isinstance(config, SimulationConfig):
        return config
    if isinstance(config, str):
        if config not in PRESETS:
            raise ConfigError(f"unknown simulation preset {config!r}; presets: {', '.join(PRESETS)}")
        return PRESETS[config]
    if isinstance(config, Mapping):
        return SimulationConfig.from_dict(config)
    raise ConfigError(f"expected a SimulationConfig, a preset name or a mapping, got {type(config).__name__}")
