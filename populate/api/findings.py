"""What the full experiments found, quoted beside demo-sized figures so a reader can tell the two apart.

Each entry is (finding, command that reproduces it); docs/results.md gives the tables and figures.
"""

from __future__ import annotations

CORES = (
    "full experiment (demo scan, 48 feature maps, 3 seeds, 1,000 iterations): rotation-equivariant 0.763 +/- 0.008, "
    "CNN 0.737 +/- 0.006 test correlation, rotation ahead on 3/3 seeds",
    "python -m benchmarks.experiment_cores --features 6 --seeds 0 1 2 --iterations 1000",
)

CELL_TYPES = (
    "full experiment (6 features x 8 orientations, 10 seeds): single models ARI 0.60 +/- 0.09, "
    "consensus of the 10 models (EnsembleCellTypes) ARI 0.86 at k = 6; with k from the data two ensembles of 10 "
    "choose 9 types (ARI 0.86, 0.78; benchmarks/experiment_celltypes)",
    "python -m benchmarks.experiment_cores --cores rotation --features 6 --iterations 1000 "
    "--seeds 0 1 2 3 4 5 6 7 8 9 --tag celltypes10",
)


ROBUSTNESS = (
    "full experiment (4 arms x 5 seeds, width 8, early stopping, 100 common images): neural - baseline "
    "clean accuracy -0.098 [-0.121, -0.071], Gaussian 0.3 +0.026 [-0.000, 0.052], median L2 (Carlini-Wagner) "
    "-0.03 [-0.25, 0.26]; neural does not beat baseline, beats shuffled only in minimal perturbation size, "
    "and the low-pass positive control does not transfer robustness (docs/results.md)",
    "python -m benchmarks.experiment_robustness",
)


def quote(entry: tuple[str, str]) -> str:
    """One line: the finding, then the command."""
    finding, command = entry
    return f"{finding}; reproduce with `{command}`"
