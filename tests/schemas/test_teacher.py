"""The positive control on a real database: a teacher classifier trained with noise augmentation, its layer
similarity as a Similarity row, and a student regularized towards it."""

from __future__ import annotations

import numpy as np
import pytest

from tests.schemas.test_classifiers import TINY_CLASSIFIER, TINY_EVALUATION

TEACHER = dict(TINY_CLASSIFIER, control="none", alpha=0.0, noise_std=0.2)


def _ready(table) -> set[str]:
    return {k["similarity_name"] for k in table().key_source.proj().keys()}


@pytest.fixture(scope="module")
def teacher(similarity):
    """A teacher, its similarity over the scan's image set and a student; checked as each becomes ready."""
    from populate import ingest
    from populate.work import run
    from schemas.classifiers import ClassifierTask, SimilarityTeacher, TrainedClassifier
    from schemas.readiness import waiting
    from schemas.similarity import Similarity

    ingest.shapes_classes(12, 4, 4, name="shapes-test")
    teacher_key = ClassifierTask.add(TEACHER, "shapes-test", neural=similarity)[0]
    config = dict(block_rows=37, dtype="float32")
    name = SimilarityTeacher.add("test-teacher", teacher_key, image_set="test", config=config)["similarity_name"]
    assert SimilarityTeacher.add(name, teacher_key, image_set="test", config=config) == dict(similarity_name=name)
    student = ClassifierTask.add(dict(TINY_CLASSIFIER, control="teacher"), "shapes-test", similarity, target=name)[0]

    # the similarity waits for its teacher, the student for the similarity
    assert "test-teacher" not in _ready(Similarity)
    assert any(key["similarity_name"] == name and missing == ["TrainedClassifier (teacher)"]
               for key, missing in waiting(Similarity)[1])  # fmt: skip
    assert not TrainedClassifier().key_source & student
    run.populate_all(tables=["TrainedClassifier"], progress=False)
    assert TrainedClassifier & teacher_key and not TrainedClassifier & student
    assert "test-teacher" in _ready(Similarity)
    run.populate_all(tables=["Similarity"], progress=False)
    assert TrainedClassifier().key_source & student
    run.populate_all(tables=["TrainedClassifier"], progress=False)
    return dict(teacher=teacher_key, student=student, similarity=name)


def test_the_teacher_similarity_is_the_teachers_layer_similarity_of_the_stimuli(teacher, tmp_path):
    from pipeline.classifier.teacher import TEACHER_LAYERS, teacher_similarity
    from schemas.classifiers import TrainedClassifier, stimulus_images
    from schemas.similarity import Similarity

    key = dict(similarity_name=teacher["similarity"])
    store = Similarity.open(key)
    row = (Similarity & key).fetch1()
    stimuli = stimulus_images(teacher["similarity"])
    assert store.n == row["n_images"] == len(stimuli) and row["n_scans"] == 1
    assert store.manifest["metadata"]["layers"] == list(TEACHER_LAYERS)
    model = TrainedClassifier.load_model(teacher["teacher"], device="cpu")
    expected = teacher_similarity(model, stimuli, tmp_path / "s", device="cpu", dtype=np.float32, progress=False)
    rows = np.array([0, 3, store.n - 1])
    np.testing.assert_allclose(store.rows(rows), expected.rows(rows), atol=1e-5)
    assert np.allclose(np.diag(store.submatrix(np.arange(store.n))), 1, atol=1e-5)


def test_a_student_trains_towards_its_teacher_and_the_target_invariance_is_measured(teacher):
    from populate.work import run
    from schemas.classifiers import ClassifierConfig, EvaluationConfig, TargetInvariance, TrainedClassifier

    student = (TrainedClassifier & teacher["student"]).fetch1()
    assert 0 <= student["clean_accuracy"] <= 1
    assert all(np.isfinite(epoch["similarity_loss"]) for epoch in student["history"])
    assert ClassifierConfig.load(teacher["teacher"]).noise_std == 0.2
    evaluation = EvaluationConfig.add(TINY_EVALUATION)
    run.populate_all(tables=["TargetInvariance"], progress=False)
    level = (TargetInvariance.Level & dict(similarity_name=teacher["similarity"]) & evaluation).fetch1()
    assert level["noise_std"] == 0.1 and -1 <= level["correlation"] <= 1 and level["n_pairs"] == 200


def test_a_teacher_control_needs_a_teacher_similarity(teacher, row_counts):
    from schemas.classifiers import ClassifierTask, SimilarityTeacher
    from schemas.similarity import SimilarityTask

    before = row_counts()
    student = dict(TINY_CLASSIFIER, control="teacher")
    for target in ("test-pixel", "test-neural", None):
        with pytest.raises(ValueError, match="control 'teacher' needs a 'teacher' similarity"):
            ClassifierTask.add(student, "shapes-test", neural="test-neural", target=target)
    with pytest.raises(ValueError, match="SimilarityTeacher.add"):
        SimilarityTask.add("teacher-without-teacher", dict(method="teacher"), image_set="test")
    with pytest.raises(LookupError, match="not a ClassifierTask"):
        SimilarityTeacher.add("no-teacher", dict(teacher["teacher"], seed=99), image_set="test")
    with pytest.raises(ValueError, match="another teacher"):
        SimilarityTeacher.add(teacher["similarity"], teacher["student"], image_set="test")
    assert row_counts() == before
