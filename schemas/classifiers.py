"""Image classifiers regularized towards neural similarity, their controls, and robustness evaluations."""

from __future__ import annotations

import time

import datajoint as dj
import numpy as np
import torch

import pipeline
from pipeline.classifier import attacks, invariance, robustness
from pipeline.classifier import train as classifier
from pipeline.classifier.evaluation import EvaluationSettings
from pipeline.data.cifar import ClassificationSet as Images
from pipeline.device import resolve_device
from pipeline.models import denoise
from pipeline.similarity import pairs as sim
from pipeline.stats import finite_or
from schemas.binding import StageSchema
from schemas.configs import ConfigTable
from schemas.models import Seed
from schemas.readiness import Readiness, require
from schemas.similarity import ImageSet, Similarity, SimilarityConfig, SimilarityTask, target_vectors

schema = StageSchema("classifiers")

CONTROL_METHODS = {
    "neural": "model",
    "shuffled": "model",
    "single_trial": "single_trial",
    "pixel": "pixel",
    "lowpass": "lowpass",
}
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

    @classmethod
    def load_regularizer(cls, key, model: torch.nn.Module):
        """The similarity regularizer (layer weights, running means) of one classifier, in eval mode."""
        row = require(cls(), key).fetch1()
        regularizer = classifier.build_regularizer(model, ClassifierConfig.load(row))
        regularizer.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in row["regularizer"].items()})
        return regularizer.eval()


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


def _draw(n_total: int, n: int | None, seed: int) -> np.ndarray:
    """Sorted seeded draw of ``n`` of ``n_total`` indices (all when ``n`` is None or larger)."""
    index = np.arange(n_total)
    if n is not None and n < n_total:
        index = np.sort(np.random.default_rng(seed).choice(n_total, n, replace=False))
    return index


def _test_subset(key, n: int | None, seed: int) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    images, labels = ClassificationSet.tensors(key, "test")
    index = _draw(len(labels), n, seed)
    return index, images[index], labels[index]


_INVARIANCE_LEVEL = """
    -> master
    noise_std: float64              # Gaussian noise std, image range [0, 1]
    ---
    correlation: float64
    n_pairs: int32
    """
"""Part table of one noise level of an invariance measurement, a row of :func:`_invariance_levels`:
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
    image_set = (SimilarityTask & dict(similarity_name=similarity_name)).fetch1("image_set")
    images = ImageSet.images(dict(image_set=image_set))
    return images[_draw(len(images), settings.invariance_images, settings.seed)]


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

    return _invariance_levels(similarities, _invariance_stimuli(key["similarity_name"], settings), settings)


def _invariance_levels(similarities, stimuli: np.ndarray, settings: EvaluationSettings) -> list[dict]:
    """Rows {noise_std, n_pairs, correlation}: r of ``similarities(stimuli)`` with that of noisy stimuli.

    similarities : (n, H, W) grey-level images -> (invariance_pairs,) similarities of the same pairs.
    """
    clean = similarities(stimuli)
    return [
        dict(
            noise_std=float(std),
            n_pairs=len(clean),
            correlation=invariance.invariance(
                clean, similarities(invariance.noisy_images(stimuli, std, settings.seed))
            ),
        )
        for std in settings.invariance_std
    ]


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
        methods = SimilarityConfig & "method in ('model', 'pixel', 'lowpass')"
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

        levels = _invariance_levels(similarities, stimuli, settings)
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
