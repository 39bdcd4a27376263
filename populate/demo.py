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
    # about 3 minutes per model on two CPU cores
    return dict(max_iterations=800, eval_every=50, patience=3, batch_size=64)


def dataset_config(quick: bool) -> dict:
    return dict(scan=SCAN, image_shape=(18, 32))


CLASSIFIER_CONTROLS = ("none", "neural", "shuffled")


def classifier_config(control: str, quick: bool) -> dict:
    schedule = dict(width=4, epochs=2, max_steps_per_epoch=8) if quick else \
        dict(width=16, epochs=4, max_steps_per_epoch=120, decay_every=2)
    # alpha 5: on this short schedule alpha 20 halved clean accuracy, 2 and 5 kept most of it with
    # the same similarity fidelity (one-seed probe, README "Results")
    return dict(control=control, alpha=0.0 if control == "none" else 5.0, **schedule)


def evaluation_config(quick: bool) -> dict:
    if quick:
        return dict(noise_images=100, attack_images=10, attack_steps=200, pgd_steps=5)
    # The Boundary attack is the demo's longest stage (100 images x 2000 steps: 6.5 of 18.7 minutes on
    # two cores); a quarter of that keeps the whole demo near 15 minutes.
    return dict(noise_images=1000, attack_images=50, attack_steps=1000, pgd_steps=10)


def main(quick: bool = False, seeds=(0,), classifier_seeds=(0, 1), report_path: str = "report.html") -> None:
    start = time.monotonic()
    declare_tasks(quick, seeds, classifier_seeds)
    _populate(None)
    summary(time.monotonic() - start)
    from .report import write_report

    path = write_report(report_path)
    print(f"report of every stage: {path}")


def declare_tasks(quick: bool = False, seeds=(0,), classifier_seeds=(0, 1)) -> None:
    """The demo's data and every task of every stage, before anything is computed (idempotent).

    Each computed table's key source admits a key only once its inputs are computed, so the whole
    list can be handed to any number of workers at once.
    """
    from schemas.classifiers import ClassifierTask, EvaluationConfig
    from schemas.models import Ensemble, TrainingTask
    from schemas.similarity import ImageSet, SimilarityTask

    preset = "tiny" if quick else "demo"
    key, inserted = ingest.simulate(preset, seed=0, scan=SCAN)
    print(f"[data] scan {SCAN}: simulated '{preset}' preset ({'inserted' if inserted else 'already present'})")
    photos, inserted = ingest.photo_classes(*((30, 10) if quick else (400, 100)), name="photos")
    print(f"[data] classification set 'photos' from shipped photographs "
          f"({'inserted' if inserted else 'already present'})")

    tasks = []
    for name, model in model_configs(quick).items():
        tasks += TrainingTask.add(model=model, dataset=dataset_config(quick), trainer=trainer_config(quick),
                                  seeds=seeds, name=f"demo-{name}")
    if not (Ensemble & dict(ensemble_name="demo")):
        Ensemble.create("demo", tasks, description="every demo model of scan " + SCAN)
    if not (ImageSet & dict(image_set="demo")):
        ImageSet.from_scans("demo", [key], description="stimuli of scan " + SCAN)
    SimilarityTask.add("demo-neural", dict(method="model"), image_set="demo", ensembles=["demo"])

    for control in CLASSIFIER_CONTROLS:
        ClassifierTask.add(classifier_config(control, quick), classification_set="photos",
                           neural="demo-neural", seeds=classifier_seeds, name=f"demo-{control}")
    EvaluationConfig.add(evaluation_config(quick), name="demo")


def _populate(tables: list[str] | None) -> None:
    added = run.populate_all(tables=tables, progress=True)
    print("[populate] " + ", ".join(f"{table}: +{n}" for table, n in added.items()))


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
    _print_similarity()
    _print_classifiers()
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


def _print_similarity() -> None:
    from schemas.similarity import Similarity

    print()
    print("== Neural similarity")
    for row in Similarity.to_dicts():
        agreement = row["oracle_agreement"]
        single = row["single_trial_agreement"]
        extra = "" if agreement is None else (
            f"; on repeated images r = {agreement:.2f} with repeat-averaged similarity "
            f"(single trials: r = {single:.2f})")
        print(f"{row['similarity_name']}: {row['n_images']} images, {row['n_images'] * (row['n_images'] - 1) // 2} "
              f"pairs, {row['n_scans']} scan(s){extra}")


def _print_classifiers() -> None:
    print()
    print("== Classifiers (photos set): clean accuracy, accuracy under Gaussian noise, adversarial robustness")
    results.print_rows(results.classifier_summary(), as_json=False)
