"""``python -m populate results ...``: results as JSON lines (one object per row) or a text table."""

from __future__ import annotations

import json
import math
from typing import Iterable


def _plain(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return _plain(value.item())
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def models() -> list[dict]:
    """One row per trained model: key, core type, feature maps, seed, scores."""
    from schemas.models import ModelConfig, TrainedModel

    query = TrainedModel * ModelConfig.proj("core_kind", "feature_maps", "config_name")
    rows = []
    for row in query.to_dicts(order_by=["core_kind", "seed"]):
        rows.append(
            dict(
                key={k: row[k] for k in TrainedModel.primary_key},
                name=row["config_name"],
                core=row["core_kind"],
                feature_maps=row["feature_maps"],
                seed=row["seed"],
                test_correlation=row["test_correlation"],
                test_single_trial=row["test_single_trial"],
                feve=row["test_feve"],
                oracle=row["oracle_ceiling"],
                val_correlation=row["val_correlation"],
                train_seconds=row["train_seconds"],
            )
        )
    return rows


def celltypes() -> list[dict]:
    """One row per unit of every rotation-equivariant model: its type, cluster and orientation."""
    from schemas.models import CellTypes, TrainedModel
    from schemas.recordings import GroundTruth

    rows = []
    truth = {
        (r["animal_id"], r["session"], r["scan_idx"], r["unit_id"]): r
        for r in GroundTruth.Unit.to_dicts()
    }
    for row in CellTypes.Unit.to_dicts(order_by=["model_hash", "seed", "unit_id"]):
        unit = (row["animal_id"], row["session"], row["scan_idx"], row["unit_id"])
        true = truth.get(unit)
        rows.append(
            dict(
                model={k: row[k] for k in TrainedModel.primary_key},
                scan=f"{unit[0]}-{unit[1]}-{unit[2]}",
                unit_id=row["unit_id"],
                cell_type=row["cell_type"],
                cluster=row["cluster"],
                preferred_orientation=row["preferred_orientation"],
                main_share=row["main_share"],
                clean=bool(row["clean"]),
                true_type=None if true is None else true["unit_type"],
                true_orientation=None if true is None else true["orientation"],
            )
        )
    return rows


def classifiers() -> list[dict]:
    """One row per trained classifier: control, alpha, clean and noisy accuracy, adversarial medians."""
    from schemas.classifiers import (AdversarialEvaluation, ClassifierConfig, NoiseEvaluation,
                                     TrainedClassifier)

    noise = {}
    for row in NoiseEvaluation.Level.to_dicts(order_by=["noise_type", "strength"]):
        key = tuple(row[k] for k in TrainedClassifier.primary_key)
        noise.setdefault(key, {}).setdefault(row["noise_type"], []).append(
            dict(strength=row["strength"], accuracy=row["accuracy"]))
    adversarial = {tuple(r[k] for k in TrainedClassifier.primary_key): r for r in AdversarialEvaluation.to_dicts()}
    rows = []
    query = TrainedClassifier * ClassifierConfig.proj("control", "alpha", "width")
    for row in query.to_dicts(order_by=["control", "seed"]):
        key = tuple(row[k] for k in TrainedClassifier.primary_key)
        attack = adversarial.get(key, {})
        rows.append(dict(
            key={k: row[k] for k in TrainedClassifier.primary_key},
            control=row["control"],
            alpha=row["alpha"],
            width=row["width"],
            seed=row["seed"],
            clean_accuracy=row["clean_accuracy"],
            noise=noise.get(key, {}),
            median_l2=attack.get("median_l2"),
            median_linf=attack.get("median_linf"),
            similarity_fidelity=row["similarity_fidelity"],
        ))
    return rows


def classifier_summary() -> list[dict]:
    """Per control (mean ± SEM over seeds): clean accuracy, Gaussian-noise accuracies, median perturbation."""
    import numpy as np

    groups: dict[str, list[dict]] = {}
    for row in classifiers():
        groups.setdefault(row["control"], []).append(row)

    def mean_sem(values) -> str:
        values = np.array([v for v in values if v is not None], dtype=float)
        if not len(values):
            return "n/a"
        sem = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else 0.0
        return f"{values.mean():.3f}±{sem:.3f}"

    table = []
    for control, rows in groups.items():
        line = dict(control=control, seeds=len(rows), clean=mean_sem(r["clean_accuracy"] for r in rows))
        levels = rows[0]["noise"].get("gaussian", [])
        for i, level in enumerate(levels):
            if i % 2 == 1 or level["strength"] == 0:
                continue  # every other strength keeps the table readable
            line[f"gauss {level['strength']:.2f}"] = mean_sem(r["noise"]["gaussian"][i]["accuracy"] for r in rows)
        line["median L2"] = mean_sem(r["median_l2"] for r in rows)
        line["median Linf"] = mean_sem(r["median_linf"] for r in rows)
        line["S fidelity"] = mean_sem(r["similarity_fidelity"] for r in rows)
        table.append(line)
    return table


REPORTS = {"models": models, "celltypes": celltypes, "classifiers": classifiers}


def print_rows(rows: Iterable[dict], as_json: bool) -> None:
    rows = list(rows)
    if as_json:
        for row in rows:
            print(json.dumps({k: _plain(v) for k, v in row.items()}, default=_plain))
        return
    if not rows:
        print("(no rows)")
        return
    columns = [c for c in rows[0] if not isinstance(rows[0][c], dict)]
    cells = [[_format(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))


def _format(value) -> str:
    value = _plain(value)
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)
