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


REPORTS = {"models": models, "celltypes": celltypes}


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
