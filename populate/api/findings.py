"""What the full experiments found, quoted beside demo-sized figures so a reader can tell the two apart.

Each function reads an experiment's results file in ``benchmarks/results/`` (written by the
``benchmarks.experiment_*`` commands) and returns one line: the finding with the file it comes from
named beside it, or, where the file is absent (a fresh clone, or a run not made yet), the command
that writes it. docs/results.md gives the tables and figures.
"""

from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results"

CORES_COMMAND = "python -m benchmarks.experiment_cores --features 6 --seeds 0 1 2 --iterations 1000"
CELL_TYPES_COMMAND = (
    "python -m benchmarks.experiment_cores --cores rotation --features 6 --iterations 1000 "
    "--seeds 0 1 2 3 4 5 6 7 8 9 --tag celltypes10"
)
TYPE_COUNT_COMMAND = "python -m benchmarks.experiment_celltypes --parts standard criteria"
ROBUSTNESS_COMMAND = "python -m benchmarks.experiment_robustness --part compare"
# the results file each command writes (benchmarks.common.save, experiment_robustness.main)
CORES_FILE = "experiment_cores.json"
CELL_TYPES_FILE = "experiment_cores-celltypes10.json"
TYPE_COUNT_FILE = "experiment_celltypes-standard-criteria.json"
ROBUSTNESS_FILE = "robustness-compare.json"


def _shown(path: Path) -> str:
    """The path relative to the repository where it lies inside it."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def _read(results: Path | None, name: str, command: str) -> tuple[dict | None, str]:
    """The results file's record (None when absent) and the words that name its source: the file, or
    the command that writes it."""
    path = (RESULTS if results is None else Path(results)) / name
    if not path.is_file():
        return None, f"full experiment: no {_shown(path)} in this checkout; `{command}` writes it"
    return json.loads(path.read_text()), _shown(path)


def _spread(record: dict, prefix: str, digits: int = 3) -> str:
    """``mean +/- sd`` of ``{prefix}_mean`` and ``{prefix}_sd`` (over seeds)."""
    return f"{record[f'{prefix}_mean']:.{digits}f} +/- {record[f'{prefix}_sd']:.{digits}f}"


def cores(results: Path | None = None) -> str:
    """Rotation-equivariant vs CNN core at equal feature maps: test correlation over seeds (experiment_cores)."""
    record, source = _read(results, CORES_FILE, CORES_COMMAND)
    if record is None:
        return source
    return (
        f"full experiment ({record['preset']} scan, {record['feature_maps']} feature maps, {len(record['seeds'])} "
        f"seeds, {record['iterations']} iterations): rotation-equivariant "
        f"{_spread(record, 'rotation_test_correlation')}, CNN {_spread(record, 'cnn_test_correlation')} "
        "test correlation, rotation ahead on "
        f"{record['rotation_beats_cnn_seeds']} seeds ({source})"
    )


def cell_types(results: Path | None = None) -> str:
    """Recovered cell types against the simulated ones: single models and their consensus at the true number
    of features (experiment_cores), then the number of types chosen from the data (experiment_celltypes)."""
    record, source = _read(results, CELL_TYPES_FILE, CELL_TYPES_COMMAND)
    if record is None:
        at_k = source
    else:
        rotations = record["feature_maps"] // record["features"]
        at_k = (
            f"full experiment ({record['features']} features x {rotations} orientations, {len(record['seeds'])} "
            f"seeds): single models ARI {_spread(record, 'rotation_ari_clusters', 2)}, consensus of the "
            f"{len(record['seeds'])} models (co-association) ARI {record['rotation_ensemble_ari_clusters']:.2f} "
            f"at k = {record['features']} ({source})"
        )
    record, source = _read(results, TYPE_COUNT_FILE, TYPE_COUNT_COMMAND)
    if record is None:
        return f"{at_k}; {source}"
    ensembles = record["standard"]["ensembles"].values()
    models = "/".join(sorted({str(e["models"]) for e in ensembles}))
    chosen = ", ".join(str(e["k"]) for e in ensembles)
    aris = ", ".join(f"{e['ari']:.2f}" for e in ensembles)
    return (
        f"{at_k}; with k from the data {len(ensembles)} ensembles of {models} choose {chosen} types "
        f"(ARI {aris}; {source})"
    )


def robustness(results: Path | None = None) -> str:
    """The registered questions of the robustness experiment: per question the primary endpoint's paired
    difference (relative accuracy at Gaussian std 0.1) with its 95 % interval and verdict, at the alphas the
    sweep chose (experiment_robustness --part compare)."""
    from populate.api.comparison import ARMS
    from populate.api.endpoints import format_test

    record, source = _read(results, ROBUSTNESS_FILE, ROBUSTNESS_COMMAND)
    if record is None:
        return source
    settings, body = record["settings"], record["results"]
    answers = []
    for name, question in body["endpoints"]["questions"].items():
        if "untestable" in question:
            answers.append(f"{name}: not tested ({question['untestable']})")
            continue
        primary = question["primary"]
        arms = f"{ARMS.get(question['arm'], question['arm'])} - {ARMS.get(question['reference'])}"
        answers.append(f"{name}, {arms}: {format_test(primary)}, {primary.get('verdict', 'no verdict')}")
    alphas = ", ".join(f"{arm} {'none admissible' if a is None else f'{a:g}'}" for arm, a in body["alphas"].items())
    schedule = settings["classifier"]
    return (
        f"full experiment ({len(body['data']['arms'])} arms x {len(settings['compare_seeds'])} seeds, width "
        f"{schedule['width']}, {schedule['epochs']} epochs for every arm; alpha chosen on validation: {alphas}); "
        f"relative accuracy at Gaussian std 0.1, paired difference: {'; '.join(answers)} ({source})"
    )
