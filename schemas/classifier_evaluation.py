"""Robustness evaluations of the trained classifiers: accuracy under pixel noise, the noise invariance of
their similarity and of the similarity targets, and minimal adversarial perturbations on the common
images of a comparison.

Tables of the ``classifiers`` schema (importable from :mod:`schemas.classifiers`), kept in a module of their own.
"""

from __future__ import annotations

import datajoint as dj
import numpy as np
import torch

from pipeline import classifier
from pipeline.classifier import attacks, invariance, robustness
from pipeline.classifier.evaluation import EvaluationSettings, seeded_subset
from pipeline.device import resolve_device
from pipeline.models import denoise
from pipeline.stats import finite_or
from schemas.classifiers import ClassificationSet, ClassifierTask, TrainedClassifier, schema
from schemas.configs import ConfigTable, config_definition
from schemas.readiness import Readiness
from schemas.similarity import Similarity, SimilarityConfig, SimilarityTask, target_vectors, task_images


@schema
class EvaluationConfig(ConfigTable, dj.Lookup):
    definition = config_definition("evaluation_hash")
    config_class = EvaluationSettings


def _test_subset(key, n: int | None, seed: int) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    images, labels = ClassificationSet.tensors(key, "test")
    index = seeded_subset(len(labels), n, seed)
    return index, images[index], labels[index]


_INVARIANCE_LEVEL = """
    -> master
    noise_std: float64              # Gaussian noise std, image range [0, 1]
    ---
    correlation: float64
    n_pairs: int32
    """
"""Part table of one noise level of an invariance measurement, a row of
:func:`pipeline.classifier.invariance.invariance_levels`:
r of a similarity of clean stimulus pairs with that of the same pairs of noisy stimuli."""


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
    # accuracy under pixel noise of increasing strength, and the noise invariance of the network's similarity
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

    class Invariance(dj.Part):
        definition = (
            "# r of the network's layer similarity of clean stimulus pairs with that of noisy ones" + _INVARIANCE_LEVEL
        )

    def make(self, key):
        settings = EvaluationConfig.load(key)
        _, images, labels = _test_subset(key, settings.noise_images, settings.seed)
        model = TrainedClassifier.load_model(key)
        rows = robustness.noise_accuracy(
            model,
            images,
            labels,
            kinds=tuple(settings.noise_levels),
            strengths=settings.noise_levels,
            seed=settings.seed,
            progress=True,
        )
        invariance_rows = _network_invariance(key, model, settings)
        self.insert1(dict(key, n_images=len(labels), device=str(resolve_device())))
        self.Level.insert(
            dict(key, noise_type=r["kind"], strength=float(r["strength"]), accuracy=float(r["accuracy"])) for r in rows
        )
        self.Invariance.insert(dict(key, **row) for row in invariance_rows)


def _invariance_stimuli(similarity_name: str, settings: EvaluationSettings) -> np.ndarray:
    """The seeded draw of (n, H, W) grey-level stimuli of a similarity's image set used for invariance."""
    images = task_images(similarity_name)
    return images[seeded_subset(len(images), settings.invariance_images, settings.seed)]


def _network_invariance(key, model, settings: EvaluationSettings) -> list[dict]:
    """Noise invariance of a classifier's own layer similarity over its reference stimuli."""
    regularizer = TrainedClassifier.load_regularizer(key, model)

    def similarities(images: np.ndarray) -> np.ndarray:
        lookup = lambda a, b: np.zeros(len(a))  # noqa: E731 (no target: only S_model is wanted)
        s_model, _ = classifier.similarity_pairs(
            model,
            regularizer,
            denoise.classifier_inputs(images),
            lookup,
            n_pairs=settings.invariance_pairs,
            seed=settings.seed,
        )
        return s_model

    stimuli = _invariance_stimuli(key["similarity_name"], settings)
    return invariance.invariance_levels(similarities, stimuli, settings.invariance_std, settings.seed)


@schema
class TargetInvariance(Readiness, dj.Computed):
    definition = """
    # noise invariance of a similarity target: r of its similarity of clean pairs with that of noisy pairs
    -> SimilarityTask
    -> EvaluationConfig
    ---
    n_images: int32
    """

    class Level(dj.Part):
        definition = _INVARIANCE_LEVEL

    @property
    def candidates(self):
        # the targets that have values for new images (not the recorded single trials)
        methods = SimilarityConfig & "method in ('model', 'pixel', 'lowpass', 'teacher')"
        return (SimilarityTask & methods).proj() * EvaluationConfig.proj()

    def inputs(self) -> dict:
        return {"Similarity": Similarity.proj()}

    def make(self, key):
        settings = EvaluationConfig.load(key)
        stimuli = _invariance_stimuli(key["similarity_name"], settings)
        i, j = invariance.random_pairs(len(stimuli), settings.invariance_pairs, settings.seed)

        def similarities(images: np.ndarray) -> np.ndarray:
            return np.mean(
                [invariance.pair_similarity(v, i, j) for v in target_vectors(key["similarity_name"], images)], axis=0
            )

        levels = invariance.invariance_levels(similarities, stimuli, settings.invariance_std, settings.seed)
        self.insert1(dict(key, n_images=len(stimuli)))
        self.Level.insert(dict(key, **level) for level in levels)


@schema
class ComparisonGroup(dj.Manual):
    definition = """
    # classifiers compared with each other (one experiment): attacked on one common image set
    comparison: varchar(64)
    ---
    -> ClassificationSet
    description = '': varchar(1024)
    """

    class Member(dj.Part):
        definition = """
        -> master
        -> ClassifierTask
        """

    @classmethod
    def create(cls, name: str, tasks: list[dict], description: str = "") -> dict:
        """Declare a comparison of ``tasks`` (ClassifierTask keys, one classification set); idempotent."""
        key = dict(comparison=name)
        tasks = [{k: t[k] for k in ClassifierTask.primary_key} for t in tasks]
        if cls & key:
            present = {tuple(sorted(m.items())) for m in (cls.Member & key).proj().keys()}
            wanted = {tuple(sorted(dict(t, **key).items())) for t in tasks}
            if present != wanted:
                raise ValueError(f"comparison {name!r} exists with other members; choose another name")
            return key
        sets = {t["classification_set"] for t in tasks}
        if len(sets) != 1:
            raise ValueError(f"comparison {name!r}: members must share one classification set, got {sorted(sets)}")
        missing = [t for t in tasks if not (ClassifierTask & t)]
        if missing:
            raise ValueError(f"comparison {name!r}: not ClassifierTask rows: {missing[:3]}")
        with dj.conn().transaction:
            cls.insert1(dict(key, classification_set=sets.pop(), description=description[:1024]))
            cls.Member.insert(dict(t, **key) for t in tasks)
        return key


@schema
class CommonImages(Readiness, dj.Computed):
    definition = """
    # the test images every member of a comparison classifies correctly: the attacks' common set
    -> ComparisonGroup
    -> EvaluationConfig
    ---
    n_candidates: int32                 # test images scanned (a seeded draw)
    n_members: int32
    """

    class Image(dj.Part):
        definition = """
        -> master
        image_index: int32              # index into the set's test images
        """

    def inputs(self) -> dict:
        untrained = ComparisonGroup.Member.proj() - TrainedClassifier.proj()
        return {"TrainedClassifier of every member": ComparisonGroup.proj() - untrained.proj()}

    def make(self, key):
        settings = EvaluationConfig.load(key)
        group = (ComparisonGroup & key).fetch1()
        index, images, labels = _test_subset(group, settings.attack_candidates, settings.seed)
        members = (ComparisonGroup.Member & key).keys()
        correct = np.stack(
            [(robustness.predict(TrainedClassifier.load_model(m), images) == labels).numpy() for m in members]
        )
        chosen = index[attacks.common_images(correct, settings.attack_images)]
        self.insert1(dict(key, n_candidates=len(index), n_members=len(members)))
        self.Image.insert(dict(key, image_index=int(i)) for i in chosen)


@schema
class AdversarialEvaluation(Readiness, dj.Computed):
    definition = """
    # minimal adversarial perturbations of one member of a comparison on the comparison's common images
    -> CommonImages
    -> ComparisonGroup.Member
    ---
    n_images: int32                     # images attacked (the common set)
    median_l2 = null: float64           # median over the common images at the longest attack (an image
    median_linf = null: float64         #   without adversarial counts as infinite: null when over half)
    l2_flat_steps = null: int32         # first step count whose median is within flatten_tolerance of
    linf_flat_steps = null: int32       #   the longest attack's (convergence)
    device: varchar(32)                 # torch device the make computed on, e.g. cpu, cuda:0
    """

    class Image(dj.Part):
        definition = """
        # per image, the smallest perturbation found within the longest attack (EvaluationSettings.attack)
        -> master
        norm: varchar(8)                # l2 or linf (a separate attack each)
        image_index: int32              # index into the set's test images
        ---
        distance = null: float64        # pixel units, image range [0, 1]; null where none was found
        """

    class Convergence(dj.Part):
        definition = """
        # median distance over the common images against the attack's step count
        -> master
        norm: varchar(8)
        steps: int32
        ---
        median_distance = null: float64 # null where over half the images had no adversarial yet
        """

    @property
    def candidates(self):
        return CommonImages.proj() * ComparisonGroup.Member.proj()

    def make_fetch(self, key):
        return (EvaluationConfig & key).fetch1("config"), (CommonImages.Image & key).to_arrays(
            "image_index", order_by="image_index"
        )

    def make_compute(self, key, config, index):
        settings = EvaluationSettings.from_dict(config)
        images, labels = ClassificationSet.tensors(key, "test")
        images, labels = images[index], labels[index]
        model = TrainedClassifier.load_model(key)
        summary = dict(n_images=len(index), device=str(resolve_device()))
        per_image, curve = [], []
        for norm in settings.norms:
            schedule = settings.schedule(norm)
            distances = attacks.minimal_perturbations(
                model, images, labels, norm, schedule, progress=True, method=settings.attack(norm)
            )
            medians = attacks.median_curve(distances)
            summary[f"median_{norm}"] = finite_or(medians[-1], None)
            summary[f"{norm}_flat_steps"] = attacks.flattening_step(schedule, medians, settings.flatten_tolerance)
            per_image += [
                dict(norm=norm, image_index=int(i), distance=finite_or(d, None)) for i, d in zip(index, distances[-1])
            ]
            curve += [
                dict(norm=norm, steps=int(s), median_distance=finite_or(m, None)) for s, m in zip(schedule, medians)
            ]
        return summary, per_image, curve

    def make_insert(self, key, summary, per_image, curve):
        self.insert1(dict(key, **summary))
        self.Image.insert(dict(key, **row) for row in per_image)
        self.Convergence.insert(dict(key, **row) for row in curve)
