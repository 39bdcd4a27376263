"""``python -m populate results ...``: the notebook API's frames as JSON lines or as a text table.

Each listing is built on :mod:`populate.api` frames and keeps their column names (``docs/api.md``);
none fetches weights, histories or other heavy attributes.  ``--json`` prints every column, one
object per row; the text table shows the columns of :data:`TEXT_COLUMNS`.
"""

from __future__ import annotations

import json
from typing import Callable, Iterable, Mapping

import numpy as np
import pandas as pd

from populate import api
from populate.plain import plain


def records(frame: pd.DataFrame) -> list[dict]:
    """The rows of ``frame`` as dicts of plain Python values (missing values as None)."""
    return [{k: plain(v) if not _missing(v) else None for k, v in row.items()} for row in frame.to_dict("records")]


def _missing(value) -> bool:
    return value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and np.isnan(value))


def models() -> list[dict]:
    """One row per trained model (:func:`populate.api.models`)."""
    return records(api.models())


def celltypes() -> list[dict]:
    """One row per unit of every rotation-equivariant model (:func:`populate.api.cell_types`,
    ``source`` ``CellTypes``), then one per unit of every ensemble's consensus
    (:func:`populate.api.ensemble_cell_types`, ``source`` ``EnsembleCellTypes``: ``ensemble_name``,
    ``agreement``, no per-model columns)."""
    per_model = api.cell_types().assign(source="CellTypes")
    consensus = api.ensemble_cell_types().assign(source="EnsembleCellTypes")
    return records(per_model) + records(consensus)


def classifiers(evaluation: str | Mapping | None = None) -> list[dict]:
    """One row per trained classifier and evaluation config that holds results for it
    (:func:`populate.api.classifiers`; a classifier not evaluated yet has one row without an
    evaluation), with ``evaluation`` (the config's name), ``evaluation_hash``, its adversarial summary
    (:func:`populate.api.adversarial_summary`, one row per comparison the classifier was attacked in)
    and ``noise``: per noise type, a list of ``{strength, accuracy}``
    (:func:`populate.api.classifier_robustness`).

    evaluation : only the results of this evaluation config: its name, its hash, or a key dict with
        ``evaluation_hash``.  Raises ValueError when no config matches.
    """
    frame = api.classifiers()
    key = list(api.stage("classifiers").TrainedClassifier.primary_key)
    levels, attacks = api.classifier_robustness(), api.adversarial_summary()
    if evaluation is not None:
        hashes = _evaluation_hashes(evaluation)
        levels = levels[levels["evaluation_hash"].isin(hashes)]
        attacks = attacks[attacks["evaluation_hash"].isin(hashes)]
    which = ["evaluation_hash", "evaluation"]
    evaluated = pd.concat([levels[key + which], attacks[key + which]]).drop_duplicates()
    frame = frame.merge(evaluated, on=key, how="left")
    summary = attacks[
        [*key, "evaluation_hash", "comparison", "n_images", "median_l2", "l2_failed", "median_linf", "linf_failed"]
    ]
    frame = frame.merge(summary, on=[*key, "evaluation_hash"], how="left")
    noise: dict[tuple, dict[str, list]] = {}
    for row in records(levels):
        entry = noise.setdefault(tuple(row[k] for k in [*key, "evaluation_hash"]), {})
        entry.setdefault(row["noise_type"], []).append(dict(strength=row["strength"], accuracy=row["accuracy"]))
    rows = records(frame)
    for row in rows:
        row["noise"] = noise.get(tuple(row[k] for k in [*key, "evaluation_hash"]), {})
    return rows


def _evaluation_hashes(evaluation: str | Mapping) -> list[str]:
    """The hashes of the evaluation configs that ``evaluation`` (a name, a hash or a key dict) names."""
    configs = api.stage("classifiers").EvaluationConfig
    if isinstance(evaluation, Mapping):
        restriction = dict(evaluation_hash=evaluation["evaluation_hash"])
    else:
        restriction = [dict(config_name=str(evaluation)), dict(evaluation_hash=str(evaluation))]
    hashes = [k["evaluation_hash"] for k in (configs & restriction).keys()]
    if not hashes:
        names = sorted({n or "(unnamed)" for n in configs.to_arrays("config_name")})
        raise ValueError(f"evaluation {evaluation!r}: no EvaluationConfig of that name or hash (names: {names})")
    return hashes


def classifier_summary(evaluation: str | Mapping | None = None) -> list[dict]:
    """Per evaluation config, comparison and control (mean ± SEM over seeds): clean accuracy,
    Gaussian-noise accuracies, median perturbation with the failed attacks beside it (images without
    an adversarial, summed over seeds).  ``evaluation`` as for :func:`classifiers`."""
    groups: dict[tuple, list[dict]] = {}
    for row in classifiers(evaluation):
        groups.setdefault((row["evaluation"], row["comparison"], row["control"]), []).append(row)

    def mean_sem(values) -> str:
        values = np.array([v for v in values if v is not None], dtype=float)
        if not len(values):
            return "n/a"
        sem = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else 0.0
        return f"{values.mean():.3f}±{sem:.3f}"

    def failures(rows, norm) -> str:
        counted = [r for r in rows if r.get(f"{norm}_failed") is not None]
        if not counted:
            return ""
        failed = sum(int(r[f"{norm}_failed"]) for r in counted)
        return f" (failed {failed} of {sum(int(r['n_images']) for r in counted)})"

    table = []
    for (name, comparison, control), rows in groups.items():
        line = dict(evaluation=name, comparison=comparison, control=control, seeds=len(rows))
        line["clean"] = mean_sem(r["clean_accuracy"] for r in rows)
        levels = rows[0]["noise"].get("gaussian", [])
        for i, level in enumerate(levels):
            if i % 2 == 1 or level["strength"] == 0:
                continue  # every other strength keeps the table readable
            line[f"gauss {level['strength']:.2f}"] = mean_sem(r["noise"]["gaussian"][i]["accuracy"] for r in rows)
        for norm, name in (("l2", "median L2"), ("linf", "median Linf")):
            line[name] = mean_sem(r[f"median_{norm}"] for r in rows) + failures(rows, norm)
        line["S fidelity"] = mean_sem(r["similarity_fidelity"] for r in rows)
        table.append(line)
    return table


REPORTS: dict[str, Callable[[], list[dict]]] = {"models": models, "celltypes": celltypes, "classifiers": classifiers}

TEXT_COLUMNS = {
    "models": (*api.MODEL_LABELS, "scan", *api.MODEL_SCORES, "train_seconds"),
    "celltypes": (
        "source",
        "ensemble_name",
        "config_name",
        "seed",
        "scan",
        "unit_id",
        "cell_type",
        "cluster",
        "preferred_orientation_deg",
        "main_share",
        "clean",
        "agreement",
        "true_type",
    ),
    "classifiers": (
        "config_name",
        "control",
        "evaluation",
        "comparison",
        "alpha",
        "seed",
        "clean_accuracy",
        "median_l2",
        "l2_failed",
        "median_linf",
        "linf_failed",
        "similarity_fidelity",
    ),
}
"""The columns of each listing in the text table (``--json`` prints all)."""


def print_rows(rows: Iterable[dict], as_json: bool, columns: Iterable[str] | None = None) -> None:
    """Rows as JSON lines (every column), or as a text table of ``columns`` (default: all but nested ones)."""
    rows = list(rows)
    if as_json:
        for row in rows:
            print(json.dumps({k: plain(v) for k, v in row.items()}, default=plain))
        return
    if not rows:
        print("(no rows)")
        return
    columns = list(columns or [c for c in rows[0] if not isinstance(rows[0][c], (dict, list))])
    cells = [[_format(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))


def _format(value) -> str:
    value = plain(value)
    if isinstance(value, float):
        return f"{value:.3f}"
    return "-" if value is None else str(value)
