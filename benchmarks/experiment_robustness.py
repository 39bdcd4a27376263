"""Li et al. (2019) as a matched, powered experiment: do neurally regularized classifiers resist noise
and adversarial attacks better than baseline, shuffled and positive-control classifiers?

One command runs the whole experiment in the database it is pointed at (``DJ_HOST``...,
``PIPELINE_PREFIX``, default prefix ``robustness``)::

    python -m benchmarks.experiment_robustness

1. Data: the simulated demo scan (200 units, 2,500 trials) and the photograph classification set.
2. The denoising ensemble behind S_neural: rotation-equivariant models *with shifter and modulator*
   (the simulator has eye shifts and behavioural gain), as in the paper.
3. Targets: the ensemble's similarity ("neural"), the same rows permuted ("shuffled"), and the
   positive control: the similarity of low-pass filtered stimuli ("lowpass"), noise-invariant by
   construction.
4. Four arms x ``--seeds`` classifiers (baseline alpha 0, neural, shuffled, lowpass), each a
   ``ClassifierTask`` row with matched training (one SGD update per iteration on cross-entropy +
   alpha x similarity loss) trained to a plateau of validation accuracy (early stopping, a cap).
5. Evaluations, each a populate job: noise accuracy (Gaussian, salt-and-pepper) on the same test
   images, the noise invariance of every target and classifier, the common image set of the
   comparison and minimal L2 and L_inf attacks (foolbox FMN) with their convergence curves.
6. Analysis: bootstrap 95 % CIs over seeds of every arm and of the paired differences, written to
   ``benchmarks/results/robustness[-tag].json``, its tables (``.md``, as in docs/results.md) and two
   figures in ``docs/figures/``.

Every stage is a populate job, so an interrupted run resumes where it stopped (run the command
again), and ``python -m populate worker`` processes on other machines can take its jobs.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from benchmarks import robustness_tables
from benchmarks.common import RESULTS
from populate.api import comparison
from populate.api.comparison import ARMS, EVALUATION_GRID

FIGURES = Path(__file__).resolve().parents[1] / "docs" / "figures"
SCAN = "1-1-1"
CONTROLS = ("none", "neural", "shuffled", "lowpass")
ATTACK_NAMES = {"cw": "foolbox Carlini-Wagner, per binary-search step", "fmn": "foolbox FMN"}


def settings(quick: bool) -> dict:
    """Sizes of the experiment; the full one fits about an hour on 2 CPU cores."""
    if quick:
        return dict(
            preset="tiny",
            shapes=(30, 10, 10),
            model_iterations=40,
            model_seeds=(0,),
            classifier=dict(
                width=4,
                epochs=3,
                max_steps_per_epoch=5,
                batch_size=16,
                pair_images=4,
                holdout_fraction=0.2,
                patience=1,
                decay_every=2,
            ),
            evaluation=dict(
                noise_images=60,
                gaussian=(0.0, 0.1, 0.3),
                salt_pepper=(0.0, 0.1),
                attack_images=8,
                attack_schedule=(2, 5),
                l2_attack="cw",
                invariance_std=(0.1,),
                invariance_images=40,
                invariance_pairs=200,
            ),
        )
    return dict(
        preset="demo",
        shapes=(400, 50, 100),  # per class: train, validation, test
        model_iterations=400,
        model_seeds=(0, 1),
        # width 8 (a step costs about a third of width 16's), 50-step epochs, early stopping with
        # patience 3 on 400 held-out images, at most 16 epochs: the validation accuracy plateaus
        # within that (every epoch's is in the results file)
        # every pair among 16 stimulus images per step (120 pairs) instead of the paper's 16 pairs of 32
        # images: the same loss for a third less time per step (docs/benchmarks.md)
        classifier=dict(
            width=8,
            epochs=16,
            max_steps_per_epoch=50,
            decay_every=4,
            reset_every=16,
            holdout_fraction=0.1,
            patience=3,
            pair_images=16,
        ),
        evaluation=dict(noise_images=None, attack_images=100, **EVALUATION_GRID),
    )


def declare(args, sizes: dict) -> dict:
    """Data, tasks, comparison and evaluation config (idempotent); returns the keys the analysis needs."""
    from populate import ingest
    from schemas.classifiers import ClassifierTask, ComparisonGroup, EvaluationConfig
    from schemas.models import Ensemble, TrainingTask
    from schemas.similarity import ImageSet, SimilarityTask

    scan, _ = ingest.simulate(sizes["preset"], seed=0, scan=SCAN)
    ingest.shapes_classes(*sizes["shapes"], name="shapes")
    kernels = (9, 5, 5) if not args.quick else (5, 3)
    model = dict(
        core=dict(
            kind="rotation", features=6 if not args.quick else 2, rotations=8, layers=len(kernels), kernel_sizes=kernels
        ),
        shifter=True,
        modulator=True,
    )
    trainer = dict(
        max_iterations=sizes["model_iterations"], eval_every=50 if not args.quick else 10, patience=4, batch_size=64
    )
    models = TrainingTask.add(
        model=model,
        dataset=dict(scan=SCAN, image_shape=(18, 32)),
        trainer=trainer,
        seeds=sizes["model_seeds"],
        name="robustness-denoiser",
    )
    if not (Ensemble & dict(ensemble_name="robustness")):
        Ensemble.create("robustness", models, description="denoisers with shifter and modulator, scan " + SCAN)
    if not (ImageSet & dict(image_set="robustness")):
        ImageSet.from_scans("robustness", [scan], description="stimuli of scan " + SCAN)
    SimilarityTask.add("robustness-neural", dict(method="model"), image_set="robustness", ensembles=["robustness"])
    SimilarityTask.add(
        "robustness-lowpass", dict(method="lowpass", lowpass_sigma=args.lowpass_sigma), image_set="robustness"
    )
    tasks = []
    for control in CONTROLS:
        config = dict(sizes["classifier"], control=control, alpha=0.0 if control == "none" else args.alpha)
        if args.width:
            config["width"] = args.width
        tasks += ClassifierTask.add(
            config,
            classification_set="shapes",
            neural="robustness-neural",
            seeds=args.seeds,
            target="robustness-lowpass" if control == "lowpass" else None,
            name=f"robustness-{control}",
        )
    group = ComparisonGroup.create(
        args.comparison, tasks, description="baseline, neural, shuffled and positive control, paired by seed"
    )
    evaluation = EvaluationConfig.add(sizes["evaluation"], name="robustness")
    return dict(comparison=group, evaluation=evaluation)


def work(threads: int, poll: float = 5.0) -> None:
    """One worker: populate every table (DataJoint's job reservations) until nothing is left to do.

    Several run side by side; a pass that adds nothing while another worker still holds a job waits
    and looks again, because that job's result can make downstream keys ready.
    """
    from pipeline.device import configure_threads
    from populate.work.jobs import select_tables

    configure_threads(threads)
    tables = select_tables()
    while True:
        added = 0
        for table in tables:
            before = len(table())
            start = time.monotonic()
            table.populate(reserve_jobs=True, suppress_errors=True, display_progress=False)
            if len(table()) > before:
                added += len(table()) - before
                print(
                    f"[{time.strftime('%H:%M:%S')} pid {os.getpid()}] {table.__name__}: +{len(table()) - before} "
                    f"({time.monotonic() - start:.0f} s)",
                    flush=True,
                )
        if not added and not any(len(table.jobs.reserved) for table in tables):
            return
        if not added:
            time.sleep(poll)


def populate(workers: int) -> None:
    """``workers`` processes of :func:`work`, one torch thread each; jobs a stopped run left reserved
    go back to the queue first (this command owns its schema prefix)."""
    import subprocess
    import sys

    from populate.work.jobs import select_tables

    for table in select_tables():
        table.jobs.reserved.delete_quick()
        table.jobs.errors.delete_quick()
    command = [sys.executable, "-m", "benchmarks.experiment_robustness", "--work"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    processes = [subprocess.Popen(command, env=env) for _ in range(workers)]
    codes = [p.wait() for p in processes]
    errors = {table.__name__: len(table.jobs.errors) for table in select_tables() if len(table.jobs.errors)}
    if any(codes) or errors:
        raise SystemExit(f"workers exited with {codes}; failed jobs: {errors} (see each table's jobs.errors)")


def figures(data: dict, tag: str) -> list[Path]:
    from pipeline import figures as figs

    FIGURES.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in (
        ("noise", figs.noise_curves_ci(_noise_frame(data), labels=ARMS)),
        ("convergence", figs.attack_convergence(_convergence_frame(data), labels=ARMS, attacks=_attacks())),
    ):
        path = FIGURES / f"robustness{'-' + tag if tag else ''}-{name}.png"
        fig.savefig(path, dpi=110)
        paths.append(path)
    return paths


def _attacks() -> dict[str, str]:
    """{norm: name of the attack the experiment's evaluation grid runs for it}."""
    from pipeline.classifier.attacks import NORMS
    from pipeline.classifier.evaluation import EvaluationSettings

    settings = EvaluationSettings.from_dict(EVALUATION_GRID)
    return {norm: ATTACK_NAMES[settings.attack(norm)] for norm in NORMS}


def _noise_frame(data: dict):
    return _curve_frame(data, "noise", "noise_type", ("strengths", "strength"), ("accuracy", "accuracy"))


def _convergence_frame(data: dict):
    return _curve_frame(data, "convergence", "norm", ("steps", "steps"), ("median", "median_distance"))


def _curve_frame(data: dict, part: str, name_column: str, x: tuple[str, str], y: tuple[str, str]):
    """Long form of the per-seed curves ``data["arms"][control][part][name]``: one row per arm, curve,
    seed and point with columns control, seed, ``name_column`` (the curve's name) and the point's x and
    y; ``x`` and ``y`` are each (key of the curve's values, column)."""
    import pandas as pd

    (x_key, x_column), (y_key, y_column) = x, y
    rows = []
    for control, arm in data["arms"].items():
        for name, curve in arm[part].items():
            for seed, values in zip(arm["seeds"], curve[y_key]):
                rows += [
                    {"control": control, "seed": seed, name_column: name, x_column: a, y_column: b}
                    for a, b in zip(curve[x_key], values)
                ]
    return pd.DataFrame(rows)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--alpha", type=float, default=5.0, help="similarity weight of the regularized arms")
    parser.add_argument("--width", type=int, default=None, help="ResNet18 width (default 8)")
    parser.add_argument(
        "--lowpass-sigma",
        type=float,
        default=3.0,
        help="blur of the positive control's stimuli, pixels of the 36 x 64 stimuli",
    )
    parser.add_argument("--comparison", default="robustness")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: one per core)")
    parser.add_argument("--work", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for tests")
    parser.add_argument("--tag", default="", help="suffix of the results file and figures")
    parser.add_argument("--analyse-only", action="store_true", help="no populate: analyse what is computed")
    args = parser.parse_args(argv)
    os.environ.setdefault("PIPELINE_PREFIX", "robustness")
    import datajoint as dj

    import schemas

    if not dj.config.get("database.host") and not os.environ.get("DJ_HOST"):
        raise SystemExit("the experiment needs a database: set DJ_HOST etc. (populate/deploy/local_db.sh)")
    if args.work:
        schemas.activate()
        return work(threads=1)
    schemas.declare_all()
    start = time.monotonic()
    sizes = settings(args.quick)
    keys = declare(args, sizes)
    if not args.analyse_only:
        populate(args.workers or os.cpu_count() or 1)
    data = comparison.collect(keys)
    summary = comparison.analyse(data)
    summary["wall_seconds"] = time.monotonic() - start
    summary["settings"] = dict(sizes, seeds=args.seeds, alpha=args.alpha, lowpass_sigma=args.lowpass_sigma)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"robustness{'-' + args.tag if args.tag else ''}.json"
    results = comparison.plain(dict(summary=summary, data=data))
    out.write_text(json.dumps(results, indent=1))
    out.with_suffix(".md").write_text(robustness_tables.markdown(results))
    comparison.report(summary)
    if not args.quick:
        for path in figures(data, args.tag):
            print(f"figure: {path}")
    print(f"results: {out}; {summary['wall_seconds'] / 60:.1f} min")
    return summary


if __name__ == "__main__":
    main()
