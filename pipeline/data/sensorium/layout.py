"""The Sensorium static format's names: per-trial data folders, scan-identity files, image-id
arrays, withheld-data conventions, statistics; and the error every malformed dataset raises."""

from __future__ import annotations

from pathlib import Path

IMAGE_ID_NAMES = ("frame_image_id", "colorframeprojector_image_id", "image_id")
"""Names of the per-trial image-id array, in order of preference."""

BEHAVIOR_WITHHELD = "behavior_withheld"
"""Key of the derived (n_trials,) bool array in ``extra_trial_arrays``: behaviour was zeroed."""

DERIVED_TRIAL_ARRAYS = frozenset({BEHAVIOR_WITHHELD})
"""Keys of ``extra_trial_arrays`` that the reader derives and the writer does not write."""

WITHHOLDABLE_TIERS = ("test", "final_test")
"""Tiers whose responses competition scans ship zeroed."""

STATISTICS = ("mean", "std", "min", "max", "median")
STATISTICS_SOURCES = ("all", "stimulus_frame")

TRIAL_DATA = ("images", "responses", "behavior", "pupil_center")
"""The per-trial folders under ``data/``, one ``{i}.npy`` per trial."""
SCAN_META = {"animal_id": "animal_ids", "session": "sessions", "scan_idx": "scan_idx"}
"""Scan identity field -> its per-unit file under ``meta/neurons``."""


class SensoriumFormatError(ValueError):
    """A Sensorium dataset is malformed.

    Attributes
    ----------
    file : path of the offending file or folder, relative to the dataset root.
    problem : what is wrong with it.
    dataset : the folder or zip being read, when known.
    """

    def __init__(self, file: str, problem: str, dataset: str | Path | None = None):
        self.file, self.problem, self.dataset = file, problem, dataset
        where = f" (dataset {dataset})" if dataset else ""
        super().__init__(f"{file}: {problem}{where}")
