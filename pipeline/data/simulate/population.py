"""The simulated units as a population: their parameters, noise-free drives and rates for a batch
of images, the calibration of their rates, and their behavioural gain."""

from __future__ import annotations

import dataclasses

import numpy as np

from pipeline.data.simulate.templates import CELL_TYPES, cell_type_of, subunit_filters
from pipeline.progress import progress_bar


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
        own = self.template_drives(images, self.unit_type, np.arange(self.n_units), progress, filters_per_block)
        mixed, other_types, weights = self._mixture()
        if not len(mixed):
            return own
        if self.component_scale is None:
            raise RuntimeError("the population's mixtures are not calibrated; call calibrate(images) first")
        other = self.template_drives(images, other_types, mixed, progress, filters_per_block)
        w = weights.astype(np.float32)
        scale = self.component_scale[mixed].astype(np.float32)
        own[:, mixed] = (1 - w) * own[:, mixed] / scale[:, 0] + w * other / scale[:, 1]
        return own

    def template_drives(
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
            own = self.template_drives(images, self.unit_type[mixed], mixed, progress, 1024)
            other = self.template_drives(images, other_types, mixed, progress, 1024)
            self.component_scale = np.ones((self.n_units, 2))
            for j, component in enumerate((own, other)):
                self.component_scale[mixed, j] = _rms_scale(component)
        drive = self.drives(images, progress=progress)
        self.drive_scale = _rms_scale(drive)
        self.amplitude = np.ones(self.n_units)  # so that _nonlinearity gives the unscaled shape
        shape = self._nonlinearity(drive).mean(axis=0, dtype=np.float64)
        self.amplitude = self.mean_rate / shape
        return self

    def calibration(self) -> tuple[np.ndarray, np.ndarray]:
        """``(drive_scale, amplitude)``, (n_units,) each, as set by :meth:`calibrate`."""
        if self.drive_scale is None or self.amplitude is None:
            raise RuntimeError("the population is not calibrated; call calibrate(images) first")
        return self.drive_scale, self.amplitude

    def _nonlinearity(self, drive: np.ndarray) -> np.ndarray:
        drive_scale, amplitude = self.calibration()
        drive /= drive_scale.astype(np.float32)
        np.power(drive, self.exponent, out=drive)
        drive += self.baseline
        drive *= amplitude.astype(np.float32)
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


def _rms_scale(drive: np.ndarray) -> np.ndarray:
    """(n_units,) float64 RMS over images of ``drive`` (N, n_units); 1 where a unit is never driven,
    so that dividing by it leaves such a unit at zero rather than NaN."""
    rms = np.sqrt(np.mean(drive.astype(np.float64) ** 2, axis=0))
    return np.where(rms > 0, rms, 1.0)
