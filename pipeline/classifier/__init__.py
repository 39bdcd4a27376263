"""Image classifiers (ResNet18) trained with and without neural-similarity regularization.

Modules: ``config`` (training settings), ``resnet`` (the network), ``regularizer`` (the similarity
loss), ``batches`` (images and stimulus pairs of a step), ``step`` (one optimizer update),
``train`` (the training run), ``measure`` (accuracy and similarity fidelity), ``robustness``,
``attacks``, ``invariance`` and ``evaluation`` (what a trained classifier is tested on), ``teacher``
(the layer similarity of a trained network as a target, and its noise invariance),
``baselines`` (what a task's trivial classifiers reach) and ``alpha_rule`` (the similarity weight an arm
is compared at).
"""

from pipeline.classifier.batches import PairBatch, augment, sample_pairs, step_pairs
from pipeline.classifier.config import ClassifierConfig
from pipeline.classifier.measure import accuracy, similarity_fidelity, similarity_pairs
from pipeline.classifier.step import training_step
from pipeline.classifier.train import (
    ClassifierFit,
    build_classifier,
    build_regularizer,
    fit_classifier,
    learning_rate,
    restore,
)

__all__ = [
    "ClassifierConfig",
    "ClassifierFit",
    "PairBatch",
    "accuracy",
    "augment",
    "build_classifier",
    "build_regularizer",
    "fit_classifier",
    "learning_rate",
    "restore",
    "sample_pairs",
    "similarity_fidelity",
    "similarity_pairs",
    "step_pairs",
    "training_step",
]
