"""``python -m populate demo``: the whole pipeline on the embedded simulated data, then a summary.

The settings are CPU-sized (two cores, a few minutes per model): a rotation-equivariant core and a
regular CNN with the same number of feature maps, fitted to the same data with the same budget.
"""

from __future__ import annotations

import logging
import time

from . import ingest, results, run

log = logging.getLogger(__name__)

SCAN = "1-1-1"

# (features, rotations): the CNN gets features x rotations channels, the same number of feature maps.
FEATURES, ROTATIONS = 4, 8


def model_configs(quick: bool) -> dict[str, dict]:
    kernels = (9, 5, 5) if not quick else (5, 3)
    layers = len(kernels)
    features = FEATURES if not quick else 2
    common = dict(layers=layers, kernel_sizes=kernels)
    return {
        "rotation": dict(core=dict(kind="rotation", features=features, rotations=ROTATIONS, **common)),
        "cnn": dict(core=dict(kind="cnn", features=features * ROTATIONS, **common)),
    }


def trainer_config(quick: bool) -> dict:
    if quick:
        return dict(max_iterations=40, eval_every=10, patience=2, batch_size=64)
    return dict(max_iterations=1500, eval_every=50, patience=4, batch_size=128)


def dataset_config(quick: bool) -> dict:
    return dict(scan=SCAN, image_shape=(18, 32))


def main(quick: bool = False, seeds=(0,)) -> None:
    from schemas.models import TrainingTask

    start = time.monotonic()
    preset = "tiny" if quick else "demo"
    key, inserted = ingest.simulate(preset, seed=0, scan=SCAN)
    print(f"[data] scan {SCAN}: simulated '{preset}' preset ({'inserted' if inserted else 'already present'})")

    for name, model in model_configs(quick).items():
        TrainingTask.add(model=model, dataset=dataset_config(quick), trainer=trainer_config(quick), seeds=seeds,
                         name=f"demo-{name}")

    added = run.populate_all(progress=True)
    print("[populate] " + ", ".join(f"{table}: +{n}" for table, n in added.items()))
    summary(time.monotonic() - start)


def summary(seconds: float) -> None:
    from schemas.stats import Reliability

    print()
    print("== Response reliability (test repeats)")
    for row in Reliability.to_dicts():
        print(f"scan {row['animal_id']}-{row['session']}-{row['scan_idx']}: mean oracle correlation "
              f"{row['mean_oracle']:.3f}, mean explainable variance {row['mean_explainable_variance']:.3f} "
              f"over {row['n_repeated_images']} repeated images")
    print()
    print("== Predictive models (test tier)")
    results.print_rows(
        [{k: r[k] for k in ("name", "core", "feature_maps", "seed", "test_correlation", "feve", "oracle",
                            "train_seconds")} for r in results.models()],
        as_json=False,
    )
    _print_celltypes()
    print()
    print(f"demo finished in {seconds / 60:.1f} min")


def _print_celltypes() -> None:
    from schemas.models import CellTypes

    rows = CellTypes.to_dicts()
    if not rows:
        return
    print()
    print("== Functional cell types (rotation-equivariant models)")
    for row in rows:
        def fmt(v, spec=".2f"):
            return "n/a" if v is None else format(v, spec)

        print(f"model {row['model_hash'][:8]} seed {row['seed']}: {row['n_types']} types used, "
              f"{row['n_clusters']} clusters, clean {fmt(row['clean_fraction'])}; agreement with simulated "
              f"types: ARI {fmt(row['ari_types'])} (argmax types), {fmt(row['ari_clusters'])} (clusters); "
              f"median orientation error {fmt(row['orientation_error'], '.1f')} deg")
