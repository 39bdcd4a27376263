"""Simulated mouse-V1 scan with ground truth: the pipeline's embedded default dataset.

:func:`simulate` turns a :class:`SimulationConfig` (or the name of one of :data:`PRESETS`) and a seed
into a :class:`~pipeline.data.recording.Recording` laid out like a Sensorium static scan:

Stimuli
    Natural-image patches (:mod:`pipeline.data.images`), uint8 grey levels 0-255.  Train and
    validation images are shown once, test images ``test_repeats`` times; trials are shown in a
    random order and stored in another random (file) order, ``trial_idx`` being the time order.
Neurons
    Every unit belongs to one functional type of :data:`CELL_TYPES`.  A type is a *template*: a set
    of oriented subunits (Gabor filters or a difference of Gaussians) laid out in the unit's own frame
    and a rule combining their outputs.  Each unit rotates, scales and places its type's template
    (random orientation, size and receptive-field position; receptive fields follow a retinotopic map
    of the units' cortical positions), so a type is one feature seen at many orientations.  The drive
    ``d`` (>= 0, linear in image contrast) becomes a rate ``A * (baseline + (d / q) ** exponent)``
    with ``q`` and ``A`` calibrated per unit on separate natural patches so that the mean rate over
    natural images is the unit's ``mean_rate``.
Behaviour
    Slowly varying arousal and locomotion (AR(1) processes over trials) give pupil size, its change
    and running speed.  Rates are multiplied by a unit-specific gain
    ``exp(running_gain * tanh(speed / running_scale) + pupil_gain * (pupil - pupil_reference) / pupil_scale)``
    (1 for a resting animal with the reference pupil).  The eye position (``pupil_center``, in
    eye-camera pixels) moves every receptive field by ``eye_to_stimulus * (pupil_center - eye_center)``
    stimulus pixels (x right, y down), implemented by shifting the image the other way.
Noise
    Single-trial response = Gamma(shape = mu * h / phi, scale = phi): mean ``mu * h``, variance
    ``phi * mu * h``, where ``mu`` is rate times gain and ``h`` is log-normal multiplicative noise
    (mean 1, log-s.d. ``overdispersion``; a fraction ``shared_noise_fraction`` of its variance is
    shared by all units on a trial).  Each unit's ``phi`` is chosen so that its expected oracle
    correlation equals a target drawn from a scaled Beta distribution (clipped at a floor of phi).

Ground truth (``Recording.ground_truth``)
    ``rates`` are the noise-free rates per unique image, eye at ``eye_center``, gain 1.
    ``reliability`` is the expected oracle correlation over the (non-withheld) test trials, computed
    analytically: with ``S`` the variance across test images of the trial-averaged response and
    ``N`` the mean within-image trial-to-trial variance (noise, overdispersion, behavioural gain and
    eye-position jitter; the last two estimated by Monte-Carlo over ``reliability_samples`` behaviour
    states per test image), ``rho = S / sqrt((S + N) (S + N / (repeats - 1)))``, the large-sample
    value of the correlation between a trial and the mean of the other repeats.
    ``orientation`` is the template rotation modulo pi (radians, [0, pi)) and NaN for the
    orientation-free centre-surround units.

Harder variants (:data:`VARIANTS`, presets ``demo-<name>`` and ``tiny-<name>``)
    Each breaks one assumption of the rotation-equivariant model: more types than a core has
    features, types that differ only in scale (type names ``"name@factor"``), graded mixtures of two
    types (``mixture_types``), a cardinal bias of orientations (``orientation_bias``) and a type seen
    at one orientation only (``unrotated_types``).  Their ground truth records what changed
    (``extra["variant"]`` and per-unit arrays, see :func:`_variant_truth`).  A config without them
    simulates exactly as before, and its hash is unchanged.

Orientation convention: a unit of orientation ``theta`` prefers bars running along the direction
``(cos theta, -sin theta)`` in (column, row) coordinates, i.e. ``theta`` counter-clockwise from
horizontal as seen on screen (rows grow downwards); its preferred grating is
``cos(2 pi (x sin theta + y cos theta) / wavelength + phase)`` with x the column and y the row.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable, Mapping, Sequence

import numpy as np

from pipeline.config import Config, ConfigError, added_field, canonical, canonical_json
from pipeline.data.images import sample_patches
from pipeline.data.recording import GroundTruth, Recording
from pipeline.progress import progress_bar

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# Functional types
# --------------------------------------------------------------------------------------------------


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


def shift_images(images: np.ndarray, rf_shift: np.ndarray) -> np.ndarray:
    """Images as seen by receptive fields moved by ``rf_shift`` (n, 2) pixels (x right, y down):
    each image is translated by the opposite amount (bilinear, edges extended).  (n, H, W) float32."""
    from scipy import ndimage

    images = np.asarray(images, np.float32)
    rf_shift = np.asarray(rf_shift, np.float64)
    if rf_shift.shape != (len(images), 2):
        raise ValueError(f"rf_shift: expected shape ({len(images)}, 2), got {rf_shift.shape}")
    out = np.empty_like(images)
    for i, (dx, dy) in enumerate(rf_shift):
        out[i] = ndimage.shift(images[i], (-dy, -dx), order=1, mode="nearest") if dx or dy else images[i]
    return out


@dataclasses.dataclass
class SimulatedPopulation:
    """The simulated units' parameters; all arrays (n_units,).

    ``rotation`` is the template rotation (radians; [0, pi), or [0, 2 pi) for types that a half turn
    changes), ``rf_x``/``rf_y`` the receptive-field centre (column, row, pixels), ``rf_size`` the
    template scale (pixels; Gabor envelope width across the bars), ``mean_rate`` the mean rate over
    natural images, ``running_gain``/``pupil_gain`` the behavioural gain strengths.
    ``drive_scale`` and ``amplitude`` are set by :meth:`calibrate`.

    Graded mixtures (optional): a unit with ``mixture_weight`` w > 0 is driven by
    ``(1 - w) d_own / s_own + w d_other / s_other``, its own type's drive and that of
    ``mixture_type`` (same orientation, position and size), each divided by its RMS over the
    calibration images (``component_scale``, (n_units, 2), set by :meth:`calibrate`).
    """

    image_shape: tuple[int, int]
    unit_type: np.ndarray
    rotation: np.ndarray
    rf_x: np.ndarray
    rf_y: np.ndarray
    rf_size: np.ndarray
    mean_rate: np.ndarray
    running_gain: np.ndarray
    pupil_gain: np.ndarray
    baseline: float = 0.05
    exponent: float = 1.5
    running_scale: float = 10.0
    pupil_reference: float = 18.0
    pupil_scale: float = 5.0
    drive_scale: np.ndarray | None = None
    amplitude: np.ndarray | None = None
    mixture_type: np.ndarray | None = None
    mixture_weight: np.ndarray | None = None
    component_scale: np.ndarray | None = None

    @property
    def n_units(self) -> int:
        return len(self.unit_type)

    @property
    def orientation(self) -> np.ndarray:
        """(n_units,) preferred orientation in [0, pi) radians; NaN for orientation-free types."""
        oriented = np.array([cell_type_of(t)[0].oriented for t in self.unit_type], bool)
        return np.where(oriented, np.mod(self.rotation, np.pi), np.nan)

    def _mixture(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The units with a graded mixture: their indices, other types and weights, (n_mixed,) each."""
        if self.mixture_weight is None:
            return np.array([], int), np.array([], str), np.array([])
        if self.mixture_type is None:
            raise ValueError("the population has mixture weights but no mixture types")
        mixed = np.flatnonzero(self.mixture_weight > 0)
        return mixed, self.mixture_type[mixed], self.mixture_weight[mixed]

    def drives(self, images: np.ndarray, progress: bool = False, filters_per_block: int = 1024) -> np.ndarray:
        """Noise-free drive of every unit, (N, n_units) float32 >= 0, for images (N, H, W) in grey
        levels.  Linear in image contrast; the filters are zero-mean so mean luminance is ignored."""
        own = self._template_drives(images, self.unit_type, np.arange(self.n_units), progress, filters_per_block)
        mixed, other_types, weights = self._mixture()
        if not len(mixed):
            return own
        if self.component_scale is None:
            raise RuntimeError("the population's mixtures are not calibrated; call calibrate(images) first")
        other = self._template_drives(images, other_types, mixed, progress, filters_per_block)
        w = weights.astype(np.float32)
        scale = self.component_scale[mixed].astype(np.float32)
        own[:, mixed] = (1 - w) * own[:, mixed] / scale[:, 0] + w * other / scale[:, 1]
        return own

    def _template_drives(
        self, images: np.ndarray, type_names: np.ndarray, units: np.ndarray, progress: bool, filters_per_block: int
    ) -> np.ndarray:
        """(N, len(units)) drives of ``units`` under the templates ``type_names`` (one per unit)."""
        images = np.asarray(images)
        if images.ndim != 3 or images.shape[1:] != tuple(self.image_shape):
            raise ValueError(f"images: expected (N, {self.image_shape[0]}, {self.image_shape[1]}), got {images.shape}")
        flat = np.asarray(images.reshape(len(images), -1), dtype=np.float32)
        out = np.empty((len(images), len(units)), np.float32)
        blocks = []
        order = {name: i for i, name in enumerate(CELL_TYPES)}
        names = sorted(set(type_names), key=lambda n: (order[n.partition("@")[0]], n))
        for name in names:
            cell_type, _ = cell_type_of(name)
            columns = np.flatnonzero(type_names == name)
            per_unit = len(cell_type.subunits) * (2 if cell_type.quadrature else 1)
            step = max(1, filters_per_block // per_unit)
            blocks += [(cell_type, columns[i : i + step]) for i in range(0, len(columns), step)]
        for cell_type, columns in progress_bar(blocks, desc="unit drives", enabled=progress):
            u = units[columns]
            filters = subunit_filters(
                cell_type,
                self.rf_x[u],
                self.rf_y[u],
                self.rotation[u],
                self.rf_size[u],
                self.image_shape,
            )
            m, S, P = filters.shape[:3]
            linear = (flat @ filters.reshape(m * S * P, -1).T).reshape(len(images), m, S, P)
            out[:, columns] = cell_type.combine(linear)
        return out

    def calibrate(self, images: np.ndarray, progress: bool = False) -> "SimulatedPopulation":
        """Set ``drive_scale`` (RMS drive) and ``amplitude`` so that each unit's mean rate over
        ``images`` (N, H, W) equals its ``mean_rate``."""
        mixed, other_types, _ = self._mixture()
        if len(mixed):
            own = self._template_drives(images, self.unit_type[mixed], mixed, progress, 1024)
            other = self._template_drives(images, other_types, mixed, progress, 1024)
            self.component_scale = np.ones((self.n_units, 2))
            for j, component in enumerate((own, other)):
                rms = np.sqrt(np.mean(component.astype(np.float64) ** 2, axis=0))
                self.component_scale[mixed, j] = np.where(rms > 0, rms, 1.0)
        drive = self.drives(images, progress=progress)
        scale = np.sqrt(np.mean(drive.astype(np.float64) ** 2, axis=0))
        self.drive_scale = np.where(scale > 0, scale, 1.0)
        self.amplitude = np.ones(self.n_units)  # so that _nonlinearity gives the unscaled shape
        shape = self._nonlinearity(drive).mean(axis=0, dtype=np.float64)
        self.amplitude = self.mean_rate / shape
        return self

    def _nonlinearity(self, drive: np.ndarray) -> np.ndarray:
        if self.drive_scale is None or self.amplitude is None:
            raise RuntimeError("the population is not calibrated; call calibrate(images) first")
        drive /= self.drive_scale.astype(np.float32)
        np.power(drive, self.exponent, out=drive)
        drive += self.baseline
        drive *= self.amplitude.astype(np.float32)
        return drive

    def rates(self, images: np.ndarray, rf_shift: np.ndarray | None = None, progress: bool = False) -> np.ndarray:
        """Noise-free rates before behavioural gain, (N, n_units) float32 > 0, for images (N, H, W)
        seen with receptive fields moved by ``rf_shift`` (N, 2) pixels (default: not moved)."""
        if rf_shift is not None:
            images = shift_images(images, rf_shift)
        return self._nonlinearity(self.drives(images, progress=progress))

    def gain(self, behavior: np.ndarray) -> np.ndarray:
        """Multiplicative behavioural gain, (n_trials, n_units) float32, for behaviour (n_trials, 3)
        = pupil size, its change, running speed (cm/s)."""
        behavior = np.asarray(behavior, np.float64)
        running = np.tanh(behavior[:, 2:3] / self.running_scale)
        pupil = (behavior[:, 0:1] - self.pupil_reference) / self.pupil_scale
        return np.exp(running * self.running_gain + pupil * self.pupil_gain).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------


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
    orientation_bias: float = added_field(0.0)  # in [0, 1): orientation density 1 + bias cos(4 theta)
    unrotated_types: tuple[str, ...] = added_field(())  # types seen at one orientation only (rotation 0)
    mixture_types: tuple[str, ...] = added_field(())  # two types whose units form a graded continuum
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
        def fail(message: str) -> None:
            raise ConfigError(f"SimulationConfig: {message}")

        for name in ("n_units", "n_single_images", "n_test_images", "calibration_images", "reliability_samples"):
            if getattr(self, name) < 1:
                fail(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.test_repeats < 2:
            fail(f"test_repeats must be >= 2 (oracle correlations need repeats), got {self.test_repeats}")
        if not 0 <= self.validation_fraction < 1:
            fail(f"validation_fraction must be in [0, 1), got {self.validation_fraction}")
        if not 0 <= self.final_test_fraction < 1:
            fail(f"final_test_fraction must be in [0, 1), got {self.final_test_fraction}")
        if self.n_test_images - round(self.final_test_fraction * self.n_test_images) < 2:
            fail("at least 2 test images must stay in the 'test' tier (reduce final_test_fraction)")
        if len(self.image_shape) != 2 or min(self.image_shape) < 8:
            fail(f"image_shape must be (height, width) with both >= 8, got {self.image_shape}")
        pairs = ("patch_scale", "rf_region", "rf_size", "running_gain", "pupil_gain", "eye_center",
                 "reliability_range", "reliability_beta", "overdispersion")  # fmt: skip
        for name in pairs:
            if len(getattr(self, name)) != 2:
                fail(f"{name} must have two entries, got {getattr(self, name)}")
        for name in self.cell_types:
            try:
                cell_type_of(name)
            except ConfigError as err:
                fail(str(err))
        if len(set(self.cell_types)) != len(self.cell_types):
            fail(f"cell_types has duplicates: {self.cell_types}")
        if not 0 <= self.orientation_bias < 1:
            fail(f"orientation_bias must be in [0, 1), got {self.orientation_bias}")
        for name in ("unrotated_types", "mixture_types"):
            unknown = sorted(set(getattr(self, name)) - set(self.cell_types))
            if unknown:
                fail(f"{name} {unknown} are not in cell_types {list(self.cell_types)}")
        if self.mixture_types:
            pair = [cell_type_of(t)[0] for t in self.mixture_types]
            if len(set(self.mixture_types)) != 2:
                fail(f"mixture_types must name two different types, got {self.mixture_types}")
            if pair[0].full_turn != pair[1].full_turn or pair[0].oriented != pair[1].oriented:
                fail(f"mixture_types {self.mixture_types}: both must be oriented (or not) with the same period")
            if set(self.mixture_types) & set(self.unrotated_types):
                fail("a type cannot be both in mixture_types and in unrotated_types")
        if len(self.type_fractions) != len(self.cell_types):
            fail(f"type_fractions has {len(self.type_fractions)} entries for {len(self.cell_types)} cell_types")
        if min(self.type_fractions) < 0 or sum(self.type_fractions) <= 0:
            fail(f"type_fractions must be >= 0 with a positive sum, got {self.type_fractions}")
        if not (0 < self.patch_scale[0] <= self.patch_scale[1]):
            fail(f"patch_scale must satisfy 0 < low <= high, got {self.patch_scale}")
        if not (0 < self.rf_size[0] <= self.rf_size[1]):
            fail(f"rf_size must satisfy 0 < low <= high, got {self.rf_size}")
        if not all(0 < r <= 1 for r in self.rf_region):
            fail(f"rf_region fractions must be in (0, 1], got {self.rf_region}")
        lo, hi = self.reliability_range
        if not 0 < lo <= hi < 1:
            fail(f"reliability_range must satisfy 0 < low <= high < 1, got {self.reliability_range}")
        if min(self.reliability_beta) <= 0:
            fail(f"reliability_beta parameters must be > 0, got {self.reliability_beta}")
        if not 0 <= self.overdispersion[0] <= self.overdispersion[1]:
            fail(f"overdispersion must satisfy 0 <= low <= high, got {self.overdispersion}")
        if not 0 <= self.shared_noise_fraction <= 1:
            fail(f"shared_noise_fraction must be in [0, 1], got {self.shared_noise_fraction}")
        if not 0 <= self.l23_fraction <= 1:
            fail(f"l23_fraction must be in [0, 1], got {self.l23_fraction}")
        for name in ("mean_rate", "exponent", "behavior_timescale", "eye_timescale", "cortex_extent"):
            if getattr(self, name) <= 0:
                fail(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("baseline", "mean_rate_spread", "rf_scatter", "eye_std", "eye_to_stimulus"):
            if getattr(self, name) < 0:
                fail(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.baseline == 0:
            fail("baseline must be > 0 (Gamma noise needs a positive mean on every trial)")

    @property
    def n_trials(self) -> int:
        return self.n_single_images + self.n_test_images * self.test_repeats


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


# --------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------

_STREAMS = ("population", "calibration", "stimuli", "design", "behavior", "reliability", "noise")


def _streams(seed: int) -> dict[str, np.random.Generator]:
    """Independent generators per simulation stage, so that e.g. the population of a seed does not
    depend on how many images are drawn."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return dict(zip(_STREAMS, np.random.default_rng(int(seed)).spawn(len(_STREAMS))))


def _type_counts(fractions: Sequence[float], n: int) -> np.ndarray:
    """Largest-remainder rounding of ``fractions * n`` to integers summing to ``n``."""
    share = np.asarray(fractions, float) / np.sum(fractions) * n
    counts = np.floor(share).astype(int)
    counts[np.argsort(-(share - counts), kind="stable")[: n - counts.sum()]] += 1
    return counts


def _ar1(rng: np.random.Generator, n: int, timescale: float, size: int = 1) -> np.ndarray:
    """Stationary AR(1) processes with unit variance and correlation time ``timescale`` steps,
    (n, size)."""
    a = np.exp(-1.0 / timescale)
    noise = rng.standard_normal((n, size))
    out = np.empty((n, size))
    out[0] = noise[0]
    for t in range(1, n):
        out[t] = a * out[t - 1] + np.sqrt(1 - a * a) * noise[t]
    return out


def sample_population(
    config: SimulationConfig, rng: np.random.Generator
) -> tuple[SimulatedPopulation, np.ndarray, np.ndarray]:
    """Draw the units' types and parameters (uncalibrated) plus their cortical positions and
    layers, returned as ``(population, unit_xyz (n, 3) micrometres, unit_layer (n,) str)``."""
    n = config.n_units
    H, W = config.image_shape
    counts = _type_counts(config.type_fractions, n)
    unit_type = rng.permutation(np.repeat(np.array(config.cell_types, dtype=object), counts)).astype(str)
    full_turn = np.array([cell_type_of(t)[0].full_turn for t in unit_type])
    rotation = rng.uniform(0.0, np.pi, n) * np.where(full_turn, 2.0, 1.0)

    half = config.cortex_extent / 2
    cortex_xy = rng.uniform(-half, half, (n, 2))
    is_l23 = rng.uniform(size=n) < config.l23_fraction
    depth = np.where(is_l23, rng.uniform(100.0, 350.0, n), rng.uniform(350.0, 500.0, n))
    unit_xyz = np.column_stack([cortex_xy, depth]).astype(np.float32)
    unit_layer = np.where(is_l23, "L2/3", "L4")

    # Retinotopy: receptive fields follow cortical position (80% of the central region) with scatter.
    region_h, region_w = config.rf_region[0] * H, config.rf_region[1] * W
    rf_x = W / 2 + 0.8 * region_w * cortex_xy[:, 0] / config.cortex_extent + config.rf_scatter * rng.standard_normal(n)
    rf_y = H / 2 + 0.8 * region_h * cortex_xy[:, 1] / config.cortex_extent + config.rf_scatter * rng.standard_normal(n)
    rf_x = np.clip(rf_x, (W - region_w) / 2, (W + region_w) / 2)
    rf_y = np.clip(rf_y, (H - region_h) / 2, (H + region_h) / 2)

    population = SimulatedPopulation(
        image_shape=(H, W),
        unit_type=unit_type,
        rotation=rotation,
        rf_x=rf_x,
        rf_y=rf_y,
        rf_size=rng.uniform(*config.rf_size, n) * np.array([cell_type_of(t)[1] for t in unit_type]),
        mean_rate=config.mean_rate * np.exp(config.mean_rate_spread * rng.standard_normal(n)),
        running_gain=config.running_gain[0] + config.running_gain[1] * rng.standard_normal(n),
        pupil_gain=config.pupil_gain[0] + config.pupil_gain[1] * rng.standard_normal(n),
        baseline=config.baseline,
        exponent=config.exponent,
    )
    # The variants draw after everything above, so that a config without them draws as before.
    if config.orientation_bias > 0:
        theta = _cardinal_orientations(rng, n, config.orientation_bias)
        population.rotation = theta + np.where(full_turn & (rng.uniform(size=n) < 0.5), np.pi, 0.0)
    if config.unrotated_types:
        population.rotation[np.isin(unit_type, config.unrotated_types)] = 0.0
    if config.mixture_types:
        first, second = config.mixture_types
        pair = np.flatnonzero(np.isin(unit_type, config.mixture_types))
        share = rng.uniform(size=len(pair))  # weight of the second type; the unit is the type it leans to
        population.unit_type = unit_type.copy()
        population.unit_type[pair] = np.where(share < 0.5, first, second)
        population.mixture_type = np.full(n, "", dtype=object)
        population.mixture_type[pair] = np.where(share < 0.5, second, first)
        population.mixture_type = population.mixture_type.astype(str)
        population.mixture_weight = np.zeros(n)
        population.mixture_weight[pair] = np.minimum(share, 1 - share)
    return population, unit_xyz, unit_layer


def _cardinal_orientations(rng: np.random.Generator, n: int, bias: float) -> np.ndarray:
    """(n,) orientations in [0, pi) with density ``(1 + bias cos(4 theta)) / pi``: peaks at the
    cardinal orientations 0 and pi/2, troughs at the obliques (rejection sampling)."""
    out = np.empty(0)
    while len(out) < n:
        theta = rng.uniform(0.0, np.pi, 2 * n)
        keep = rng.uniform(size=2 * n) * (1 + bias) < 1 + bias * np.cos(4 * theta)
        out = np.concatenate([out, theta[keep]])
    return out[:n]


def make_population(config: SimulationConfig | str | Mapping, seed: int, progress: bool = False) -> SimulatedPopulation:
    """The calibrated population that :func:`simulate` uses for this config and seed."""
    config = resolve_config(config)
    return _make_population(config, _streams(seed), progress)[0]


def _make_population(config: SimulationConfig, streams: dict, progress: bool):
    population, unit_xyz, unit_layer = sample_population(config, streams["population"])
    calibration = sample_patches(
        config.calibration_images, config.image_shape, streams["calibration"], scale=config.patch_scale
    )
    population.calibrate(calibration, progress=progress)
    return population, unit_xyz, unit_layer


def simulate_behavior(
    config: SimulationConfig, n_trials: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Behaviour in time order: (n_trials, 3) pupil size (eye-camera pixels), its change since the
    previous trial, running speed (cm/s); and (n_trials, 2) pupil centre (eye-camera pixels)."""
    arousal, locomotion_drive, pupil_noise = _ar1(rng, n_trials, config.behavior_timescale, 3).T
    # Locomotion shares 60% of its variance with arousal; the animal sits still much of the time.
    locomotion = 0.77 * arousal + 0.63 * locomotion_drive
    speed = 6.0 * np.logaddexp(0.0, 4.0 * (locomotion - 0.3)) + np.abs(0.2 * rng.standard_normal(n_trials))
    pupil = 18.0 + 4.0 * arousal + 1.5 * np.tanh(speed / 10.0) + 0.7 * pupil_noise
    pupil += 0.3 * rng.standard_normal(n_trials)
    pupil = np.maximum(pupil, 4.0)
    dpupil = np.diff(pupil, prepend=pupil[0])
    eye = _ar1(rng, n_trials, config.eye_timescale, 2) * config.eye_std + np.asarray(config.eye_center)
    behavior = np.column_stack([pupil, dpupil, speed]).astype(np.float32)
    return behavior, eye.astype(np.float32)


def expected_oracle_correlation(signal_var: np.ndarray, noise_var: np.ndarray, repeats: int) -> np.ndarray:
    """Large-sample correlation between single trials and the mean of the other ``repeats - 1``
    repeats of the same image, for across-image variance ``signal_var`` of the mean response and
    mean within-image variance ``noise_var``."""
    S, N = np.asarray(signal_var, float), np.asarray(noise_var, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = S / np.sqrt((S + N) * (S + N / (repeats - 1)))
    return np.nan_to_num(rho, nan=0.0)


def noise_for_oracle_correlation(signal_var: np.ndarray, rho: np.ndarray, repeats: int) -> np.ndarray:
    """The within-image variance ``N`` at which :func:`expected_oracle_correlation` equals ``rho``."""
    S, rho, m = np.asarray(signal_var, float), np.asarray(rho, float), repeats - 1
    # (S + N)(S + N/m) = S^2 / rho^2, a quadratic in N with one non-negative root.
    b = S * (1 + 1 / m)
    return m / 2 * (-b + np.sqrt(b * b + 4 / m * S * S * (1 / rho**2 - 1)))


# --------------------------------------------------------------------------------------------------
# The simulation
# --------------------------------------------------------------------------------------------------


def _variant_truth(config: SimulationConfig, population: SimulatedPopulation) -> dict[str, np.ndarray]:
    """Ground-truth entries of a harder variant: ``variant`` (JSON text of :func:`variant_changes`)
    and the per-unit arrays the variant set: ``type_scale`` (size factor of the unit's type),
    ``unrotated`` (bool), ``mixture_type`` (the other type, '' for none) and ``mixture_weight``
    (its weight, 0 for none)."""
    changes = variant_changes(config)
    if not changes:
        return {}
    out = dict(
        variant=np.array(canonical_json(changes)),
        type_scale=np.array([cell_type_of(t)[1] for t in population.unit_type]),
    )
    if config.unrotated_types:
        out["unrotated"] = np.isin(population.unit_type, config.unrotated_types)
    if population.mixture_type is not None and population.mixture_weight is not None:
        out["mixture_type"] = population.mixture_type
        out["mixture_weight"] = population.mixture_weight
    return out


def simulate(config: SimulationConfig | str | Mapping, seed: int, progress: bool = False) -> Recording:
    """Simulate one scan; fully deterministic given ``config`` and ``seed``.  See the module
    docstring for the model and :data:`PRESETS` for the sizes."""
    config = resolve_config(config)
    streams = _streams(seed)
    H, W = config.image_shape
    log.info("simulating %d units x %d trials (seed %d)", config.n_units, config.n_trials, seed)

    population, unit_xyz, unit_layer = _make_population(config, streams, progress)
    n_units = population.n_units

    # Stimuli and trial design.
    n_images = config.n_single_images + config.n_test_images
    images = np.round(sample_patches(n_images, (H, W), streams["stimuli"], scale=config.patch_scale)).astype(np.uint8)
    design = streams["design"]
    image_ids = np.sort(design.choice(np.arange(1, 100 * n_images + 1), n_images, replace=False)).astype(np.int64)
    image_tier = np.full(n_images, "train", dtype=object)
    order = design.permutation(n_images)
    n_final = round(config.final_test_fraction * config.n_test_images)
    n_validation = round(config.validation_fraction * config.n_single_images)
    image_tier[order[: config.n_test_images]] = "test"
    image_tier[order[:n_final]] = "final_test"
    image_tier[order[config.n_test_images : config.n_test_images + n_validation]] = "validation"
    repeats = np.where(np.isin(image_tier, ("test", "final_test")), config.test_repeats, 1)
    time_image = design.permutation(np.repeat(np.arange(n_images), repeats))  # image index per time slot
    n_trials = len(time_image)
    file_time = design.permutation(n_trials)  # trial file i holds time slot file_time[i]

    behavior_t, eye_t = simulate_behavior(config, n_trials, streams["behavior"])
    rf_shift_t = config.eye_to_stimulus * (eye_t.astype(np.float64) - np.asarray(config.eye_center))

    # Monte-Carlo behaviour states for the reliability of the (non-withheld) test images.
    oracle_images = np.flatnonzero(image_tier == "test")
    n_mc = config.reliability_samples
    mc_time = streams["reliability"].integers(n_trials, size=(len(oracle_images), n_mc))

    # Noise-free rates: per unique image (eye centred; the ground truth), then every trial and every
    # Monte-Carlo state together, each seen through its eye position.
    image_rates = population.rates(images, progress=progress)
    shifted = np.concatenate(
        [
            shift_images(images[time_image], rf_shift_t),
            shift_images(images[np.repeat(oracle_images, n_mc)], rf_shift_t[mc_time.ravel()]),
        ]
    )
    trial_rates = population.rates(shifted, progress=progress)
    del shifted
    mc_mean = trial_rates[n_trials:] * population.gain(behavior_t[mc_time.ravel()])
    mc_mean = mc_mean.reshape(len(oracle_images), n_mc, n_units).astype(np.float64)

    # Noise: choose phi per unit to hit a target oracle correlation (see module docstring).
    rng_noise = streams["noise"]
    a, b = config.reliability_beta
    lo, hi = config.reliability_range
    target = lo + (hi - lo) * rng_noise.beta(a, b, n_units)
    overdispersion = rng_noise.uniform(*config.overdispersion, n_units)
    first = mc_mean.mean(axis=1)  # E[mu | image]
    second = (mc_mean**2).mean(axis=1)  # E[mu^2 | image]
    signal = first.var(axis=0)
    other_noise = (np.exp(overdispersion**2) * second - first**2).mean(axis=0)
    mean_mu = first.mean(axis=0)
    needed = noise_for_oracle_correlation(signal, target, config.test_repeats)
    phi = np.maximum((needed - other_noise) / mean_mu, 1e-3 * mean_mu)
    reliability = expected_oracle_correlation(signal, phi * mean_mu + other_noise, config.test_repeats)

    # Single-trial responses, drawn in time order in chunks (to bound memory) and written straight
    # to their trial files.
    file_of_time = np.argsort(file_time)
    responses = np.empty((n_trials, n_units), np.float32)
    c = np.sqrt(config.shared_noise_fraction)
    for start in range(0, n_trials, 512):
        t = slice(start, min(start + 512, n_trials))
        k = t.stop - t.start
        log_h = c * rng_noise.standard_normal((k, 1)) + np.sqrt(1 - c * c) * rng_noise.standard_normal((k, n_units))
        h = np.exp(overdispersion * log_h - overdispersion**2 / 2)
        mu = trial_rates[t] * population.gain(behavior_t[t]) * h
        responses[file_of_time[t]] = rng_noise.gamma(mu / phi, phi)
    del trial_rates

    tiers = image_tier[time_image[file_time]].astype(str)
    withheld = tiers == "final_test"
    responses[withheld] = 0.0

    orientation = population.orientation
    ground_truth = GroundTruth(
        unit_type=population.unit_type,
        orientation=orientation,
        rates=image_rates,
        reliability=reliability,
        extra=dict(
            rf_x=population.rf_x,
            rf_y=population.rf_y,
            rf_size=population.rf_size,
            rotation=population.rotation,
            mean_rate=population.mean_rate,
            running_gain=population.running_gain,
            pupil_gain=population.pupil_gain,
            noise_scale=phi,
            overdispersion=overdispersion,
            target_reliability=target,
            drive_scale=population.drive_scale,
            amplitude=population.amplitude,
            **_variant_truth(config, population),
        ),
    )
    recording = Recording(
        animal_id=config.animal_id,
        session=config.session,
        scan_idx=config.scan_idx,
        images=images,
        image_ids=image_ids,
        trial_idx=file_time.astype(np.int64),
        trial_image_ids=image_ids[time_image[file_time]],
        tiers=tiers,
        responses=responses,
        withheld=withheld,
        behavior=behavior_t[file_time],
        pupil_center=eye_t[file_time],
        unit_ids=np.arange(1, n_units + 1, dtype=np.int64),
        unit_area=np.full(n_units, "V1"),
        unit_layer=unit_layer,
        unit_xyz=unit_xyz,
        source=f"simulated V1 population, config {config.hash}, seed {seed}",
        ground_truth=ground_truth,
    )
    return recording.validate()
