"""Image classifiers regularized towards neural similarity, their controls, and robustness evaluations."""

from __future__ import annotations

import dataclasses
import time
from typing import Optional

import datajoint as dj
import numpy as np
import torch

import pipeline
from pipeline import denoise, robustness
from pipeline import similarity as sim
from pipeline.classifier import train as classifier
from pipeline.config import Config, ConfigError
from pipeline.data.cifar import ClassificationSet as Images
from pipeline.device import resolve_device

from . import db
from .configs import ConfigTable
from .models import Seed
from .readiness import Readiness, require
from .similarity import ImageSet, Similarity, SimilarityConfig, SimilarityTask

schema = db.schema("classifiers")

CONTROL_METHODS = {"neural": "model", "shuffled": "model", "single_trial": "single_trial", "pixel": "pixel"}
"""Similarity method each control trains towards; "none" trains towards nothing."""


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

    @classmethod
    def add(cls, name: str, images: Images) -> tuple[dict, bool]:
        """Insert a classification set; returns (key, inserted). Present already -> not inserted."""
        key = dict(classification_set=name)
        if cls & key:
            return key, False
        cls.insert1(
            dict(
                key,
                source=images.source[:1024],
                n_classes=images.n_classes,
                class_names=list(images.class_names),
                train_images=images.train_images,
                train_labels=images.train_labels,
                test_images=images.test_images,
                test_labels=images.test_labels,
            )
        )
        return key, True

    @classmethod
    def tensors(cls, key, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 1, 32, 32) float images in [0, 1] and (N,) labels of the train or test split."""
        row = (cls & key).fetch1()
        images = np.asarray(row[f"{split}_images"].load(), dtype=np.float32) / 255.0
        labels = np.asarray(row[f"{split}_labels"].load(), dtype=np.int64)
        return torch.from_numpy(images)[:, None], torch.from_numpy(labels)


@schema
class ClassifierConfig(ConfigTable, dj.Lookup):
    definition = """
    # architecture, regularization and schedule of a classifier (the seed comes from Seed)
    classifier_hash: char(32)
    ---
    config_name = '': varchar(64)
    control: varchar(16)                # none, neural, shuffled, single_trial, pixel
    alpha: float64                      # weight of the similarity loss
    width: int32                        # channels of the first ResNet stage
    config: json
    """
    config_class = classifier.ClassifierConfig
    hash_attribute = "classifier_hash"

    @classmethod
    def validated(cls, config=None, **values):
        config = super().validated(config, **values)
        if config.seed != classifier.ClassifierConfig.__dataclass_fields__["seed"].default:
            raise ValueError("classifier config key 'seed' is not allowed: seeds come from the Seed table")
        return config

    @classmethod
    def config_attributes(cls, config) -> dict:
        return dict(control=config.control, alpha=config.alpha, width=config.width)


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
        base = dict(
            **ClassifierConfig.add(settings, name=name), classification_set=classification_set, similarity_name=neural
        )
        keys = []
        for seed in seeds:
            Seed.insert1(dict(seed=int(seed)), skip_duplicates=True)
            key = dict(base, seed=int(seed))
            cls.insert1(dict(key, target_name=target), skip_duplicates=True)
            keys.append(key)
        return keys


def _method(similarity_name: str) -> str:
    task = SimilarityTask & dict(similarity_name=similarity_name)
    if not task:
        raise LookupError(f"similarity {similarity_name!r} is not a SimilarityTask")
    return (SimilarityConfig & task.fetch1()).fetch1("method")


def _stimulus_images(similarity_name: str) -> torch.Tensor:
    image_set = (SimilarityTask & dict(similarity_name=similarity_name)).fetch1("image_set")
    return denoise.classifier_inputs(ImageSet.images(dict(image_set=image_set)))


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
            stimuli = _stimulus_images(target_name)
            target = _open_similarity(target_name)
            if config.control == "shuffled":
                target = target.shuffled(sim.random_permutation(target.n, key["seed"]))
        start = time.perf_counter()
        model = classifier.build_classifier(config)
        fit = classifier.fit_classifier(model, train_images, train_labels, stimuli, target, config, device=device)
        seconds = time.perf_counter() - start
        model, regularizer = classifier.restore(fit, config)
        fidelity = classifier.similarity_fidelity(
            model, regularizer, _stimulus_images(key["similarity_name"]), reference, seed=key["seed"], device=device
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
        self.insert1(dict(key, **result, code_version=pipeline.code_version()))

    @classmethod
    def load_model(cls, key, device=None) -> torch.nn.Module:
        """The trained network of one classifier, in eval mode on ``device``."""
        row = require(cls(), key).fetch1()
        config = ClassifierConfig.load(row)
        model = classifier.build_classifier(config)
        model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in row["weights"].items()})
        return model.to(resolve_device(device)).eval()


@dataclasses.dataclass(frozen=True)
class EvaluationSettings(Config):
    """Robustness evaluation settings.

    noise_images : test images for the noise curves (None: all).
    attack_images : test images given to the Boundary attack (the paper: 1000).
    attack_steps : Boundary attack steps.
    pgd_linf, pgd_l2 : PGD budgets (L_inf in [0, 1] pixel units, L2 over the 32 x 32 image).
    seed : noise draws and image selection.
    """

    noise_images: Optional[int] = None
    attack_images: int = 1000
    attack_steps: int = 25000
    pgd_linf: tuple[float, ...] = (1 / 255, 2 / 255, 4 / 255)
    pgd_l2: tuple[float, ...] = (0.1, 0.25, 0.5)
    pgd_steps: int = 20
    seed: int = 0

    def validate(self) -> None:
        if self.attack_images < 1 or self.attack_steps < 1 or self.pgd_steps < 1:
            raise ConfigError("attack_images, attack_steps and pgd_steps must be >= 1")


@schema
class EvaluationConfig(ConfigTable, dj.Lookup):
    definition = """
    evaluation_hash: char(32)
    ---
    config_name = '': varchar(64)
    config: json
    """
    config_class = EvaluationSettings
    hash_attribute = "evaluation_hash"


def _test_subset(key, n: int | None, seed: int) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    images, labels = ClassificationSet.tensors(key, "test")
    index = np.arange(len(labels))
    if n is not None and n < len(index):
        index = np.sort(np.random.default_rng(seed).choice(len(index), n, replace=False))
    return index, images[index], labels[index]


class _Evaluation(Readiness):
    """An evaluation of every trained classifier under every evaluation config: it waits for the classifier."""

    @property
    def candidates(self):
        return ClassifierTask.proj() * EvaluationConfig.proj()

    def inputs(self) -> dict:
        return {"TrainedClassifier": TrainedClassifier.proj()}


@schema
class NoiseEvaluation(_Evaluation, dj.Computed):
    definition = """
    # accuracy under additive noise of increasing strength
    -> TrainedClassifier
    -> EvaluationConfig
    ---
    n_images: int32
    device: varchar(32)                 # torch device the make computed on, e.g. cpu, cuda:0
    """

    class Level(dj.Part):
        definition = """
        -> master
        noise_type: varchar(16)         # gaussian, uniform, salt_pepper
        strength: float64               # std, half-width or pixel fraction, image range [0, 1]
        ---
        accuracy: float64
        """

    def make(self, key):
        settings = EvaluationConfig.load(key)
        _, images, labels = _test_subset(key, settings.noise_images, settings.seed)
        model = TrainedClassifier.load_model(key)
        rows = robustness.noise_accuracy(model, images, labels, seed=settings.seed, progress=True)
        self.insert1(dict(key, n_images=len(labels), device=str(resolve_device())))
        self.Level.insert(
            dict(key, noise_type=r["kind"], strength=float(r["strength"]), accuracy=float(r["accuracy"])) for r in rows
        )


@schema
class AdversarialEvaluation(_Evaluation, dj.Computed):
    definition = """
    # minimal adversarial perturbations (Boundary attack) and accuracy under PGD
    -> TrainedClassifier
    -> EvaluationConfig
    ---
    n_images: int32                     # images attacked (correctly classified among those drawn)
    median_l2 = null: float64           # median minimal L2 perturbation (failures count as infinite: null
    median_linf = null: float64         #   when over half fail); L_inf of the same adversarials
    pgd: json                           # [{norm, eps, accuracy}]
    device: varchar(32)                 # torch device the make computed on, e.g. cpu, cuda:0
    """

    class Image(dj.Part):
        definition = """
        -> master
        image_index: int32              # index into the set's test images
        ---
        l2 = null: float64              # null where no adversarial was found
        linf = null: float64
        """

    def make_fetch(self, key):
        return ((EvaluationConfig & key).fetch1("config"),)

    def make_compute(self, key, config):
        settings = EvaluationSettings.from_dict(config)
        index, images, labels = _test_subset(key, settings.attack_images, settings.seed)
        model = TrainedClassifier.load_model(key)
        found = robustness.minimal_perturbations(
            model, images, labels, steps=settings.attack_steps, seed=settings.seed, progress=True
        )
        pgd = [
            dict(
                norm=norm,
                eps=eps,
                accuracy=robustness.pgd_accuracy(
                    model, images, labels, norm=norm, eps=eps, steps=settings.pgd_steps, seed=settings.seed
                ),
            )
            for norm, budgets in (("linf", settings.pgd_linf), ("l2", settings.pgd_l2))
            for eps in budgets
        ]
        attacked = np.flatnonzero(found["correct"])
        per_image = [
            dict(image_index=int(index[i]), l2=_finite(found["l2"][i]), linf=_finite(found["linf"][i]))
            for i in attacked
        ]
        return dict(
            n_images=len(attacked),
            median_l2=_finite(found["median_l2"]),
            median_linf=_finite(found["median_linf"]),
            pgd=pgd,
            device=str(resolve_device()),
        ), per_image

    def make_insert(self, key, summary, per_image):
        self.insert1(dict(key, **summary))
        self.Image.insert(dict(key, **row) for row in per_image)


def _finite(value) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None
