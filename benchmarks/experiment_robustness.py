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
   ``benchmarks/results/robustness[-tag].json`` and two figures in ``docs/figures/``.

Every stage is a populate job, so an interrupted run resumes where it stopped (run the command
again), and ``python -m populate worker`` processes on other machines can take its jobs.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS

FIGURES = Path(__file__).resolve().parents[1] / "docs" / "figures"
SCAN = "1-1-1"
ARMS = {"none": "baseline", "neural": "neural", "shuffled": "shuffled", "lowpass": "positive control"}
COMPARISONS = (("neural", "none"), ("neural", "shuffled"), ("lowpass", "none"))


def settings(quick: bool) -> dict:
    """Sizes of the experiment; the full one fits about an hour on 2 CPU cores."""
    if quick:
        return dict(
            preset="tiny", photos=(30, 10), model_iterations=40, model_seeds=(0,),
            classifier=dict(width=4, epochs=3, max_steps_per_epoch=5, batch_size=16, pair_batch=4,
                            holdout_fraction=0.2, patience=1, decay_every=2),
            evaluation=dict(noise_images=60, gaussian=(0.0, 0.1, 0.3), salt_pepper=(0.0, 0.1),
                            attack_images=8, attack_schedule=(2, 5), invariance_std=(0.1,),
                            invariance_images=40, invariance_pairs=200),
        )
    return dict(
        preset="demo", photos=(400, 100), model_iterations=400, model_seeds=(0, 1),
        # width 8 (a step costs about a third of width 16's), 50-step epochs, early stopping with
        # patience 3 on 400 held-out images, at most 16 epochs: the validation accuracy plateaus
        # within that (every epoch's is in the results file)
        classifier=dict(width=8, epochs=16, max_steps_per_epoch=50, decay_every=4, reset_every=16,
                        holdout_fraction=0.1, patience=3),
        evaluation=dict(noise_images=None, gaussian=(0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3),
                        salt_pepper=(0.0, 0.01, 0.03, 0.05, 0.1, 0.2), attack_images=100,
                        attack_schedule=(5, 10, 25, 50), invariance_std=(0.05, 0.1, 0.2),
                        invariance_images=500, invariance_pairs=5000),
    )


def declare(args, sizes: dict) -> dict:
    """Data, tasks, comparison and evaluation config (idempotent); returns the keys the analysis needs."""
    from populate import ingest
    from schemas.classifiers import ClassifierTask, ComparisonGroup, EvaluationConfig
    from schemas.models import Ensemble, TrainingTask
    from schemas.similarity import ImageSet, SimilarityTask

    scan, _ = ingest.simulate(sizes["preset"], seed=0, scan=SCAN)
    ingest.photo_classes(*sizes["photos"], name="photos")
    kernels = (9, 5, 5) if not args.quick else (5, 3)
    model = dict(core=dict(kind="rotation", features=6 if not args.quick else 2, rotations=8, layers=len(kernels),
                           kernel_sizes=kernels), shifter=True, modulator=True)
    trainer = dict(max_iterations=sizes["model_iterations"], eval_every=50 if not args.quick else 10,
                   patience=4, batch_size=64)
    models = TrainingTask.add(model=model, dataset=dict(scan=SCAN, image_shape=(18, 32)), trainer=trainer,
                              seeds=sizes["model_seeds"], name="robustness-denoiser")
    if not (Ensemble & dict(ensemble_name="robustness")):
        Ensemble.create("robustness", models, description="denoisers with shifter and modulator, scan " + SCAN)
    if not (ImageSet & dict(image_set="robustness")):
        ImageSet.from_scans("robustness", [scan], description="stimuli of scan " + SCAN)
    SimilarityTask.add("robustness-neural", dict(method="model"), image_set="robustness", ensembles=["robustness"])
    SimilarityTask.add("robustness-lowpass", dict(method="lowpass", lowpass_sigma=args.lowpass_sigma),
                       image_set="robustness")
    tasks = []
    for control in ARMS:
        config = dict(sizes["classifier"], control=control, alpha=0.0 if control == "none" else args.alpha)
        if args.width:
            config["width"] = args.width
        tasks += ClassifierTask.add(config, classification_set="photos", neural="robustness-neural",
                                    seeds=args.seeds, target="robustness-lowpass" if control == "lowpass" else None,
                                    name=f"robustness-{control}")
    comparison = ComparisonGroup.create(args.comparison, tasks,
                                        description="baseline, neural, shuffled and positive control, paired by seed")
    evaluation = EvaluationConfig.add(sizes["evaluation"], name="robustness")
    return dict(comparison=comparison, evaluation=evaluation)


def work(threads: int, poll: float = 5.0) -> None:
    """One worker: populate every table (DataJoint's job reservations) until nothing is left to do.

    Several run side by side; a pass that adds nothing while another worker still holds a job waits
    and looks again, because that job's result can make downstream keys ready.
    """
    from pipeline.device import configure_threads
    from populate.jobs import select_tables

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
                print(f"[{time.strftime('%H:%M:%S')} pid {os.getpid()}] {table.__name__}: +{len(table()) - before} "
                      f"({time.monotonic() - start:.0f} s)", flush=True)
        if not added and not any(len(table.jobs.reserved) for table in tables):
            return
        if not added:
            time.sleep(poll)


def populate(workers: int) -> None:
    """``workers`` processes of :func:`work`, one torch thread each; jobs a stopped run left reserved
    go back to the queue first (this command owns its schema prefix)."""
    import subprocess
    import sys

    from populate.jobs import select_tables

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


def collect(keys: dict) -> dict:
    """Every result of the comparison, as plain arrays per arm (rows ordered by seed)."""
    from schemas.classifiers import (AdversarialEvaluation, ClassifierConfig, ComparisonGroup, NoiseEvaluation,
                                     TargetInvariance, TrainedClassifier)

    members = ComparisonGroup.Member & keys["comparison"]
    trained = (TrainedClassifier * ClassifierConfig.proj("control") & members).to_dicts(order_by=["control", "seed"])
    arms: dict[str, dict] = {}
    for row in trained:
        arm = arms.setdefault(row["control"], dict(seeds=[], clean=[], validation=[], steps=[], fidelity=[],
                                                   history=[], task=[]))
        arm["seeds"].append(row["seed"])
        arm["clean"].append(row["clean_accuracy"])
        arm["validation"].append(row["validation_accuracy"])
        arm["steps"].append(row["steps"])
        arm["fidelity"].append(row["similarity_fidelity"])
        arm["history"].append([h["validation_accuracy"] for h in row["history"]])
        arm["task"].append({k: row[k] for k in TrainedClassifier.primary_key})
    for control, arm in arms.items():
        restriction = [dict(t, **keys["evaluation"]) for t in arm["task"]]
        levels = (NoiseEvaluation.Level & restriction).to_dicts()
        arm["noise"] = {}
        for kind in sorted({r["noise_type"] for r in levels}):
            strengths = sorted({r["strength"] for r in levels if r["noise_type"] == kind})
            table = {(r["seed"], r["strength"]): r["accuracy"] for r in levels if r["noise_type"] == kind}
            arm["noise"][kind] = dict(strengths=strengths, accuracy=[[table.get((s, x), np.nan) for x in strengths]
                                                                     for s in arm["seeds"]])
        invariance = (NoiseEvaluation.Invariance & restriction).to_dicts()
        arm["invariance"] = _by_std(invariance, arm["seeds"])
        attack_key = [dict(t, **keys["evaluation"], **keys["comparison"]) for t in arm["task"]]
        arm["distances"], arm["convergence"], arm["flat_steps"] = {}, {}, {}
        for norm in ("l2", "linf"):
            rows = (AdversarialEvaluation.Image & attack_key & dict(norm=norm)).to_dicts()
            images = sorted({r["image_index"] for r in rows})
            table = {(r["seed"], r["image_index"]): (np.inf if r["distance"] is None else r["distance"]) for r in rows}
            arm["distances"][norm] = dict(images=images, distance=[[table.get((s, i), np.nan) for i in images]
                                                                   for s in arm["seeds"]])
            curve = (AdversarialEvaluation.Convergence & attack_key & dict(norm=norm)).to_dicts()
            steps = sorted({r["steps"] for r in curve})
            table = {(r["seed"], r["steps"]): (np.inf if r["median_distance"] is None else r["median_distance"])
                     for r in curve}
            arm["convergence"][norm] = dict(steps=steps, median=[[table.get((s, n), np.nan) for n in steps]
                                                                 for s in arm["seeds"]])
            arm["flat_steps"][norm] = (AdversarialEvaluation & attack_key).to_arrays(f"{norm}_flat_steps").tolist()
    targets = _by_target(TargetInvariance.Level & keys["evaluation"])
    return dict(arms=arms, targets=targets)


def _by_std(rows: list[dict], seeds: list[int]) -> dict:
    stds = sorted({r["noise_std"] for r in rows})
    table = {(r["seed"], r["noise_std"]): r["correlation"] for r in rows}
    return dict(noise_std=stds, correlation=[[table.get((s, x), np.nan) for x in stds] for s in seeds])


def _by_target(query) -> dict:
    out: dict[str, dict] = {}
    for row in query.to_dicts(order_by=["similarity_name", "noise_std"]):
        out.setdefault(row["similarity_name"], {})[f"{row['noise_std']:g}"] = row["correlation"]
    return out


def analyse(data: dict) -> dict:
    """Per arm mean and CI, and the paired differences, of every metric (see :mod:`pipeline.paired`)."""
    from pipeline import paired

    arms = data["arms"]

    def interval(values) -> dict:
        values = np.asarray(values, dtype=np.float64)
        values = values[np.isfinite(values)]
        if not len(values):
            return None
        ci = paired.bootstrap_mean(values)
        return dict(mean=ci.estimate, low=ci.low, high=ci.high, n=ci.n)

    def seed_medians(arm, norm):
        return np.median(np.asarray(arm["distances"][norm]["distance"], dtype=np.float64), axis=1)

    summary = {}
    for control, arm in arms.items():
        entry = dict(seeds=arm["seeds"], clean=interval(arm["clean"]), steps=arm["steps"],
                     fidelity=interval(arm["fidelity"]), noise={}, median={}, invariance={})
        for kind, noise in arm["noise"].items():
            acc = np.asarray(noise["accuracy"])
            entry["noise"][kind] = {f"{s:g}": interval(acc[:, k]) for k, s in enumerate(noise["strengths"])}
        for norm in arm["distances"]:
            if arm["distances"][norm]["images"]:
                entry["median"][norm] = interval(seed_medians(arm, norm))
        inv = np.asarray(arm["invariance"]["correlation"])
        entry["invariance"] = {f"{s:g}": interval(inv[:, k]) for k, s in enumerate(arm["invariance"]["noise_std"])}
        summary[control] = entry

    differences = {}
    for a, b in COMPARISONS:
        if a not in arms or b not in arms:
            continue
        A, B = arms[a], arms[b]
        seeds = sorted(set(A["seeds"]) & set(B["seeds"]))
        ia = [A["seeds"].index(s) for s in seeds]
        ib = [B["seeds"].index(s) for s in seeds]

        def diff(x, y):
            x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
            ok = np.isfinite(x) & np.isfinite(y)
            if not ok.any():
                return None
            ci = paired.paired_difference(x[ok], y[ok])
            return dict(mean=ci.estimate, low=ci.low, high=ci.high, n=ci.n, excludes_zero=ci.excludes_zero)

        entry = dict(clean=diff(np.asarray(A["clean"])[ia], np.asarray(B["clean"])[ib]), noise={}, median={})
        for kind in A["noise"]:
            xa, xb = np.asarray(A["noise"][kind]["accuracy"])[ia], np.asarray(B["noise"][kind]["accuracy"])[ib]
            entry["noise"][kind] = {f"{s:g}": diff(xa[:, k], xb[:, k])
                                    for k, s in enumerate(A["noise"][kind]["strengths"])}
        for norm in A["distances"]:
            da = np.asarray(A["distances"][norm]["distance"], dtype=np.float64)[ia]
            db_ = np.asarray(B["distances"][norm]["distance"], dtype=np.float64)[ib]
            if da.size and A["distances"][norm]["images"] == B["distances"][norm]["images"]:
                per_seed = paired.paired_median_difference(da, db_)
                entry["median"][norm] = diff(per_seed, np.zeros_like(per_seed))
        differences[f"{a} - {b}"] = entry
    return dict(arms=summary, differences=differences, targets=data["targets"])


def figures(data: dict, tag: str) -> list[Path]:
    from pipeline import figures as figs

    FIGURES.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in (("noise", figs.noise_curves_ci(_noise_frame(data), labels=ARMS)),
                      ("convergence", figs.attack_convergence(_convergence_frame(data), labels=ARMS))):
        path = FIGURES / f"robustness{'-' + tag if tag else ''}-{name}.png"
        fig.savefig(path, dpi=110)
        paths.append(path)
    return paths


def _noise_frame(data: dict):
    import pandas as pd

    rows = []
    for control, arm in data["arms"].items():
        for kind, noise in arm["noise"].items():
            for seed, accuracies in zip(arm["seeds"], noise["accuracy"]):
                rows += [dict(control=control, seed=seed, noise_type=kind, strength=s, accuracy=a)
                         for s, a in zip(noise["strengths"], accuracies)]
    return pd.DataFrame(rows)


def _convergence_frame(data: dict):
    import pandas as pd

    rows = []
    for control, arm in data["arms"].items():
        for norm, curve in arm["convergence"].items():
            for seed, medians in zip(arm["seeds"], curve["median"]):
                rows += [dict(control=control, seed=seed, norm=norm, steps=n, median_distance=m)
                         for n, m in zip(curve["steps"], medians)]
    return pd.DataFrame(rows)


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    return value


def report(summary: dict) -> None:
    """The tables of docs/results.md, printed."""
    def fmt(ci, spec=".3f"):
        return "n/a" if ci is None else f"{ci['mean']:{spec}} [{ci['low']:{spec}}, {ci['high']:{spec}}]"

    print("\n== arms: mean [95% bootstrap CI over seeds]")
    for control, arm in summary["arms"].items():
        print(f"{ARMS.get(control, control)} ({len(arm['seeds'])} seeds): clean {fmt(arm['clean'])}; "
              f"median L2 {fmt(arm['median'].get('l2'))}; median Linf {fmt(arm['median'].get('linf'), '.4f')}; "
              f"steps {arm['steps']}")
        for kind, levels in arm["noise"].items():
            print(f"  {kind}: " + "; ".join(f"{s}: {fmt(ci)}" for s, ci in levels.items()))
        print("  network invariance: " + "; ".join(f"std {s}: {fmt(ci)}" for s, ci in arm["invariance"].items()))
    print("\n== paired differences: mean [95% CI]")
    for name, entry in summary["differences"].items():
        print(f"{name}: clean {fmt(entry['clean'])}; median L2 {fmt(entry['median'].get('l2'))}; "
              f"median Linf {fmt(entry['median'].get('linf'), '.4f')}")
        for kind, levels in entry["noise"].items():
            print(f"  {kind}: " + "; ".join(f"{s}: {fmt(ci)}" for s, ci in levels.items()))
    print("\n== target noise invariance (r of clean with noisy pair similarity)")
    for name, levels in summary["targets"].items():
        print(f"{name}: " + "; ".join(f"std {s}: {r:.3f}" for s, r in levels.items()))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--alpha", type=float, default=5.0, help="similarity weight of the regularized arms")
    parser.add_argument("--width", type=int, default=None, help="ResNet18 width (default 8)")
    parser.add_argument("--lowpass-sigma", type=float, default=3.0,
                        help="blur of the positive control's stimuli, pixels of the 36 x 64 stimuli")
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
        return work(threads=1)
    schemas.declare_all()
    start = time.monotonic()
    sizes = settings(args.quick)
    keys = declare(args, sizes)
    if not args.analyse_only:
        populate(args.workers or os.cpu_count() or 1)
    data = collect(keys)
    summary = analyse(data)
    summary["wall_seconds"] = time.monotonic() - start
    summary["settings"] = dict(sizes, seeds=args.seeds, alpha=args.alpha, lowpass_sigma=args.lowpass_sigma)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"robustness{'-' + args.tag if args.tag else ''}.json"
    out.write_text(json.dumps(_plain(dict(summary=summary, data=data)), indent=1))
    report(summary)
    if not args.quick:
        for path in figures(data, args.tag):
            print(f"figure: {path}")
    print(f"results: {out}; {summary['wall_seconds'] / 60:.1f} min")
    return summary


if __name__ == "__main__":
    main()
