"""Functional types of the simulated units: templates of oriented subunits and the rules combining
their outputs (:data:`CELL_TYPES`), and the linear filters of units that rotate, scale and place a
template (:func:`subunit_filters`)."""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from pipeline.config import ConfigError


@dataclasses.dataclass(frozen=True)
class Subunit:
    """One linear filter of a type template, in the unit's frame and in units of the unit's size.

    ``along``/``across``: offset of the filter centre along / across the unit's preferred bars.
    ``angle``: filter orientation relative to the unit's (radians).
    ``sigma_along``/``sigma_across``: Gaussian envelope widths along / across the bars.
    ``wavelength``: carrier wavelength across the bars (Gabor); 0 for a difference of Gaussians whose
    centre has width ``sigma_along`` and whose surround has width ``surround``.
    ``phase``: carrier phase of the (first) Gabor.
    """

    along: float = 0.0
    across: float = 0.0
    angle: float = 0.0
    sigma_along: float = 1.3
    sigma_across: float = 1.0
    wavelength: float = 3.0
    surround: float = 0.0
    phase: float = 0.0  # carrier phase (radians): 0 even-symmetric (a bar), pi/2 odd-symmetric (an edge)


def _rectify(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def _energies(linear: np.ndarray) -> np.ndarray:
    """(N, m, S, 2) even/odd filter outputs -> (N, m, S) phase-invariant energies."""
    return np.sqrt(linear[..., 0] ** 2 + linear[..., 1] ** 2)


def _half_rectified(linear: np.ndarray) -> np.ndarray:
    return _rectify(linear[:, :, 0, 0])


def _off_rectified(linear: np.ndarray) -> np.ndarray:
    return _rectify(-linear[:, :, 0, 0])


def _energy(linear: np.ndarray) -> np.ndarray:
    return _energies(linear)[:, :, 0]


def _end_stopped(linear: np.ndarray) -> np.ndarray:
    # The centre is suppressed by the same feature continuing beyond either end: long contours
    # drive centre and flanks alike and cancel, line ends and short segments do not.
    energy = _energies(linear)
    return _rectify(energy[:, :, 0] - 0.9 * energy[:, :, 1:].mean(axis=2))


def _conjunction(linear: np.ndarray) -> np.ndarray:
    # Geometric mean: the unit needs every subunit driven at once (an AND), unlike a sum.
    energy = _energies(linear)
    return np.exp(np.log(energy + 1e-12).mean(axis=2))


@dataclasses.dataclass(frozen=True)
class CellType:
    """A functional type: its subunits, whether each subunit has a quadrature (90-degree phase)
    partner, the rule turning linear outputs (N, m, S, phases) into drives (N, m), whether it has a
    preferred orientation, and whether a half turn changes it (then rotations span [0, 2 pi))."""

    name: str
    subunits: tuple[Subunit, ...]
    quadrature: bool
    combine: Callable[[np.ndarray], np.ndarray]
    oriented: bool = True
    full_turn: bool = False
    description: str = ""


# ON- and OFF-centre units share one difference of Gaussians and differ in its sign.
_CENTRE_SURROUND = Subunit(sigma_along=0.7, sigma_across=0.7, wavelength=0.0, surround=2.0)

# Curvature subunits sit on a circle of radius 1.7 sizes tangent to the bar at the centre:
# at along = +-1 the arc is displaced 1/(2*1.7) across and tilted by atan(1/1.7).
_ARC_ANGLE = float(np.arctan(1 / 1.7))

CELL_TYPES: dict[str, CellType] = {
    t.name: t
    for t in (
        CellType(
            "simple",
            (Subunit(),),
            quadrature=False,
            combine=_half_rectified,
            description="half-rectified even-symmetric Gabor (prefers a bright bar between dark flanks)",
        ),
        CellType(
            "complex",
            (Subunit(),),
            quadrature=True,
            combine=_energy,
            description="energy of a quadrature Gabor pair (phase invariant)",
        ),
        CellType(
            "end_stopped",
            (
                Subunit(sigma_along=0.8),
                Subunit(along=-2.0, sigma_along=0.8),
                Subunit(along=2.0, sigma_along=0.8),
            ),
            quadrature=True,
            combine=_end_stopped,
            description="centre energy minus 0.9 x the mean energy of two collinear flanks",
        ),
        CellType(
            "curvature",
            (
                Subunit(along=-1.0, across=0.3, angle=_ARC_ANGLE, sigma_along=0.8, sigma_across=0.7, wavelength=2.5),
                Subunit(along=1.0, across=0.3, angle=-_ARC_ANGLE, sigma_along=0.8, sigma_across=0.7, wavelength=2.5),
            ),
            quadrature=True,
            combine=_conjunction,
            full_turn=True,
            description="conjunction (geometric mean) of two energy subunits tilted along an arc",
        ),
        CellType(
            "texture",
            tuple(Subunit(across=a, sigma_along=0.7, sigma_across=0.7, wavelength=2.0) for a in (-1.2, 0.0, 1.2)),
            quadrature=True,
            combine=_conjunction,
            description="conjunction of three fine-scale parallel energy subunits side by side "
            "(oriented texture, not single edges)",
        ),
        CellType(
            "center_surround",
            (_CENTRE_SURROUND,),
            quadrature=False,
            combine=_half_rectified,
            oriented=False,
            description="half-rectified ON-centre difference of Gaussians (no orientation)",
        ),
        # Further types, used by the harder variants (VARIANTS); the default population has the six above.
        CellType(
            "edge",
            (Subunit(phase=np.pi / 2),),
            quadrature=False,
            combine=_half_rectified,
            full_turn=True,
            description="half-rectified odd-symmetric Gabor (prefers a dark-to-bright edge of one polarity)",
        ),
        CellType(
            "cross",
            (Subunit(sigma_along=0.9, sigma_across=0.9), Subunit(angle=np.pi / 2, sigma_along=0.9, sigma_across=0.9)),
            quadrature=True,
            combine=_conjunction,
            description="conjunction of two orthogonal energy subunits at one place (crossings, plaids)",
        ),
        CellType(
            "long_contour",
            (Subunit(sigma_along=3.0),),
            quadrature=True,
            combine=_energy,
            description="energy of an elongated quadrature Gabor pair (long, straight contours)",
        ),
        CellType(
            "off_center",
            (_CENTRE_SURROUND,),
            quadrature=False,
            combine=_off_rectified,
            oriented=False,
            description="half-rectified OFF-centre difference of Gaussians (no orientation)",
        ),
    )
}
TYPE_NAMES = ("simple", "complex", "end_stopped", "curvature", "texture", "center_surround")
"""The default population's types; :data:`CELL_TYPES` has further ones for the harder variants."""


def cell_type_of(name: str) -> tuple[CellType, float]:
    """The template and scale factor of a type name: ``"complex"`` is (complex, 1.0), and
    ``"complex@2"`` is the same template at twice the size (half the spatial frequency)."""
    base, _, scale = name.partition("@")
    if base not in CELL_TYPES:
        raise ConfigError(f"unknown cell type {base!r} in {name!r}; known: {list(CELL_TYPES)}")
    try:
        factor = float(scale) if scale else 1.0
    except ValueError:
        raise ConfigError(f"cell type {name!r}: the scale after '@' must be a number") from None
    if not (np.isfinite(factor) and factor > 0):
        raise ConfigError(f"cell type {name!r}: the scale after '@' must be > 0")
    return CELL_TYPES[base], factor


def subunit_filters(
    cell_type: CellType,
    rf_x: np.ndarray,
    rf_y: np.ndarray,
    rotation: np.ndarray,
    size: np.ndarray,
    image_shape: tuple[int, int],
) -> np.ndarray:
    """Linear filters of ``m`` units of one type: (m, S, phases, H, W) float32, each zero-mean and of
    unit norm.  ``rf_x``/``rf_y`` are centres in pixels (column, row), ``rotation`` radians,
    ``size`` the template scale in pixels; all (m,)."""
    H, W = image_shape
    sub = cell_type.subunits
    field = lambda name: np.array([getattr(s, name) for s in sub])[None, :, None, None]  # noqa: E731
    theta, s = rotation[:, None, None, None], size[:, None, None, None]
    # Subunit centres: offsets in the unit's frame, where "along" is (cos, -sin) in (col, row).
    px = rf_x[:, None, None, None] + s * (field("along") * np.cos(theta) + field("across") * np.sin(theta))
    py = rf_y[:, None, None, None] + s * (-field("along") * np.sin(theta) + field("across") * np.cos(theta))
    phi = theta + field("angle")
    dx = np.arange(W)[None, None, None, :] - px
    dy = np.arange(H)[None, None, :, None] - py
    along = dx * np.cos(phi) - dy * np.sin(phi)
    across = dx * np.sin(phi) + dy * np.cos(phi)
    envelope = np.exp(
        -0.5 * (along / (s * field("sigma_along"))) ** 2 - 0.5 * (across / (s * field("sigma_across"))) ** 2
    )
    wavelength = field("wavelength")
    if np.all(wavelength > 0):
        carrier = 2 * np.pi * across / (s * wavelength) + field("phase")
        phases = [envelope * np.cos(carrier)] + ([envelope * np.sin(carrier)] if cell_type.quadrature else [])
        # Remove the DC so that uniform luminance does not drive the unit (scaled envelope keeps the
        # filter's shape).
        envelope_sum = envelope.sum((-2, -1), keepdims=True)
        phases = [p - envelope * (p.sum((-2, -1), keepdims=True) / envelope_sum) for p in phases]
    elif np.all(wavelength == 0) and not cell_type.quadrature:
        r2 = dx**2 + dy**2
        centre = np.exp(-0.5 * r2 / (s * field("sigma_along")) ** 2)
        surround = np.exp(-0.5 * r2 / (s * field("surround")) ** 2)
        phases = [centre / centre.sum((-2, -1), keepdims=True) - surround / surround.sum((-2, -1), keepdims=True)]
    else:
        raise ValueError(f"type {cell_type.name}: subunits must all be Gabors or all be (non-quadrature) DoGs")
    filters = np.stack(phases, axis=2)
    filters /= np.linalg.norm(filters, axis=(-2, -1), keepdims=True)
    return filters.astype(np.float32)
