"""Image classifiers regularized towards neural similarity, their controls, and robustness evaluations."""

from __future__ import annotations

import time

import datajoint as dj
import numpy as np
import torch

import pipeline
from pipeline import classifier
from pipeline import similarity as sim
from pipeline.data import sources
from pipeline.data.cifar import ClassificationSet as Images
from pipeline.device import resolve_device
from pipeline.models import denoise
from schemas import checkpoints
from schemas.binding import StageSchema, tables_kept_in
from schemas.configs import ConfigTable, atomic, config_definition
from schemas.models import Seed
from schemas.readiness import Readiness, require
from schemas.similarity import Similarity, SimilarityConfig, SimilarityTask, stimulus_photographs, task_images

schema = StageSchema("classifiers")

CONTROL_METHODS = {
    "neural": "model",
    "shuffled": "model",
    "single_trial": "single_trial",
    "pixel": "pixel",
    "lowpass": "lowpass",
    "teacher": "teacher",
}
"""Similarity method each control trains towards; "none" trains towards nothing.  A "teacher" target is
a trained classifier's layer similarity (:class:`SimilarityTeacher`); training waits until it is computed,
which waits until the teacher is trained."""


@schema
class ClassificationSet(dj.Manual):
    definition = """
    # a grayscale 32 x 32 image classification set
    classification_set: varchar(32)
    ---
    source: varchar(1024)
    n_classes: int32
    class_names: json
    train_images: <npy@pipeline>        # (n_train, 32, 32) uint8
    train_labels: <npy@pipeline>        # (n_train,) int64
    test_images: <npy@pipeline>         # (n_test, 32, 32) uint8
    test_labels: <npy@pipeline>         # (n_test,) int64
    """

    class Validation(dj.Part):
        definition = """
        # the set's own validation split; a set without one holds out a fraction of its training images
        -> master
        ---
        validation_images: <npy@pipeline>   # (n_validation, 32, 32) uint8
        validation_labels: <npy@pipeline>   # (n_validation,) int64
        """

    @classmethod
    def add(cls, name: str, images: Images) -> tuple[dict, bool]:
        """Insert a classification set (and its validation split, if it has one); returns (key, inserted).
        Present already -> not inserted."""
        key = dict(classification_set=name)
        if cls & key:
            return key, False
        row = dict(
            key,
            source=images.source[:1024],
            n_classes=images.n_classes,
            class_names=list(images.class_names),
            train_images=images.train_images,
            train_labels=images.train_labels,
            test_images=images.test_images,
            test_labels=images.test_labels,
        )
        validation = images.validation_images
        if validation is not None and not cls.Validation().is_declared:
            raise LookupError(
                f"classification set {name!r} has a validation split, but this database has no "
                "ClassificationSet.Validation table yet: run `python -m populate setup` (it adds what is missing)"
            )
        with cls.connection.transaction:  # the set and its validation split, or neither
            cls.insert1(row)
            if validation is not None:
                cls.Validation.insert1(
                    dict(key, validation_images=validation, validation_labels=images.validation_labels)
                )
        return key, True

    @classmethod
    def validation_tensors(cls, key) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The set's own validation split as :meth:`tensors` gives a split, or None for a set without one
        (every set of a database made before the split existed: its table is then not declared)."""
        if not cls.Validation().is_declared:
            return None
        part = cls.Validation & key
        if not part:
            return None
        row = part.fetch1()
        return _as_tensors(row["validation_images"].load(), row["validation_labels"].load())

    @classmethod
    def tensors(cls, key, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 1, 32, 32) float images in [0, 1] and (N,) labels of the train or test split."""
        row = (cls & key).fetch1()
        return _as_tensors(row[f"{split}_images"].load(), row[f"{split}_labels"].load())


def _as_tensors(images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 1, 32, 32) float32 images in [0, 1] and (N,) int64 labels of stored uint8 images and labels."""
    pixels = np.asarray(images, dtype=np.float32) / 255.0
    return torch.from_numpy(pixels)[:, None], torch.from_numpy(np.asarray(labels, dtype=np.int64))


@schema
class ClassifierConfig(ConfigTable, dj.Lookup):
    definition = config_definition(
        "classifier_hash",
        ("control: varchar(16)", "none, neural, shuffled, single_trial, pixel"),
        ("alpha: float64", "weight of the similarity loss"),
        ("width: int32", "channels of the first ResNet stage"),
        comment="architecture, regularization and schedule of a classifier (the seed comes from Seed)",
    )
    config_class = classifier.ClassifierConfig
    seeded_by_table = "classifier"
    config_columns = ("control", "alpha", "width")


@schema
class ClassifierTask(dj.Manual):
    definition = """
    # a classifier to train: config, data, seed, and the neural similarity it is judged against
    -> ClassifierConfig
    -> ClassificationSet
    -> SimilarityTask                   # the neural (model-based) similarity of reference
    -> Seed
    ---
    -> [nullable] SimilarityTask.proj(target_name='similarity_name')  # what it trains towards; null for none
    """

    @classmethod
    def add(
        cls, config: dict, classification_set: str, neural: str, seeds=(0,), target: str | None = None, name: str = ""
    ) -> list[dict]:
        """Insert tasks; ``target`` defaults to ``neural`` for the neural and shuffled controls.

        The similarities need not be computed yet: training waits until they are."""
        settings = ClassifierConfig.validated(config)
        if _method(neural) != "model":
            raise ValueError(f"similarity {neural!r} is not model-based; the reference must be")
        if settings.control == "none":
            target = None
        else:
            target = target or (neural if settings.control in ("neural", "shuffled") else None)
            if target is None or _method(target) != CONTROL_METHODS[settings.control]:
                raise ValueError(
                    f"control {settings.control!r} needs a {CONTROL_METHODS[settings.control]!r} "
                    f"similarity as target, got {target!r}"
                )
        if target is not None:
            _check_disjoint(classification_set, target)
        keys = []
        with atomic(cls().connection):  # no config row is left behind when a task insert fails
            base = dict(
                **ClassifierConfig.add(settings, name=name),
                classification_set=classification_set,
                similarity_name=neural,
            )
            for seed in seeds:
                Seed.insert1(dict(seed=int(seed)), skip_duplicates=True)
                key = dict(base, seed=int(seed))
                cls.insert1(dict(key, target_name=target), skip_duplicates=True)
                keys.append(key)
        return keys


def _check_disjoint(classification_set: str, target: str) -> None:
    """Refuse a regularized classifier whose stimuli share a source with its classification images: the
    regularized arm would see test content the baseline never sees (:mod:`pipeline.data.sources`)."""
    key = dict(classification_set=classification_set)
    if not ClassificationSet & key:
        raise LookupError(f"classification set {classification_set!r} is not in ClassificationSet")
    source = (ClassificationSet & key).fetch1("source")
    shared = sources.shared_photographs(source, stimulus_photographs(target))
    if shared:
        raise ValueError(
            f"classification set {classification_set!r} and the stimuli of similarity {target!r} are cut from "
            f"the same photographs ({', '.join(shared)}): a regularized classifier would train on its test "
            "images' source; use a set with no shared source (e.g. the shapes task)"
        )


def _method(similarity_name: str) -> str:
    task = SimilarityTask & dict(similarity_name=similarity_name)
    if not task:
        raise LookupError(f"similarity {similarity_name!r} is not a SimilarityTask")
    return (SimilarityConfig & task.fetch1()).fetch1("method")


def stimulus_images(similarity_name: str) -> torch.Tensor:
    """The images of a similarity's image set as classifier inputs, (n, 1, 32, 32) in [0, 1]."""
    return denoise.classifier_inputs(task_images(similarity_name))


def _open_similarity(similarity_name: str) -> sim.SimilarityStore:
    key = dict(similarity_name=similarity_name)
    require(Similarity(), key)
    return Similarity.open(key)


@schema
class TrainedClassifier(Readiness, dj.Computed):
    definition = """
    # a trained classifier, its weights and clean accuracy
    -> ClassifierTask
    ---
    weights: <blob@pipeline>            # network state dict as numpy arrays
    regularizer: <blob@pipeline>        # similarity regularizer state (layer weights, running means)
    clean_accuracy: float64             # on the set's test images
    validation_accuracy = null: float64 # on the held-out training images
    similarity_fidelity: float64        # r of the final S_model with the reference neural similarity
    layer_weights: json                 # softmax(gamma) per layer
    steps: int32
    train_seconds: float64
    device: varchar(32)
    code_version: varchar(64)
    history: <blob>
    """

    def inputs(self) -> dict:
        tasks = ClassifierTask.proj()
        targeted = ClassifierTask.proj("target_name") & "target_name IS NOT NULL"
        return {
            "Similarity (reference)": tasks & Similarity.proj(),
            "Similarity (target)": tasks - (targeted - Similarity.proj(target_name="similarity_name")).proj(),
        }

    def make_fetch(self, key):
        task = (ClassifierTask & key).fetch1()
        return (ClassifierConfig & key).fetch1("config"), task["target_name"]

    def make_compute(self, key, config, target_name):
        config = classifier.ClassifierConfig.from_dict(config).replace(seed=key["seed"])
        device = resolve_device()
        train_images, train_labels = ClassificationSet.tensors(key, "train")
        test_images, test_labels = ClassificationSet.tensors(key, "test")
        reference = _open_similarity(key["similarity_name"])
        stimuli = target = None
        if target_name is not None:
            stimuli = stimulus_images(target_name)
            target = _open_similarity(target_name)
            if config.control == "shuffled":
                target = target.shuffled(sim.random_permutation(target.n, key["seed"]))
        start = time.perf_counter()
        model = classifier.build_classifier(config)
        # An interrupted job resumes from its latest checkpoint (schemas.checkpoints).
        checkpoint, progress_log = checkpoints.supervision(self, key, (config.to_dict(), target_name), "classifier")
        fit = classifier.fit_classifier(
            model,
            train_images,
            train_labels,
            stimuli,
            target,
            config,
            device=device,
            checkpoint=checkpoint,
            progress_log=progress_log,
            validation=ClassificationSet.validation_tensors(key),
            test=(test_images, test_labels),
        )
        seconds = time.perf_counter() - start
        model, regularizer = classifier.restore(fit, config)
        fidelity = classifier.similarity_fidelity(
            model, regularizer, stimulus_images(key["similarity_name"]), reference, seed=key["seed"], device=device
        )
        return (
            dict(
                weights={k: v.numpy() for k, v in fit.state_dict.items()},
                regularizer={k: v.numpy() for k, v in fit.regularizer_state.items()},
                clean_accuracy=classifier.accuracy(model, test_images, test_labels),
                validation_accuracy=fit.validation_accuracy,
                similarity_fidelity=fidelity,
                layer_weights=dict(fit.layer_weights),
                steps=fit.n_steps,
                train_seconds=seconds,
                device=str(device),
                history=fit.history,
            ),
        )

    def make_insert(self, key, result):
        checkpoints.clear(self, key)
        self.insert1(dict(key, **result, code_version=pipeline.code_version()))

    @classmethod
    def load_model(cls, key, device=None) -> torch.nn.Module:
        """The trained network of one classifier, in eval mode on ``device``."""
        row = require(cls(), key).fetch1()
        config = ClassifierConfig.load(row)
        model = classifier.build_classifier(config)
        model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in row["weights"].items()})
        return model.to(resolve_device(device)).eval()

    @classmethod
    def load_regularizer(cls, key, model: torch.nn.Module):
        """The similarity regularizer (layer weights, running means) of one classifier, in eval mode."""
        row = require(cls(), key).fetch1()
        regularizer = classifier.build_regularizer(model, ClassifierConfig.load(row))
        regularizer.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in row["regularizer"].items()})
        return regularizer.eval()


# The evaluations' tables belong to this schema; their module holds them apart from training.
KEPT_TABLES = {
    "schemas.classifier_evaluation": (
        "AdversarialEvaluation",
        "CommonImages",
        "ComparisonGroup",
        "EvaluationConfig",
        "NoiseEvaluation",
        "TargetInvariance",
    ),
    "schemas.teacher": ("SimilarityTeacher",),
}
__getattr__ = tables_kept_in(__name__, KEPT_TABLES)
