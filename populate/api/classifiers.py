"""The notebook API's classifier frames: trained classifiers, their training curves, noise and attack
results (re-exported by :mod:`populate.api`, which documents the conventions)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from populate.api.frames import curves, one_key, restrict, stage, to_frame

_CLASSIFIER_COLUMNS = ("config_name", "control", "alpha", "width")


def _evaluation_names():
    """``EvaluationConfig`` with its name as ``evaluation``: a database may hold several evaluation
    settings, and every result row says which one it belongs to."""
    return stage("classifiers").EvaluationConfig.proj(evaluation="config_name")


def classifiers(restriction=None) -> pd.DataFrame:
    """One row per trained classifier: control, alpha, width, seed, clean and validation accuracy,
    similarity fidelity (r of S_model with the neural similarity), training time."""
    c = stage("classifiers")
    query = c.TrainedClassifier.proj(
        "clean_accuracy",
        "validation_accuracy",
        "similarity_fidelity",
        "steps",
        "train_seconds",
        "device",
    ) * c.ClassifierConfig.proj(*_CLASSIFIER_COLUMNS)
    return to_frame(restrict(query, restriction), order_by=["control", "alpha", "seed"])


def load_classifier(key, device=None):
    """The trained ResNet (``torch.nn.Module`` in eval mode) of one classifier.

    key : a key dict, a row of :func:`classifiers`, or a query selecting exactly one classifier.
    Inputs are (B, 1, 32, 32) grey images in [0, 1]; outputs are class logits (B, n_classes).
    """
    c = stage("classifiers")
    return c.TrainedClassifier.load_model(one_key(c.TrainedClassifier, key), device=device)


CLASSIFIER_CURVE = (
    "epoch",
    "lr",
    "steps",
    "train_loss",
    "train_accuracy",
    "similarity_loss",
    "validation_accuracy",
    "test_accuracy",
    "seconds",
)


def classifier_curves(restriction=None) -> pd.DataFrame:
    """The stored per-epoch history of every trained classifier, long form: one row per classifier and
    epoch with its key, control, alpha, width, seed, ``run`` (a label per classifier) and ``epoch``,
    ``lr``, ``steps``, ``train_loss`` (cross-entropy), ``train_accuracy``, ``similarity_loss``
    (unweighted regularizer loss; NaN for the baseline), ``validation_accuracy``, ``test_accuracy`` (NaN
    for classifiers trained before it was recorded) and ``seconds``."""
    c = stage("classifiers")
    query = restrict(c.TrainedClassifier.proj("history") * c.ClassifierConfig.proj(*_CLASSIFIER_COLUMNS), restriction)
    return curves(
        query,
        ["control", "alpha", "seed"],
        lambda r: f"{r['control']} alpha {r['alpha']:g} seed {r['seed']}",
        CLASSIFIER_CURVE,
    )


def classifier_robustness(restriction=None) -> pd.DataFrame:
    """Long form: one row per classifier x evaluation config x noise type x strength with its control,
    alpha, seed, ``evaluation_hash`` and ``evaluation`` (the config's name) and accuracy (fraction
    correct); strengths are on [0, 1] images."""
    c = stage("classifiers")
    query = c.NoiseEvaluation.Level * c.ClassifierConfig.proj(*_CLASSIFIER_COLUMNS) * _evaluation_names()
    return to_frame(restrict(query, restriction), order_by=["noise_type", "control", "alpha", "seed", "strength"])


def adversarial_summary(restriction=None) -> pd.DataFrame:
    """One row per comparison x evaluation config x evaluated classifier with its control, alpha, seed,
    ``evaluation`` (the config's name), common images attacked, median minimal perturbation
    (``median_l2``, ``median_linf``; missing when half or more of the attacks failed), the number of
    images whose attack failed (``l2_failed``, ``linf_failed``: no adversarial within the longest
    attack; missing where that norm was not attacked) and the step counts where the attacks' median
    flattened (``l2_flat_steps``, ``linf_flat_steps``)."""
    c = stage("classifiers")
    query = restrict(
        c.AdversarialEvaluation.proj("n_images", "median_l2", "median_linf", "l2_flat_steps", "linf_flat_steps")
        * c.ClassifierConfig.proj(*_CLASSIFIER_COLUMNS)
        * _evaluation_names(),
        restriction,
    )
    frame = to_frame(query, order_by=["control", "alpha", "seed"])
    key = list(c.AdversarialEvaluation.primary_key)
    failed = _failed_attacks(c.AdversarialEvaluation.Image & query.proj(), key)
    frame = frame.merge(failed, on=key, how="left") if len(failed) else frame.assign(l2_failed=None, linf_failed=None)
    return frame.astype({"l2_failed": "Int64", "linf_failed": "Int64"})  # counts, missing where not attacked


def _failed_attacks(images, key: list[str]) -> pd.DataFrame:
    """Per adversarial evaluation (``key``), ``l2_failed`` and ``linf_failed``: the images stored
    without an adversarial (distance null; +inf for :func:`pipeline.classifier.attacks.failure_count`),
    counted from the per-image rows, so that no table stores anything new; NaN where a norm has none."""
    frame = to_frame(images.proj("distance"))
    if frame.empty:
        return pd.DataFrame(columns=[*key, "l2_failed", "linf_failed"])
    counts = frame["distance"].isna().groupby([frame[k] for k in [*key, "norm"]]).sum().unstack("norm")
    counts = counts.reindex(columns=["l2", "linf"]).rename(columns=lambda norm: f"{norm}_failed")
    counts.columns.name = None
    return counts.reset_index()


def adversarial(restriction=None) -> pd.DataFrame:
    """Long form: one row per comparison x evaluation config x classifier x attacked image (the
    comparison's common set) with its control, alpha, seed, ``evaluation`` (the config's name) and
    minimal adversarial perturbation (``l2``, ``linf``: separate attacks; missing where the attack
    found none)."""
    c = stage("classifiers")
    query = c.AdversarialEvaluation.Image * c.ClassifierConfig.proj(*_CLASSIFIER_COLUMNS) * _evaluation_names()
    frame = to_frame(restrict(query, restriction), order_by=["control", "alpha", "seed", "image_index"])
    index = [name for name in frame.columns if name not in ("norm", "distance")]
    wide = (
        frame.pivot_table(index=index, columns="norm", values="distance", dropna=False, aggfunc="first")
        if not frame.empty
        else pd.DataFrame(columns=index)
    )
    wide = wide.reset_index() if not frame.empty else wide
    wide.columns.name = None
    for norm in ("l2", "linf"):
        if norm not in wide.columns:
            wide[norm] = np.nan
    return wide


def classifier_similarity_pairs(
    key, n_pairs: int = 2000, seed: int | None = None, device=None
) -> tuple[np.ndarray, np.ndarray]:
    """S_model and S_neural over ``n_pairs`` random stimulus pairs for one trained classifier.

    Computed as for ``TrainedClassifier.similarity_fidelity``: the network in eval mode, its
    regularizer's layer weights, features centred by their exact means over the stimulus images.
    With the defaults (2000 pairs drawn with the classifier's seed) these are the very pairs that
    ``similarity_fidelity`` correlates.  Returns two (n_pairs,) arrays of cosines.
    """
    from pipeline import classifier

    c = stage("classifiers")
    key = one_key(c.TrainedClassifier, key)
    model = load_classifier(key, device=device)
    regularizer = c.TrainedClassifier.load_regularizer(key, model)
    stimuli = c.stimulus_images(key["similarity_name"])
    reference = c.Similarity.open(c.SimilarityTask & key)
    return classifier.similarity_pairs(
        model,
        regularizer,
        stimuli,
        reference,
        n_pairs=n_pairs,
        seed=key["seed"] if seed is None else seed,
        device=device,
    )
