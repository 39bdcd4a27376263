"""The sections of ``python -m populate report``: what each stage shows, as figures, tables and notes.

Each builder fills a :class:`Panel` from :mod:`populate.api` frames, or raises :class:`NotComputed`
saying what to run; :mod:`populate.report.page` renders the panels into the page.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import logging
import re
from typing import Callable

import numpy as np
import pandas as pd
from markupsafe import Markup

from populate import api
from populate.api import findings
from populate.report import provenance

log = logging.getLogger(__name__)

MAX_TABLE_ROWS = 50
MAX_CELLTYPE_MODELS = 3
MAX_MATRICES = 3
MATRIX_IMAGES = 64
SHORT_HASH = 8
_HASH = re.compile(r"[0-9a-f]{32}")


class NotComputed(Exception):
    """A stage has nothing to show yet; the message says what to run."""


@dataclasses.dataclass
class Panel:
    """The body of one section: its blocks (figure, table or note, for the template) in order, and
    how many of them are figures."""

    blocks: list[dict] = dataclasses.field(default_factory=list)
    figures: int = 0

    def figure(self, fig, caption: str) -> None:
        import matplotlib.pyplot as plt

        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        data = base64.b64encode(buffer.getvalue()).decode("ascii")
        self.blocks.append(dict(kind="figure", caption=caption, png=data))
        self.figures += 1

    def table(self, frame: pd.DataFrame, caption: str) -> None:
        shown = short_hashes(frame.head(MAX_TABLE_ROWS))
        more = f" (first {MAX_TABLE_ROWS} of {len(frame)} rows)" if len(frame) > MAX_TABLE_ROWS else ""
        # pandas escapes the cells and headers itself (escape=True)
        body = shown.to_html(
            index=False, float_format=lambda v: f"{v:.3f}", na_rep="–", border=0, classes="data", escape=True
        )
        self.blocks.append(dict(kind="table", caption=caption + more, html=Markup(body)))

    def note(self, text: str) -> None:
        self.blocks.append(dict(kind="note", text=text))


def short_hashes(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every column of 32-digit content hashes cut to their first :data:`SHORT_HASH`
    digits (enough to tell configs apart on one page; the names say what they are)."""
    frame = frame.copy()
    for column in frame.columns:
        values = frame[column].dropna()
        if len(values) and values.map(lambda v: isinstance(v, str) and bool(_HASH.fullmatch(v))).all():
            frame[column] = frame[column].map(lambda v: v[:SHORT_HASH] if isinstance(v, str) else v)
    return frame


def note_toy(panel: Panel, frame: pd.DataFrame, what: str) -> None:
    """A note of how many rows of ``frame`` are toy-sized (the page header states the rule); none when none is."""
    text = provenance.toy_note(frame, what)
    if text:
        panel.note(text)


def model_label(row) -> str:
    """'demo-rotation (seed 0, 1a2b3c4d)': a model's config name, seed and short hash."""
    name = row["config_name"] or row["core_kind"]
    return f"{name} (seed {row['seed']}, {row['model_hash'][:SHORT_HASH]})"


def _listing(
    panel: Panel, stage: str, read: Callable[[], pd.DataFrame], missing: str, columns: list[str], caption: str
) -> pd.DataFrame:
    """The stage's main frame, shown as a table; :class:`NotComputed` (saying ``missing``) when empty.
    ``read`` adds the :mod:`~populate.report.provenance` columns; a note says how many rows are toy-sized."""
    require(stage)
    frame = read()
    if frame.empty:
        raise NotComputed(missing)
    panel.table(frame[columns], caption)
    note_toy(panel, frame, f"{stage} are")
    return frame


def _training_curves(
    panel: Panel, curves: pd.DataFrame, x: str, labels: dict[str, str], title: str, caption: str
) -> None:
    """A figure of every run's curves over the column ``x``: one panel per column named in ``labels``
    (axis label by column; ``x`` may have one too); nothing when ``curves`` is empty."""
    from pipeline import figures

    if not curves.empty:
        panel.figure(figures.training_curves(curves, x, [c for c in labels if c != x], labels, title), caption)


def require(stage: str) -> None:
    if not api.stage_available(stage):
        raise NotComputed(f"the {stage} schema is not set up on this server: run `python -m populate setup`")


# --------------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------------


def recordings(panel: Panel) -> None:
    from pipeline import figures

    require("recordings")
    require("stats")
    scans = api.scans()
    if scans.empty:
        raise NotComputed("no scans yet: `python -m populate simulate` or `python -m populate import sensorium PATH`")
    panel.table(
        scans[
            [
                "scan",
                *api.SCAN_ATTRIBUTES,
                "simulated",
                "n_repeated_images",
                "mean_oracle",
                "mean_explainable_variance",
            ]
        ],
        "Scans (depths in micrometres below the surface)",
    )
    units = api.reliability()
    if units.empty:
        panel.note("Reliability is not computed yet: run `python -m populate run --tables Reliability`.")
        return
    panel.figure(
        figures.oracle_distributions({scan: rows["oracle"].to_numpy() for scan, rows in units.groupby("scan")}),
        "Oracle correlation of each unit (leave-one-out correlation over the repeated test images), per scan.",
    )


def predictive_models(panel: Panel) -> None:
    from pipeline import figures

    models = _listing(
        panel,
        "models",
        lambda: provenance.with_model_provenance(api.models()),
        "no trained models yet: add training tasks and run `python -m populate run` (or `make demo`)",
        [
            "scan",
            *api.MODEL_LABELS,
            "model_hash",
            *api.MODEL_SCORES,
            "val_correlation",
            "train_seconds",
            "code_version",
            provenance.TOY,
        ],
        "Trained models (test tier; correlations averaged over units; code_version: what trained it)",
    )
    panel.note("Rotation-equivariant vs CNN, " + findings.cores() + ".")
    _training_curves(
        panel,
        api.training_curves(),
        "iteration",
        dict(
            iteration="iteration (optimizer steps)",
            val_correlation="validation correlation",
            train_loss="training loss (with regularizers)",
        ),
        "Predictive models: training curves",
        "Validation correlation and training loss of every model at each evaluation; the stored "
        "weights are those of the best validation score.",
    )
    scores = api.unit_scores()
    if scores.empty:
        panel.note("Per-unit scores need the scan's reliability (stats stage).")
        return
    labels = np.array([model_label(r) for r in scores.to_dict("records")], dtype=object)
    panel.figure(
        figures.oracle_vs_correlation(scores["oracle"], scores["test_single_trial"], labels),
        "Per-unit single-trial test correlation of every model against the unit's oracle correlation "
        "(leave-one-out over the repeats), the quantity the oracle bounds; the legend gives each model's "
        "fraction of oracle, the slope of the dashed line through the origin.",
    )
    panel.figure(
        figures.feve_distributions(
            {label: scores.loc[labels == label, "test_feve"].to_numpy() for label in dict.fromkeys(labels)}
        ),
        "Fraction of explainable variance explained per unit, per model.",
    )
    for scan, rows in scores.groupby("scan"):
        best = _best_per_kind(models[models["scan"] == scan])
        if {"rotation", "cnn"} <= set(best):
            a, b = (
                rows[rows["model_hash"].eq(best[k]["model_hash"]) & rows["seed"].eq(best[k]["seed"])].sort_values(
                    "unit_index"
                )
                for k in ("cnn", "rotation")
            )
            panel.figure(
                figures.unit_comparison(a["test_correlation"], b["test_correlation"], "CNN", "rotation"),
                f"Scan {scan}: per-unit test correlation of the best rotation-equivariant model, "
                f"{model_label(best['rotation'])}, against the best CNN, {model_label(best['cnn'])}.",
            )
        else:
            panel.note(f"Scan {scan}: a rotation-vs-CNN comparison needs a trained model of each core kind.")


def _best_per_kind(models: pd.DataFrame) -> dict:
    return {
        kind: rows.sort_values("test_correlation", ascending=False).iloc[0]
        for kind, rows in models.groupby("core_kind")
    }


def neural_similarity(panel: Panel) -> None:
    from pipeline import figures

    require("similarity")
    matrices = api.similarities()
    if matrices.empty:
        raise NotComputed("no similarity matrices yet: add a SimilarityTask and run `python -m populate run`")
    matrices = provenance.with_image_toy_flag(matrices)
    panel.table(
        matrices[
            [
                c
                for c in (
                    "similarity_name",
                    "method",
                    "image_set",
                    "n_images",
                    "n_scans",
                    "oracle_agreement",
                    "single_trial_agreement",
                    provenance.TOY,
                )
                if c in matrices.columns
            ]
        ],
        "Similarity matrices",
    )
    note_toy(panel, matrices, "similarity matrices are")
    shown = {}
    for _, row in matrices.head(MAX_MATRICES).iterrows():
        matrix = api.similarity_matrix(row["similarity_name"], MATRIX_IMAGES)
        shown[row["similarity_name"]] = (row, matrix)
        panel.figure(
            figures.similarity_matrix(matrix, f"{row['similarity_name']} ({row['method']})"),
            f"{row['similarity_name']}: similarity of the first {len(matrix)} images of set {row['image_set']}.",
        )
    references = [(name, r, m) for name, (r, m) in shown.items() if r["method"] == "model"]
    upper = None
    for name, (row, matrix) in shown.items():
        for ref_name, ref_row, ref in references:
            if name == ref_name or row["image_set"] != ref_row["image_set"]:
                continue
            n = min(len(matrix), len(ref))
            upper = np.triu_indices(n, k=1)
            panel.figure(
                figures.similarity_scatter(
                    ref[:n, :n][upper], matrix[:n, :n][upper], f"S_neural ({ref_name})", f"{name} ({row['method']})"
                ),
                f"{name} against the model-based neural similarity {ref_name}, pairs of the first {n} images.",
            )
    if upper is None and len(shown) < 2:
        panel.note("Only one similarity matrix: comparisons between methods appear once controls are computed.")


def _per_evaluation(frame, extra: list[str]):
    """(label, rows) per evaluation config (and ``extra`` columns) of a result frame: results of
    different evaluation settings are never pooled into one figure."""
    if frame.empty:
        return
    columns = ["evaluation_hash", "evaluation", *extra]
    for values, rows in frame.groupby(columns, sort=True, dropna=False):
        named = dict(zip(columns, values))
        label = f"evaluation {named['evaluation'] or '(unnamed)'} {named['evaluation_hash'][:SHORT_HASH]}"
        label += "".join(f", {column} {named[column]}" for column in extra)
        yield label, rows


def classifiers(panel: Panel) -> None:
    from pipeline import figures

    trained = _listing(
        panel,
        "classifiers",
        lambda: provenance.with_classifier_provenance(api.classifiers()),
        "no trained classifiers yet: add ClassifierTasks and run `python -m populate run`",
        [
            "config_name",
            "classifier_hash",
            "control",
            "alpha",
            "width",
            "seed",
            "clean_accuracy",
            "validation_accuracy",
            "similarity_fidelity",
            "steps",
            "train_seconds",
            "code_version",
            provenance.TOY,
        ],
        "Trained classifiers (code_version: what trained it)",
    )
    _training_curves(
        panel,
        api.classifier_curves(),
        "epoch",
        dict(
            train_loss="training loss (cross-entropy)",
            validation_accuracy="validation accuracy (fraction correct)",
            test_accuracy="test accuracy (fraction correct)",
        ),
        "Classifiers: training curves",
        "Training loss, validation accuracy and test accuracy of every classifier after each epoch (the "
        "test accuracy shows convergence; nothing is chosen on it; classifiers trained before it was "
        "recorded have none).",
    )
    levels = api.classifier_robustness()
    if levels.empty:
        panel.note(_not_evaluated("NoiseEvaluation", "Noise robustness"))
    for which, rows in _per_evaluation(levels, []):
        panel.figure(
            figures.noise_curves(rows), f"Accuracy under additive noise per control, mean ± SEM over seeds ({which})."
        )
    _adversarial_state(panel)
    images = api.adversarial()
    for which, rows in _per_evaluation(images, ["comparison"]):
        for norm in ("l2", "linf"):
            if not np.isfinite(rows[norm].to_numpy(dtype=np.float64)).any():
                panel.note(
                    f"The attacks found no adversarial example within their budget ({norm}, {which}): "
                    "no perturbation sizes to show."
                )
                continue
            panel.figure(
                figures.perturbation_distributions(rows, norm=norm),
                f"Minimal adversarial perturbation per image ({norm}), per control ({which}).",
            )
    regularized = trained[trained["control"] == "neural"]
    if regularized.empty:
        panel.note("No neurally regularized classifier: S_model vs S_neural is shown for those only.")
        return
    row = regularized.iloc[0]
    try:
        s_model, s_neural = api.classifier_similarity_pairs(row, device="cpu")
    except Exception as err:  # an optional panel: say why it is missing, keep the section
        log.warning("S_model vs S_neural skipped: %s", err)
        panel.note(f"S_model vs S_neural could not be computed: {' '.join(str(err).split())}")
        return
    panel.figure(
        figures.similarity_scatter(s_neural, s_model, "S_neural", "S_model (classifier)"),
        f"Classifier {row['config_name'] or row['control']} (seed {row['seed']}): its representational "
        f"similarity against the neural target over {len(s_model)} random stimulus pairs (the pairs of its "
        f"similarity fidelity, r = {row['similarity_fidelity']:.2f}).",
    )


def _done(table: str) -> tuple[int, int]:
    """(done, keys) of a computed table, counted as ``python -m populate status`` counts them."""
    progress = api.progress()
    row = progress[progress["table"] == table]
    return (int(row["done"].iloc[0]), int(row["keys"].iloc[0])) if len(row) else (0, 0)


def _not_evaluated(table: str, what: str) -> str:
    done, keys = _done(table)
    return f"{what} is not evaluated yet ({table}: {done} of {keys} done; `python -m populate status`)."


def _adversarial_state(panel: Panel) -> None:
    """What the adversarial evaluations hold, as ``status`` counts them: none yet, or done on how many
    common images (a comparison whose members all misclassify every test image has none to attack)."""
    summary = api.adversarial_summary()
    if summary.empty:
        panel.note(_not_evaluated("AdversarialEvaluation", "Adversarial robustness"))
        return
    done, keys = _done("AdversarialEvaluation")
    columns = ["comparison", "evaluation", "config_name", "control", "alpha", "seed", "n_images"]
    # None -> NaN, shown as a dash; each median beside the number of images whose attack failed
    medians = summary[["median_l2", "l2_failed", "median_linf", "linf_failed"]].astype(
        {"median_l2": float, "median_linf": float}
    )
    for failed in ("l2_failed", "linf_failed"):  # whole numbers, a dash where the norm was not attacked
        medians[failed] = medians[failed].map(lambda n: "–" if pd.isna(n) else str(int(n)))
    panel.table(
        pd.concat([summary[columns], medians], axis=1),
        f"Adversarial evaluations ({done} of {keys} done): images attacked per classifier, median minimal "
        "perturbation and the number of images whose attack failed (no adversarial found; the median is "
        "missing once half or more failed)",
    )
    empty = summary[summary["n_images"].astype(int) == 0]
    if len(empty):
        panel.note(
            f"{len(empty)} of {len(summary)} adversarial evaluations are done but attacked no image: their "
            "comparison's common set (test images every member classifies correctly) is empty, so there are "
            "no perturbation sizes to show. Train the classifiers longer, or compare fewer of them."
        )


def pipeline_progress(panel: Panel) -> None:
    from pipeline import figures

    progress = api.progress()
    if progress.empty:
        raise NotComputed("no schema is set up on this server: run `python -m populate setup`")
    if not progress["keys"].any():
        raise NotComputed("nothing to compute yet: the computed tables have no upstream data (add scans and tasks)")
    panel.table(progress, "Keys per computed table")
    panel.figure(figures.populate_progress(progress), "Done, pending and failed keys of every computed table.")
