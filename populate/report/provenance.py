"""What the report says about where a result came from: the code version that computed it and
whether it is toy-sized.

**Toy-sized** (the rule, one place): a result is toy-sized when it was fitted to too little to say
anything about the method, so its numbers (chance accuracy, negative FEVE) are not findings:

- a predictive model: trained on a scan with fewer than :data:`MIN_TRIALS` trials or
  :data:`MIN_UNITS` units, or for fewer than :data:`MIN_STEPS` optimizer steps (the quick demo: the
  ``tiny`` preset's 500 trials and 40 units, 40 steps; the full demo: 2,500 trials, 200 units);
- its cell types: those of a toy-sized model; a consensus: one over a toy-sized scan;
- a similarity matrix: over fewer than :data:`MIN_IMAGES` images (quick demo 320, full demo 2,050);
- a classifier: trained for fewer than :data:`MIN_STEPS` steps (quick demo 8); its evaluations are
  as toy-sized as it is (the classifiers' table marks it).

**Code version**: ``TrainedModel`` and ``TrainedClassifier`` store the version (package version and
git commit, baked into Docker images) that trained them; results computed from a model (cell types)
show that model's.  The other tables store none; the report says so and gives its own version.
"""

from __future__ import annotations

import pandas as pd

from populate import api

MIN_TRIALS = 1000
MIN_UNITS = 100
MIN_STEPS = 100
MIN_IMAGES = 1000

TOY = "toy"
"""Name of the column that marks a toy-sized row ("yes" or "")."""

RULE = (
    f"Toy-sized (column '{TOY}'): trained on a scan with fewer than {MIN_TRIALS:,} trials or {MIN_UNITS} units, "
    f"or for fewer than {MIN_STEPS} steps; similarity over fewer than {MIN_IMAGES:,} images. "
    "Their numbers show that the pipeline runs, not what the method achieves."
)


def _flag(toy: pd.Series) -> pd.Series:
    return toy.fillna(False).astype(bool).map({True: "yes", False: ""})


def toy_scans(scans: pd.DataFrame) -> set[str]:
    """Scans (``scan`` names) too small for a model trained on them to mean anything."""
    small = (scans["n_trials"].astype(int) < MIN_TRIALS) | (scans["n_units"].astype(int) < MIN_UNITS)
    return set(scans.loc[small, "scan"])


def with_model_provenance(models: pd.DataFrame) -> pd.DataFrame:
    """``api.models()`` with the ``code_version`` that trained each model and the :data:`TOY` flag."""
    m = api.stage("models")
    versions = api.to_frame(m.TrainedModel.proj("code_version"))
    frame = models.merge(versions[[*m.TrainedModel.primary_key, "code_version"]], how="left")
    small = frame["scan"].isin(toy_scans(api.scans())) | (frame["iterations"].astype(int) < MIN_STEPS)
    frame[TOY] = _flag(small)
    return frame


def with_classifier_provenance(classifiers: pd.DataFrame) -> pd.DataFrame:
    """``api.classifiers()`` with each classifier's ``code_version`` and the :data:`TOY` flag."""
    c = api.stage("classifiers")
    versions = api.to_frame(c.TrainedClassifier.proj("code_version"))
    frame = classifiers.merge(versions[[*c.TrainedClassifier.primary_key, "code_version"]], how="left")
    frame[TOY] = _flag(frame["steps"].astype(int) < MIN_STEPS)
    return frame


def with_scan_toy_flag(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (with a ``scan`` column) with the :data:`TOY` flag of its scan."""
    frame = frame.copy()
    frame[TOY] = _flag(frame["scan"].isin(toy_scans(api.scans())))
    return frame


def with_image_toy_flag(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (with ``n_images``) flagged toy-sized below :data:`MIN_IMAGES` images."""
    frame = frame.copy()
    frame[TOY] = _flag(frame["n_images"].astype(int) < MIN_IMAGES)
    return frame


def toy_note(frame: pd.DataFrame, what: str) -> str | None:
    """'2 of 2 models are toy-sized ...' when any row of ``frame`` is, else None."""
    n = int((frame[TOY] == "yes").sum())
    return f"{n} of {len(frame)} {what} toy-sized (column '{TOY}'; the rule is at the top of the page)." if n else None
