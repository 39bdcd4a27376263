"""The teacher target of the robustness experiment's positive control: a trained classifier's layer
similarity over an image set (:mod:`pipeline.classifier.teacher`).

A "teacher" similarity is a :class:`~schemas.similarity.SimilarityTask` like any other, computed by
:class:`~schemas.similarity.Similarity` once its teacher is trained and read with ``Similarity.open``;
:class:`SimilarityTeacher` names its teacher.  The teacher is a classifier, downstream of the similarity
stage, so the table belongs to the classifiers schema (importable from :mod:`schemas.classifiers`) and
this module holds what ``Similarity`` asks of it: which teacher tasks wait for their teacher, and the
teacher's similarity.

A database made before this table has no teacher tasks; ``python -m populate setup`` adds the table.
Deleting a teacher's ClassifierTask deletes its SimilarityTeacher row, not a computed Similarity.
"""

from __future__ import annotations

from pathlib import Path

import datajoint as dj
import numpy as np

from pipeline.classifier import teacher
from pipeline.models import denoise
from pipeline.similarity import SimilarityStore
from pipeline.similarity.settings import SimilaritySettings
from schemas.binding import NotActivated
from schemas.classifiers import ClassifierTask, TrainedClassifier, schema
from schemas.configs import atomic
from schemas.readiness import require
from schemas.similarity import SimilarityConfig, SimilarityTask

TEACHER_KEY = dict(
    teacher_hash="classifier_hash",
    teacher_set="classification_set",
    teacher_reference="similarity_name",
    teacher_seed="seed",
)
"""SimilarityTeacher's names of the teacher's ClassifierTask key attributes."""

_RENAMES = ", ".join(f"{new}='{old}'" for new, old in TEACHER_KEY.items())


@schema
class SimilarityTeacher(dj.Manual):
    definition = f"""
    # the classifier whose layer similarity a teacher similarity task is: the positive control target
    -> SimilarityTask
    ---
    -> ClassifierTask.proj({_RENAMES})
    """

    @classmethod
    def add(cls, name: str, teacher_key: dict, image_set: str, config: dict | None = None) -> dict:
        """Insert the "teacher" SimilarityTask ``name`` of the ClassifierTask ``teacher_key`` over ``image_set``
        (idempotent); returns its key.  The teacher need not be trained yet: the similarity waits for it.

        config : SimilaritySettings of the task (``method`` "teacher"; e.g. ``teacher_layers``).
        """
        settings = SimilarityConfig.validated({**(config or {}), "method": "teacher"})
        if not declared():
            raise LookupError(
                "this database has no SimilarityTeacher table yet: "
                "run `python -m populate setup` (it adds what is missing)"
            )
        missing = [k for k in ClassifierTask.primary_key if k not in teacher_key]
        if missing or not ClassifierTask & {k: teacher_key[k] for k in ClassifierTask.primary_key}:
            raise LookupError(f"teacher {teacher_key} is not a ClassifierTask (missing {missing})")
        key = dict(similarity_name=name)
        row = dict(key, **{new: teacher_key[old] for new, old in TEACHER_KEY.items()})
        if SimilarityTask & key:
            if not cls & row or (SimilarityTask & key).fetch1("similarity_hash") != settings.hash:
                raise ValueError(
                    f"similarity {name!r} exists with other settings or another teacher: choose another name"
                )
            return key
        with atomic(cls().connection):
            SimilarityTask.insert1(dict(key, **SimilarityConfig.add(settings), image_set=image_set))
            cls.insert1(row)
        return key

    @classmethod
    def teacher(cls, similarity_key) -> dict:
        """The ClassifierTask key of a teacher similarity's teacher."""
        row = require(cls(), {"similarity_name": similarity_key["similarity_name"]}).fetch1()
        return {old: row[new] for new, old in TEACHER_KEY.items()}


def declared() -> bool:
    """Whether this database has the SimilarityTeacher table (a database made before it has not)."""
    try:
        return SimilarityTeacher().is_declared
    except NotActivated:  # the classifiers schema itself does not exist yet
        return False


def untrained_teachers():
    """The teacher similarity tasks (``similarity_name``) whose teacher is not trained yet; None where the
    table is not declared (then there are none)."""
    if not declared():
        return None
    return (SimilarityTeacher - TrainedClassifier.proj(**TEACHER_KEY)).proj()


def teacher_similarity(
    similarity_key, images: np.ndarray, settings: SimilaritySettings, out_dir: Path, **write_kwargs
) -> SimilarityStore:
    """The stored target of a teacher task over its image set's (n, H, W) grey-level ``images``, which the
    teacher sees as the students see the stimuli (:func:`pipeline.models.denoise.classifier_inputs`)."""
    model = TrainedClassifier.load_model(SimilarityTeacher.teacher(similarity_key))
    inputs = denoise.classifier_inputs(images)
    return teacher.teacher_similarity(model, inputs, out_dir, settings.teacher_layers, **write_kwargs)


def teacher_vectors(similarity_name: str, images: np.ndarray, settings: SimilaritySettings) -> list[np.ndarray]:
    """Per teacher layer, (n, d) unit-length vectors of (n, H, W) grey-level ``images``, whose products
    averaged over layers are the teacher's similarity (for the target's noise invariance)."""
    model = TrainedClassifier.load_model(SimilarityTeacher.teacher(dict(similarity_name=similarity_name)))
    return teacher.layer_vectors(model, denoise.classifier_inputs(images), settings.teacher_layers)
