"""In-memory form of one two-photon scan: the exchange format between importers, the simulator,
the database layer and the models.

A :class:`Recording` holds every trial of one scan in trial-file order (the Sensorium file index
``i``).  Images are kept per unique image (``images[k]`` is the stimulus with id
``image_ids[k]``); trials point to them through ``trial_image_ids``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

TIERS = ("train", "validation", "test", "final_test")


class RecordingError(ValueError):
    """A recording's arrays are inconsistent (shapes, non-finite values, unknown tiers, ...)."""


@dataclasses.dataclass
class GroundTruth:
    """What the simulator knows and a real experiment does not.

    Attributes
    ----------
    unit_type : (n_units,) str, functional type name of each unit ("simple", "complex", ...).
    orientation : (n_units,) float, preferred orientation in radians, in [0, pi).
    rates : (n_images, n_units) float32, noise-free mean response of each unit to each unique image
        (same order as ``Recording.image_ids``), before behavioural gain.
    reliability : (n_units,) float, expected oracle correlation of each unit given its noise level.
    extra : further per-unit arrays (positions, sizes, ...), free-form.
    """

    unit_type: np.ndarray
    orientation: np.ndarray
    rates: np.ndarray
    reliability: np.ndarray
    extra: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Recording:
    """One scan.

    Attributes
    ----------
    animal_id, session, scan_idx : identity of the scan.
    images : (n_images, H, W) stimulus images at source resolution, source dtype (float32 or uint8),
        grey levels 0-255.
    image_ids : (n_images,) int64, unique stimulus ids.
    trial_idx : (n_trials,) int64, the experiment's trial number of each trial file.
    trial_image_ids : (n_trials,) int64, stimulus shown on each trial (an entry of ``image_ids``).
    tiers : (n_trials,) str, one of :data:`TIERS`.
    responses : (n_trials, n_units) float32, deconvolved activity (arbitrary units, >= 0 in practice).
        Rows of withheld trials are zero and carry no information.
    withheld : (n_trials,) bool, True where responses were withheld (competition ``final_test``).
    behavior : (n_trials, 3) float32: pupil size, change of pupil size, running speed (cm/s).
    pupil_center : (n_trials, 2) float32: horizontal, vertical eye position (pixels of the eye camera).
    unit_ids : (n_units,) int64, unique within the scan.
    unit_area : (n_units,) str, brain area, e.g. "V1".
    unit_layer : (n_units,) str, cortical layer, e.g. "L2/3".
    unit_xyz : (n_units, 3) float32, cortical position in micrometres.
    frame_rate : imaging frame rate in Hz, when known.
    extra_trial_arrays : further per-trial arrays found in the source (name -> (n_trials, ...)).
    source : free text naming where the data came from.
    ground_truth : simulator ground truth, or None for real data.
    """

    animal_id: int
    session: int
    scan_idx: int
    images: np.ndarray
    image_ids: np.ndarray
    trial_idx: np.ndarray
    trial_image_ids: np.ndarray
    tiers: np.ndarray
    responses: np.ndarray
    withheld: np.ndarray
    behavior: np.ndarray
    pupil_center: np.ndarray
    unit_ids: np.ndarray
    unit_area: np.ndarray
    unit_layer: np.ndarray
    unit_xyz: np.ndarray
    frame_rate: float | None = None
    extra_trial_arrays: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    source: str = ""
    ground_truth: GroundTruth | None = None

    @property
    def n_trials(self) -> int:
        return len(self.trial_idx)

    @property
    def n_units(self) -> int:
        return len(self.unit_ids)

    @property
    def scan_key(self) -> dict[str, int]:
        return dict(animal_id=int(self.animal_id), session=int(self.session), scan_idx=int(self.scan_idx))

    @property
    def scan_name(self) -> str:
        """The scan written ``animal-session-scan``, e.g. ``11521-7-2``."""
        return f"{self.animal_id}-{self.session}-{self.scan_idx}"

    def trial_images(self) -> np.ndarray:
        """(n_trials, H, W) image of each trial, in trial-file order."""
        index = {int(i): k for k, i in enumerate(self.image_ids)}
        return self.images[[index[int(i)] for i in self.trial_image_ids]]

    def validate(self) -> "Recording":
        """Check shapes, dtypes and values; raise :class:`RecordingError` naming the first problem."""
        n_trials, n_units = self.n_trials, self.n_units

        def check(name: str, array: Any, shape: tuple, finite: bool = True) -> None:
            array = np.asarray(array)
            if array.shape != shape:
                raise RecordingError(f"{name}: shape {array.shape}, expected {shape}")
            if finite and array.dtype.kind in "fc" and not np.isfinite(array).all():
                bad = int((~np.isfinite(array)).sum())
                raise RecordingError(f"{name}: {bad} NaN or infinite value(s)")
            if finite and array.dtype.kind not in "biuf":
                raise RecordingError(f"{name}: non-numeric dtype {array.dtype}")

        if self.images.ndim != 3:
            raise RecordingError(f"images: expected (n_images, H, W), got shape {self.images.shape}")
        check("images", self.images, self.images.shape)
        check("image_ids", self.image_ids, (len(self.images),))
        if len(np.unique(self.image_ids)) != len(self.image_ids):
            raise RecordingError("image_ids: duplicate image ids")
        check("trial_idx", self.trial_idx, (n_trials,))
        check("trial_image_ids", self.trial_image_ids, (n_trials,))
        missing = np.setdiff1d(self.trial_image_ids, self.image_ids)
        if missing.size:
            raise RecordingError(f"trial_image_ids: {missing.size} id(s) without an image, e.g. {missing[0]}")
        check("tiers", self.tiers, (n_trials,), finite=False)
        unknown = sorted(set(map(str, self.tiers)) - set(TIERS))
        if unknown:
            raise RecordingError(f"tiers: unknown tier(s) {unknown}; expected one of {list(TIERS)}")
        check("withheld", self.withheld, (n_trials,))
        kept = ~np.asarray(self.withheld, bool)
        check("responses", self.responses, (n_trials, n_units), finite=False)
        if not np.isfinite(self.responses[kept]).all():
            raise RecordingError("responses: NaN or infinite value(s) in non-withheld trials")
        check("behavior", self.behavior, (n_trials, 3))
        check("pupil_center", self.pupil_center, (n_trials, 2))
        check("unit_ids", self.unit_ids, (n_units,))
        if len(np.unique(self.unit_ids)) != n_units:
            raise RecordingError("unit_ids: duplicate unit ids")
        check("unit_area", self.unit_area, (n_units,), finite=False)
        check("unit_layer", self.unit_layer, (n_units,), finite=False)
        check("unit_xyz", self.unit_xyz, (n_units, 3))
        for name, array in self.extra_trial_arrays.items():
            if len(array) != n_trials:
                raise RecordingError(f"{name}: {len(array)} entries, expected one per trial ({n_trials})")
        return self
