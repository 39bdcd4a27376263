"""Markdown tables of a core experiment's results file, as docs/results.md shows them.

``python -m benchmarks.cores_tables benchmarks/results/experiment_cores.json`` prints the
rotation-equivariant vs CNN table; a file of rotation models alone (``--cores rotation``, e.g.
``experiment_cores-celltypes10.json``) gives the cell-type table.  Both files are written by
``benchmarks.experiment_cores``; :mod:`benchmarks.robustness_tables` does the same for the robustness
experiment.
"""

from __future__ import annotations

from math import comb

import numpy as np

from benchmarks.common import markdown_table, print_tables

CORE_NAMES = {"rotation": "rotation-equivariant", "cnn": "CNN"}


def _spread(record: dict, prefix: str, digits: int) -> str:
    return f"{record[f'{prefix}_mean']:.{digits}f} ± {record[f'{prefix}_sd']:.{digits}f}"


def _wins(per_seed: list[dict], core: str, other: str) -> int:
    """Seeds on which ``core``'s test correlation is above ``other``'s."""
    score = {(r["core"], r["seed"]): r["test_correlation"] for r in per_seed}
    seeds = sorted({r["seed"] for r in per_seed})
    return sum(score[(core, s)] > score[(other, s)] for s in seeds)


def cores_table(record: dict) -> list[str]:
    """Per core: test correlation (repeat-averaged; mean ± sd, then each seed's), fraction of oracle
    (single-trial; blank in files written before it was recorded), FEVE, core parameters and seeds
    won; the better mean in bold."""
    per_seed, cores = record["per_seed"], [c for c in CORE_NAMES if f"{c}_test_correlation_mean" in record]
    fields = {"test_correlation": 3, "fraction_oracle": 2, "feve": 3}
    fields = {f: d for f, d in fields.items() if all(f"{c}_{f}_mean" in record for c in cores)}
    best = {field: max(cores, key=lambda c: record[f"{c}_{field}_mean"]) for field in fields}
    rows = []
    for core in cores:
        runs = [r for r in per_seed if r["core"] == core]
        cells = {field: _spread(record, f"{core}_{field}", digits) for field, digits in fields.items()}
        cells = {field: f"**{text}**" if best[field] == core else text for field, text in cells.items()}
        others = [c for c in cores if c != core]
        wins = f"{_wins(per_seed, core, others[0])} / {len(runs)}" if others else ""
        rows.append(
            [
                CORE_NAMES[core],
                f"{cells['test_correlation']} ({', '.join(format(r['test_correlation'], '.3f') for r in runs)})",
                cells.get("fraction_oracle", ""),
                cells["feve"],
                f"{runs[0]['parameters']:,}",
                wins,
            ]
        )
    return markdown_table(
        ["core", "test correlation", "fraction of oracle", "FEVE", "core parameters", "seeds won"], rows
    )


def celltypes_table(record: dict) -> list[str]:
    """ARI of the recovered cell types with the simulated ones: single models (argmax rule and clusters),
    consensus of half and of all but one of the models, of all of them, and the orientation error."""
    n = len(record["seeds"])
    clusters = np.array([r["ari_clusters"] for r in record["per_seed"] if r["core"] == "rotation"], float)
    rows = [
        ["one model, paper's rule (argmax over features)", _spread(record, "rotation_ari_types", 2)],
        [
            "one model, rotation-invariant clusters (`CellTypes`)",
            f"{_spread(record, 'rotation_ari_clusters', 2)} ({clusters.min():.2f} to {clusters.max():.2f})",
        ],
    ]
    by_size = {row["models"]: row for row in record.get("rotation_consensus_by_size", [])}
    for size in sorted({n // 2, n - 1} & set(by_size) - {1}):
        row = by_size[size]
        subsets = f"all {row['subsets']}" if row["subsets"] == comb(n, size) else str(row["subsets"])
        rows.append(
            [
                f"consensus of {size} of the {n} models ({subsets} subsets)",
                f"{row['mean']:.2f} ± {row['sd']:.2f} ({row['min']:.2f} to {row['max']:.2f})",
            ]
        )
    if "rotation_ensemble_ari_clusters" in record:
        rows.append(
            [
                f"**consensus of all {n} models** (co-association, `clustering.consensus_types`)",
                f"**{record['rotation_ensemble_ari_clusters']:.2f}**",
            ]
        )
    rows.append(
        [
            "median error of the preferred orientation, per model",
            f"{_spread(record, 'rotation_orientation_error_deg', 1)} degrees",
        ]
    )
    return markdown_table(["cell types from", "ARI with the simulated types"], rows)


def markdown(record: dict) -> str:
    """The core comparison where the file has both cores, the cell-type table where it has rotation models."""
    lines = []
    if "cnn_test_correlation_mean" in record and "rotation_test_correlation_mean" in record:
        lines += cores_table(record)
    if "rotation_ari_clusters_mean" in record:
        lines += celltypes_table(record)
    return "\n".join(lines)


def main(argv=None) -> None:
    print_tables(markdown, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    main()
