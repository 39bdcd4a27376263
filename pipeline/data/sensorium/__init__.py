"""Read and write the Sensorium 2022 static dataset format (one scan per folder or .zip).

Layout (``i`` is the trial file index, 0..n_trials-1, and the index into every meta/trials array)::

    data/images/{i}.npy         (1, H, W) stimulus of trial i, grey levels 0-255
    data/responses/{i}.npy      (n_units,) deconvolved activity
    data/behavior/{i}.npy       (3,) pupil size, change of pupil size, running speed
    data/pupil_center/{i}.npy   (2,) horizontal, vertical eye position
    meta/neurons/*.npy          unit_ids, area, layer, animal_ids, sessions, scan_idx,
                                cell_motor_coordinates (n_units, 3) in micrometres
    meta/trials/*.npy           tiers, trial_idx, frame_image_id (or colorframeprojector_image_id,
                                or image_id) and further per-trial arrays
    meta/statistics/<images|responses|behavior|pupil_center>/<all|stimulus_frame>/
                                {mean,std,min,max,median}.npy

:func:`read_sensorium` turns a folder or zip into a validated :class:`Recording` without writing
anything to disk; :func:`write_sensorium` writes a :class:`Recording` back in the same layout.

Conventions of the conversion
- Every array keeps its source dtype (images, responses, behaviour, pupil centre, unit ids,
  coordinates, strings), so that read -> write reproduces each file bit for bit.
  ``trial_image_ids`` is the exception: it is int64, and the source image-id array itself is kept
  verbatim in ``extra_trial_arrays`` under its source name (see below).
- ``extra_trial_arrays`` holds every meta/trials array except ``tiers`` and ``trial_idx``, verbatim,
  including the image-id array (``frame_image_id`` etc.), plus the derived boolean
  ``behavior_withheld`` (not a source file, never written back).  The writer writes
  ``trial_image_ids`` as ``frame_image_id`` only when no image-id array is among the extras.
- Withheld data (competition scans): a ``test`` or ``final_test`` tier whose responses are all
  exactly zero is marked ``withheld``; a tier (any) whose behaviour and pupil centre are all exactly
  zero is marked ``behavior_withheld``.  The zeros are kept in the arrays but are not data.
- meta/statistics is derived data: it is ignored when reading and recomputed when writing.
"""

from pipeline.data.limits import ImportLimits
from pipeline.data.sensorium.layout import (
    BEHAVIOR_WITHHELD,
    DERIVED_TRIAL_ARRAYS,
    IMAGE_ID_NAMES,
    STATISTICS,
    STATISTICS_SOURCES,
    WITHHOLDABLE_TIERS,
    SensoriumFormatError,
)
from pipeline.data.sensorium.reader import read_sensorium
from pipeline.data.sensorium.writer import image_statistics, trial_statistics, write_sensorium

__all__ = [
    "BEHAVIOR_WITHHELD",
    "DERIVED_TRIAL_ARRAYS",
    "IMAGE_ID_NAMES",
    "STATISTICS",
    "STATISTICS_SOURCES",
    "WITHHOLDABLE_TIERS",
    "ImportLimits",
    "SensoriumFormatError",
    "image_statistics",
    "read_sensorium",
    "trial_statistics",
    "write_sensorium",
]
