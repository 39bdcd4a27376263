"""``python -m populate demo``: the whole pipeline on the embedded simulated data, then a summary.

The predictive models are the setting of the core experiment (``benchmarks/experiment_cores``):
a rotation-equivariant core of 6 features x 8 orientations against a CNN of 48 channels, the same
data, trainer and budget, two seeds each.  The one cut from the experiment is the trainer budget
(fewer iterations, equal for both cores), so the comparison stays matched.  Next to each figure the
summary prints what the full experiment found and the command that reproduces it.

Toy-sized results (the quick demo's) are marked by the report's rule (:mod:`populate.report.provenance`).
``--record FILE`` writes the whole run's wall time, code version, CPUs and date to a JSON file
(``make demo``: :data:`RECORD_FILE`), only for a full run that computed every stage itself.
"""

from __future__ import annotations

import faulthandler
import json
import logging
import os
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from populate import api, ingest
from populate.api import findings
from populate.api.comparison import EVALUATION_GRID
from populate.cli import results
from populate.report import provenance
from populate.work import run

log = logging.getLogger(__name__)

SCAN = "1-1-1"

# (features, rotations): the CNN gets features x rotations channels, the same number of feature maps.
# 6 features for the simulator's 6 types, as in the experiment.
FEATURES, ROTATIONS = 6, 8
MODEL_SEEDS = (0, 1)
# The experiment trains 1,000 iterations; the demo trains fewer to fit its time, the same for both cores.
DEMO_ITERATIONS = 400


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
    # The experiment's trainer with a smaller budget, the same for both cores.
    return dict(max_iterations=DEMO_ITERATIONS, eval_every=50, patience=4, batch_size=64)


def dataset_config(quick: bool) -> dict:
    return dict(scan=SCAN, image_shape=(18, 32))


CLASSIFIER_CONTROLS = ("none", "neural", "shuffled")


def classifier_config(control: str, quick: bool) -> dict:
    schedule = (
        dict(width=4, epochs=2, max_steps_per_epoch=8, pair_images=6)
        if quick
        else dict(width=16, epochs=4, max_steps_per_epoch=120, decay_every=2, lr=0.03, pair_images=16)
    )
    # lr 0.03: on the shapes set the paper's 0.1 kept the baseline at chance for these 480 steps, 0.03
    # reached about 0.4 validation accuracy (one-seed probe of 0.01-0.1 on the validation split; the
    # task wants longer training than the demo has).  alpha 5: on this short schedule alpha 20 halved
    # clean accuracy on the earlier photograph set, 2 and 5 kept most of it
    return dict(control=control, alpha=0.0 if control == "none" else 5.0, **schedule)


def evaluation_config(quick: bool) -> dict:
    if quick:
        return dict(
            noise_images=100,
            gaussian=(0.0, 0.1, 0.2),
            salt_pepper=(0.0, 0.05),
            attack_images=10,
            attack_schedule=(2, 5),
            l2_attack="cw",
            invariance_std=(0.1,),
            invariance_images=100,
            invariance_pairs=500,
        )
    # The experiment's evaluation (benchmarks/experiment_robustness.py) on fewer images, to keep the
    # demo short on 2 cores (its time: RECORD_FILE): 500 noise images (accuracy SE about 0.02) and 10
    # common attack images (the attacks' schedules cost about 3.5 s per image and width-16 model on 2 cores).
    return dict(noise_images=500, attack_images=10, **EVALUATION_GRID)


RECORD_FILE = "benchmarks/results/demo.json"
"""Where ``make demo`` records the run (``--record``); README.md and docs/results.md quote its time."""


def main(
    quick: bool = False,
    seeds=None,
    classifier_seeds=(0, 1),
    report_path: str = "report.html",
    record: str | None = None,
) -> None:
    """The whole demo; with ``record``, its wall time is written there (:func:`record_run`) when it
    was a full run from a database without the demo's scan (else a line says why not)."""
    if record and not Path(record).parent.is_dir():  # found before the run, not after it
        raise FileNotFoundError(f"--record {record}: folder {Path(record).parent} does not exist")
    start, load = time.monotonic(), os.getloadavg()[0]
    fresh = declare_tasks(quick, seeds, classifier_seeds)
    added = _populate()
    summary(time.monotonic() - start, quick)
    from populate.report.page import write_report

    path = write_report(report_path)
    print(f"report of every stage: {path}")
    if record:
        skipped = "a --quick run" if quick else None if fresh else "the database already held the demo's scan"
        _record(record, skipped, time.monotonic() - start, load, added)


def _record(path: str, skipped: str | None, seconds: float, load: float, added: dict[str, int]) -> None:
    if skipped:
        print(f"wall time not recorded in {path}: {skipped}")
        return
    from schemas import db

    written = record_run(path, seconds, load, added, db.backend())
    print(f"wall time recorded in {path}: {written['wall_minutes']} min")


def record_run(path: str | Path, seconds: float, load_at_start: float, added: dict[str, int], backend: str) -> dict:
    """Write the demo's record to ``path`` (JSON) and return it: ``wall_seconds`` and ``wall_minutes``
    from declaring the tasks to the written report (all of ``python -m populate demo`` but its imports),
    ``code_version`` (package and git commit), ``cpus`` (:func:`pipeline.device.cpu_limit`), the torch
    threads, the 1-minute load average at the start (other work on the machine), the database
    ``backend``, the UTC date and the rows each stage added."""
    import torch

    from pipeline import code_version
    from pipeline.device import cpu_limit

    record = dict(
        command="python -m populate demo",
        wall_seconds=round(seconds, 1),
        wall_minutes=round(seconds / 60, 1),
        code_version=code_version(),
        cpus=cpu_limit(),
        torch_threads=torch.get_num_threads(),
        load_average_at_start=round(load_at_start, 2),
        backend=backend,
        date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        populated=added,
    )
    Path(path).write_text(json.dumps(record, indent=2) + "\n")
    return record


def declare_tasks(quick: bool = False, seeds=None, classifier_seeds=(0, 1)) -> bool:
    """The demo's data and every task of every stage, before anything is computed (idempotent).
    True when this call inserted the demo's scan, so that every stage downstream of it is computed anew.

    ``seeds`` of the predictive models: default :data:`MODEL_SEEDS`, one seed with ``quick``.

    Each computed table's key source admits a key only once its inputs are computed, so the whole
    list can be handed to any number of workers at once.
    """
    from schemas.classifiers import ClassifierTask, ComparisonGroup, EvaluationConfig
    from schemas.models import Ensemble, TrainingTask
    from schemas.similarity import ImageSet, SimilarityTask

    seeds = seeds if seeds is not None else (0,) if quick else MODEL_SEEDS
    preset = "tiny" if quick else "demo"
    key, fresh = ingest.simulate(preset, seed=0, scan=SCAN)
    print(f"[data] scan {SCAN}: simulated '{preset}' preset ({'inserted' if fresh else 'already present'})")
    _, inserted = ingest.shapes_classes(*((30, 10, 10) if quick else (400, 50, 100)), name="shapes")
    state = "inserted" if inserted else "already present"
    print(f"[data] classification set 'shapes': ten shapes on procedural backgrounds ({state})")

    tasks = {}
    for name, model in model_configs(quick).items():
        tasks[name] = TrainingTask.add(
            model=model, dataset=dataset_config(quick), trainer=trainer_config(quick), seeds=seeds, name=f"demo-{name}"
        )
    if not (Ensemble & dict(ensemble_name="demo")):
        Ensemble.create("demo", tasks["rotation"] + tasks["cnn"], description="every demo model of scan " + SCAN)
    if not (Ensemble & dict(ensemble_name="demo-rotation")):
        # k fixed at the models' features: choosing it from the data needs more than the demo's two
        # models (docs/results.md, "Cell types without knowing their number")
        Ensemble.create(
            "demo-rotation",
            tasks["rotation"],
            description="the rotation-equivariant demo models: their consensus cell types",
            n_types=model_configs(quick)["rotation"]["core"]["features"],
        )
    if not (ImageSet & dict(image_set="demo")):
        ImageSet.from_scans("demo", [key], description="stimuli of scan " + SCAN)
    SimilarityTask.add("demo-neural", dict(method="model"), image_set="demo", ensembles=["demo"])

    classifiers = []
    for control in CLASSIFIER_CONTROLS:
        classifiers += ClassifierTask.add(
            classifier_config(control, quick),
            classification_set="shapes",
            neural="demo-neural",
            seeds=classifier_seeds,
            name=f"demo-{control}",
        )
    ComparisonGroup.create("demo", classifiers, description="the demo's classifiers: attacked on common images")
    EvaluationConfig.add(evaluation_config(quick), name="demo")
    return fresh


# A stage that hangs (e.g. a CPU kernel deadlock) ends the demo with every thread's stack instead of
# running forever; each stage takes minutes on two cores.
STAGE_TIMEOUT_S = float(os.environ.get("PIPELINE_STAGE_TIMEOUT", 1800))


def _populate() -> dict[str, int]:
    """Every stage, upstream first, each under the stage timeout; returns the rows each added."""
    from populate.work.jobs import select_tables

    added = {}
    for table in select_tables():
        faulthandler.dump_traceback_later(STAGE_TIMEOUT_S, exit=True)
        try:
            added.update(run.populate_all(tables=[table.__name__], progress=True))
        finally:
            faulthandler.cancel_dump_traceback_later()
    print("[populate] " + ", ".join(f"{table}: +{n}" for table, n in added.items()))
    return added


TOY_MARK = "[toy]"
"""Ends a printed line whose result is toy-sized (:data:`populate.report.provenance.RULE`)."""


def toy_frames() -> dict[str, pd.DataFrame]:
    """The models, similarity matrices and classifiers, each row flagged in column ``toy`` by the
    report's rule (:mod:`populate.report.provenance`)."""
    frames = dict(
        models=(api.models(), provenance.with_model_provenance),
        similarity=(api.similarities(), provenance.with_image_toy_flag),
        classifiers=(api.classifiers(), provenance.with_classifier_provenance),
    )
    return {name: frame.assign(toy="") if frame.empty else flag(frame) for name, (frame, flag) in frames.items()}


def _toy(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame[provenance.TOY] == "yes"]


def summary(seconds: float, quick: bool = False) -> None:
    from schemas.stats import Reliability

    flagged = toy_frames()
    print()
    if any(len(_toy(frame)) for frame in flagged.values()):
        print(f"== Toy-sized results are marked 'yes' in column 'toy' or {TOY_MARK} (the report's rule)")
        print(provenance.RULE)
        print()
    print("== Response reliability (test repeats)")
    for row in Reliability.to_dicts():
        print(
            f"scan {row['animal_id']}-{row['session']}-{row['scan_idx']}: mean oracle correlation "
            f"{row['mean_oracle']:.3f}, mean explainable variance {row['mean_explainable_variance']:.3f} "
            f"over {row['n_repeated_images']} repeated images"
        )
    print()
    print("== Predictive models (test tier)")
    rows = results.records(flagged["models"])
    results.print_rows(
        rows,
        as_json=False,
        columns=(*api.MODEL_LABELS, *api.MODEL_SCORES, "train_seconds", provenance.TOY),
    )
    _print_core_comparison(rows)
    _print_celltypes(flagged["models"])
    _print_similarity(flagged["similarity"])
    _print_classifiers(quick, flagged["classifiers"])
    print()
    print(f"demo finished in {seconds / 60:.1f} min")


def _print_core_comparison(rows: list[dict]) -> None:
    """Rotation-equivariant vs CNN at equal feature maps: per seed, mean +/- sd, and the reference."""
    by_core: dict[str, dict[int, float]] = {}
    for row in rows:
        by_core.setdefault(row["core_kind"], {})[row["seed"]] = row["test_correlation"]
    rotation, cnn = by_core.get("rotation", {}), by_core.get("cnn", {})
    seeds = sorted(set(rotation) & set(cnn))
    if not seeds:
        return
    ahead = sum(rotation[s] >= cnn[s] for s in seeds)
    print(
        f"rotation-equivariant vs CNN at equal feature maps: {_spread(rotation.values())} vs "
        f"{_spread(cnn.values())}; rotation >= CNN on {ahead}/{len(seeds)} seeds "
        f"({', '.join(f'seed {s}: {rotation[s]:.3f} vs {cnn[s]:.3f}' for s in seeds)})"
    )
    print(f"  {findings.cores()}")


def _spread(values) -> str:
    values = [float(v) for v in values]
    if len(values) < 2:
        return f"{statistics.mean(values):.3f}"
    return f"{statistics.mean(values):.3f} +/- {statistics.stdev(values):.3f}"


def _fmt(value, spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)


def _mark(toy: bool) -> str:
    return f" {TOY_MARK}" if toy else ""


def _print_celltypes(models: pd.DataFrame) -> None:
    from schemas.models import CellTypes, EnsembleCellTypes, TrainedModel

    rows = CellTypes.to_dicts()
    if not rows:
        return
    # a model's cell types are as toy-sized as it is; a consensus as its scan
    toy_models = {tuple(row) for row in _toy(models)[TrainedModel.primary_key].itertuples(index=False)}
    units = api.ensemble_cell_types()
    toy_ensembles = set(units.loc[units["scan"].isin(provenance.toy_scans(api.scans())), "ensemble_name"])
    print()
    print("== Functional cell types (rotation-equivariant models)")
    for row in rows:
        toy = tuple(row[k] for k in TrainedModel.primary_key) in toy_models
        print(
            f"model {row['model_hash'][:8]} seed {row['seed']}: {row['n_types']} types used, "
            f"{row['n_clusters']} clusters, clean {_fmt(row['clean_fraction'])}; agreement with simulated "
            f"types: ARI {_fmt(row['ari_types'])} (argmax types), {_fmt(row['ari_clusters'])} (clusters); "
            f"median orientation error {_fmt(row['orientation_error'], '.1f')} deg{_mark(toy)}"
        )
    for row in EnsembleCellTypes.to_dicts():
        print(
            f"consensus of ensemble '{row['ensemble_name']}' ({row['n_models']} models, EnsembleCellTypes): "
            f"{row['n_clusters']} types, ARI {_fmt(row['ari_clusters'])} with the simulated types"
            f"{_mark(row['ensemble_name'] in toy_ensembles)}"
        )
    print(f"  {findings.cell_types()}")


def _print_similarity(matrices: pd.DataFrame) -> None:
    from schemas.similarity import Similarity

    toy = set(_toy(matrices)["similarity_name"]) if len(matrices) else set()
    print()
    print("== Neural similarity")
    for row in Similarity.to_dicts():
        agreement = row["oracle_agreement"]
        single = row["single_trial_agreement"]
        extra = (
            ""
            if agreement is None
            else (
                f"; on repeated images r = {agreement:.2f} with repeat-averaged similarity "
                f"(single trials: r = {single:.2f})"
            )
        )
        print(
            f"{row['similarity_name']}: {row['n_images']} images, {row['n_images'] * (row['n_images'] - 1) // 2} "
            f"pairs, {row['n_scans']} scan(s){extra}{_mark(row['similarity_name'] in toy)}"
        )


def _print_classifiers(quick: bool, classifiers: pd.DataFrame) -> None:
    from populate.api import comparison
    from schemas.classifiers import EvaluationConfig

    # this run's evaluation: a database may also hold the rows of earlier demo settings
    evaluation = EvaluationConfig.add(evaluation_config(quick), name="demo")
    print()
    print("== Classifiers (shapes set): clean accuracy, accuracy under Gaussian noise, adversarial robustness")
    results.print_rows(results.classifier_summary(evaluation), as_json=False)
    if len(_toy(classifiers)):
        print(f"{len(_toy(classifiers))} of {len(classifiers)} classifiers are toy-sized {TOY_MARK}")
    print()
    print("== Paired comparison (comparison 'demo': the same seeds, noise and common attack images for every arm)")
    summary = comparison.analyse(comparison.collect(dict(comparison=dict(comparison="demo"), evaluation=evaluation)))
    comparison.report(summary)
    print(f"  {findings.robustness()}")
