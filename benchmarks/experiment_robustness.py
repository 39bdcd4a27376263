"""Li et al. (2019) with power (issue 32): does a robust target, or the neural one, make a classifier
more robust at matched clean accuracy?  The design is pre-registered in docs/results.md ("Neural
regularization with power"); this command runs it in three parts::

    python -m benchmarks.experiment_robustness --part task     # is the task worth using?
    python -m benchmarks.experiment_robustness --part sweep    # alpha, chosen on validation
    python -m benchmarks.experiment_robustness --part compare  # the registered comparison

Each part declares what it needs in the database it is pointed at (``DJ_HOST``..., ``PIPELINE_PREFIX``,
default prefix ``robustness``), computes it as populate jobs and writes
``benchmarks/results/robustness-{part}[-tag].json``, its tables (``.md`` beside it, as docs/results.md
shows them) and figures in ``docs/figures/``.  An interrupted part resumes where it stopped (run it
again); ``python -m populate worker`` processes on other machines can take its jobs.  A part may run in
a database of its own: what a later part needs from an earlier one it reads from the earlier part's
committed results file (compare: the chosen alphas), and everything else it computes again (the data,
the denoisers and their similarity, the teacher; each is deterministic per seed).

Common to all parts: the simulated demo scan and its denoising ensemble (rotation-equivariant models
with shifter and modulator), whose predicted similarity is the neural target; the shapes task
(:mod:`pipeline.data.shapes`, with its own validation split); one fixed schedule for every classifier
(no early stopping); one evaluation config (noise curves on every test image, network invariance,
and, for a comparison's members, minimal L2 and L∞ attacks on the common images).

- ``task``: the baseline arm on ``TASK_SEEDS``, the grey-level-histogram and linear-pixel baselines
  (:mod:`pipeline.classifier.baselines`), the convergence check (the baseline's test accuracy moves by
  less than 0.01 over its last 3 epochs, from each classifier's stored history) and the noise curves
  (Gaussian, salt-and-pepper, uniform) against chance.  Figure ``robustness-task.png``.
- ``sweep``: on ``--sweep-seeds``, the baseline and, for each alpha of ``ALPHAS``, the neural arm and the
  positive control, regularized towards a teacher's layer similarity (the teacher: a ResNet of the same
  architecture trained with Gaussian-noise augmentation, seed ``TEACHER_SEED``).  The teacher target's
  noise invariance against the baseline network's at std 0.2; per arm the alpha chosen by
  :func:`pipeline.classifier.alpha_rule.choose_alpha` on clean validation accuracy; figures
  ``robustness-sweep-dose.png`` (relative accuracy at std 0.1 against alpha) and
  ``robustness-sweep-tradeoff.png`` (relative accuracy against clean validation accuracy).
- ``compare``: reads the chosen alphas from the sweep's results file; ``--seeds`` (8) of the baseline,
  the neural arm, the shuffled control (at the neural arm's alpha), the teacher arm and the upper bound
  (trained with the teacher's noise augmentation directly); noise and attack evaluations on the common
  images; the registered endpoints (:mod:`populate.api.endpoints`: primary per question with its paired
  t-test, 95 % interval, verdict and detectable difference, secondary endpoints Holm-corrected) and the
  learned layer weights.  Figures ``robustness-compare-noise.png`` and ``-convergence.png``.

``--quick`` runs every part at toy sizes (results tagged ``quick``, figures beside the results), for
tests.

Sizes and time on 2 CPU cores (two workers of one thread each)
--------------------------------------------------------------
Measured on this project's 2-core machine while other jobs shared it, as CPU seconds of one torch thread
(what a worker costs on an idle core): a training step of 64 shapes images takes 0.060 s at width 8 for
the baseline, 0.064 s with noise augmentation and 0.081 s regularized (16 stimulus images, every one of
their 120 pairs); at width 16, 0.135, 0.119 and 0.172 s (batch 32: 0.030 / 0.049 s at width 8, 0.057 /
0.094 s at width 16; 25 steps each after 3 warm-up steps).  Width 16 would cost 2.2 times width 8, so
the experiment runs at **width 8**.  One width-8 baseline on 1,000 / 200 / 200 images per class
(train / validation / test), lr 0.1 decayed by 0.3 every 4 epochs, 16 epochs of 156 steps (seed 0):
test accuracy 0.55 after 4 epochs, 0.88 after 8, 0.947 after 16, and 0.942, 0.945, 0.947 over the last
3 (it moved 0.005 < 0.01); 168 CPU seconds with the per-epoch scoring.  That is :data:`FULL_SCHEDULE`:
a regularized classifier then costs about 225 s and an augmented one 180 s.  Evaluating one classifier
costs about 15 s (19 noise levels of 2,000 test images; 7.5 s per 1,000 measured) and attacking one
member 35 s (20 common images: Carlini-Wagner over its schedule 26 s, FMN L∞ 9 s); the two shallow
baselines 17 s together.  The scan, the two denoisers (400 iterations) and their similarity come to
about 5 minutes per part (from the 3 minutes per demo-size model at 1,000 iterations of
``benchmarks.experiment_celltypes``; not measured here).

Estimated wall time on 2 idle cores:

- task: 2 baselines (3 min), their evaluations and the shallow baselines (1 min), data and denoisers
  (5 min): **about 10 minutes**;
- sweep (2 seeds): 2 baselines, the teacher and 28 regularized classifiers (57 min), 31 evaluations
  (5 min), data, denoisers and the teacher's similarity (6 min): **about 70 minutes**;
- compare (8 seeds): 8 baselines, 8 upper-bound classifiers and the teacher, 24 regularized classifiers
  (70 min), 41 evaluations (7 min), attacks on 40 members (12 min), data and denoisers (5 min): **about
  95 minutes**.

About 2 h 55 min together.  What was cut to fit (docs/results.md, the amendment of the registration):
the sweep has 2 seeds, not 8, and the shuffled control is not swept (it trains at the neural arm's
alpha); the classifiers are width 8, and the attacks run on 20 common images.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from benchmarks import robustness_tables
from benchmarks.common import RESULTS
from populate.api import comparison, endpoints
from populate.api.comparison import ARMS, EVALUATION_GRID

FIGURES = Path(__file__).resolve().parents[1] / "docs" / "figures"
PARTS = ("task", "sweep", "compare")
SCAN = "1-1-1"
ALPHAS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0)
TASK_SEEDS = (0, 1)
SWEEP_SEEDS = (0, 1)
COMPARE_SEEDS = tuple(range(8))
TEACHER_SEED = 100  # no arm has this seed: the teacher is not a member of the upper bound
NOISE_STD = 0.2  # the teacher's and the upper bound's augmentation: std drawn from [0, 0.2] per image
CONVERGENCE_EPOCHS, CONVERGENCE_TOLERANCE = 3, 0.01
TASK_ACCURACY, BASELINE_MARGIN = 0.85, 0.3
SWEPT_ARMS = ("neural", "teacher")
UNIFORM = (0.0, 0.03, 0.06, 0.12, 0.2, 0.3)  # half-widths of uniform noise, image range [0, 1]
ATTACK_NAMES = {"cw": "foolbox Carlini-Wagner, per binary-search step", "fmn": "foolbox FMN"}
FULL_SCHEDULE = dict(
    width=8, epochs=16, decay_every=4, reset_every=16, lr=0.1, batch_size=64, holdout_fraction=0.0, pair_images=16
)
"""Every classifier's schedule: full epochs of the training split, the learning rate 0.1 decayed by 0.3 every
4 epochs, no early stopping (the set's own validation split is scored after each epoch)."""
ATTACK_IMAGES = 20


def settings(quick: bool) -> dict:
    """Sizes of the experiment (see the module docstring for what they cost)."""
    if quick:
        return dict(
            name="robustness-quick",
            preset="tiny",
            shapes=(30, 10, 10),
            model_iterations=40,
            model_seeds=(0,),
            kernels=(5, 3),
            features=2,
            classifier=dict(width=4, epochs=3, max_steps_per_epoch=3, batch_size=16, pair_images=4),
            evaluation=dict(
                noise_images=60,
                gaussian=(0.0, 0.1, 0.2, 0.3),
                salt_pepper=(0.0, 0.05),
                uniform=(0.0, 0.12),
                attack_images=4,
                attack_schedule=(2, 5),
                l2_attack="cw",
                invariance_std=(0.2,),
                invariance_images=40,
                invariance_pairs=200,
            ),
            alphas=(1.0, 5.0),
            task_seeds=(0,),
            sweep_seeds=(0,),
            compare_seeds=(0, 1),
        )
    return dict(
        name="robustness",
        preset="demo",
        shapes=(1000, 200, 200),  # per class: train, validation, test
        model_iterations=400,
        model_seeds=(0, 1),
        kernels=(9, 5, 5),
        features=6,
        classifier=FULL_SCHEDULE,
        evaluation=dict(EVALUATION_GRID, uniform=UNIFORM, noise_images=None, attack_images=ATTACK_IMAGES),
        alphas=ALPHAS,
        task_seeds=TASK_SEEDS,
        sweep_seeds=SWEEP_SEEDS,
        compare_seeds=COMPARE_SEEDS,
    )


def declare_common(sizes: dict) -> dict:
    """The scan, the shapes set, the denoisers and their similarity, and the evaluation config (idempotent);
    returns the names and keys every part uses."""
    from populate import ingest
    from schemas.classifiers import EvaluationConfig
    from schemas.models import Ensemble, TrainingTask
    from schemas.similarity import ImageSet, SimilarityTask

    name, classification_set = sizes["name"], f"{sizes['name']}-shapes"
    scan, _ = ingest.simulate(sizes["preset"], seed=0, scan=SCAN)
    ingest.shapes_classes(*sizes["shapes"], name=classification_set)
    kernels = sizes["kernels"]
    core = dict(kind="rotation", features=sizes["features"], rotations=8, layers=len(kernels), kernel_sizes=kernels)
    trainer = dict(max_iterations=sizes["model_iterations"], eval_every=min(50, sizes["model_iterations"] // 4))
    models = TrainingTask.add(
        model=dict(core=core, shifter=True, modulator=True),
        dataset=dict(scan=SCAN, image_shape=(18, 32)),
        trainer=dict(trainer, patience=4, batch_size=64),
        seeds=sizes["model_seeds"],
        name=f"{name}-denoiser",
    )
    if not (Ensemble & dict(ensemble_name=name)):
        Ensemble.create(name, models, description="denoisers with shifter and modulator, scan " + SCAN)
    if not (ImageSet & dict(image_set=name)):
        ImageSet.from_scans(name, [scan], description="stimuli of scan " + SCAN)
    neural = f"{name}-neural"
    SimilarityTask.add(neural, dict(method="model"), image_set=name, ensembles=[name])
    return dict(
        name=name,
        set=classification_set,
        neural=neural,
        evaluation=EvaluationConfig.add(sizes["evaluation"], name=name),
    )


def declare_teacher(sizes: dict, common: dict) -> dict:
    """``common`` with the teacher (``teacher_key``: an "augmented" classifier of seed ``TEACHER_SEED``) and its
    layer similarity over the stimuli (``teacher``: the positive control's target); idempotent."""
    from schemas.classifiers import SimilarityTeacher

    teacher = declare_arm(sizes, common, "augmented", (TEACHER_SEED,))[0]
    target = SimilarityTeacher.add(f"{common['name']}-teacher", teacher, image_set=common["name"])["similarity_name"]
    return dict(common, teacher=target, teacher_key=teacher)


def classifier_config(sizes: dict, arm: str, alpha: float = 0.0) -> dict:
    """The ClassifierConfig of an arm: the common schedule, its control and alpha; "augmented" is the
    baseline's control with the teacher's noise augmentation."""
    control = "none" if arm in ("none", "augmented") else arm
    config = dict(sizes["classifier"], control=control, alpha=0.0 if control == "none" else float(alpha))
    return dict(config, noise_std=NOISE_STD) if arm == "augmented" else config


def declare_arm(sizes: dict, common: dict, arm: str, seeds, alpha: float = 0.0) -> list[dict]:
    """ClassifierTask keys of one arm at one alpha (idempotent)."""
    from schemas.classifiers import ClassifierTask

    return ClassifierTask.add(
        classifier_config(sizes, arm, alpha),
        classification_set=common["set"],
        neural=common["neural"],
        seeds=seeds,
        target=common["teacher"] if arm == "teacher" else None,
        name=f"{common['name']}-{arm}" + (f"-{alpha:g}" if arm not in ("none", "augmented") else ""),
    )


def work(threads: int, poll: float = 5.0) -> None:
    """One worker: populate every table (DataJoint's job reservations) until nothing is left to do.

    Several run side by side; a pass that adds nothing waits and looks again until :func:`finished`,
    because another worker's job can make downstream keys ready.
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
        if not added and finished(tables):
            return
        if not added:
            time.sleep(poll)


def finished(tables) -> bool:
    """Whether no job is running and every computable key is stored or has failed.  Asking only for
    running jobs would let a worker stop in the moment between another's insert and its next
    reservation, and leave the rest of the part to one process."""
    if any(len(table.jobs.reserved) for table in tables):
        return False
    return all(len(table.key_source - table) <= len(table.jobs.errors) for table in tables)


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
    root = Path(__file__).resolve().parents[1]
    processes = [subprocess.Popen(command, env=env, cwd=root) for _ in range(workers)]
    codes = [p.wait() for p in processes]
    errors = {table.__name__: len(table.jobs.errors) for table in select_tables() if len(table.jobs.errors)}
    if any(codes) or errors:
        raise SystemExit(f"workers exited with {codes}; failed jobs: {errors} (see each table's jobs.errors)")


def progress(part: str, tasks: list[dict]) -> None:
    """One line: how many of the part's classifiers are trained."""
    from schemas.classifiers import TrainedClassifier

    done = len(TrainedClassifier & tasks) if tasks else 0
    print(f"[{time.strftime('%H:%M:%S')} {part}] {done} of {len(tasks)} classifiers trained", flush=True)


def classifier_rows(tasks: dict[tuple[str, float], list[dict]], evaluation: dict) -> list[dict]:
    """One row per trained classifier of ``tasks`` ({(arm, alpha): keys}): arm, alpha, seed, clean test and
    validation accuracy, relative accuracy at the primary endpoint, layer weights and history."""
    from schemas.classifiers import NoiseEvaluation, TrainedClassifier

    kind, strength = endpoints.PRIMARY
    rows = []
    for (arm, alpha), keys in tasks.items():
        for row in (TrainedClassifier & keys).to_dicts(order_by="seed"):
            key = {k: row[k] for k in TrainedClassifier.primary_key}
            levels = (NoiseEvaluation.Level & dict(key, **evaluation) & dict(noise_type=kind)).to_dicts()
            try:
                ratio = endpoints.relative([r["strength"] for r in levels], [r["accuracy"] for r in levels], strength)
                relative = float(ratio[0])
            except KeyError:  # not evaluated (yet)
                relative = None
            rows.append(
                dict(
                    arm=arm,
                    alpha=alpha,
                    seed=row["seed"],
                    clean=row["clean_accuracy"],
                    validation=row["validation_accuracy"],
                    relative=relative,
                    layer_weights=row["layer_weights"],
                    history=row["history"],
                )
            )
    return rows


def stored_set(name: str):
    """The classification set ``name`` as stored, with its validation split."""
    from pipeline.data.cifar import ClassificationSet as Images
    from schemas.classifiers import ClassificationSet

    row = (ClassificationSet & dict(classification_set=name)).fetch1()
    validation = (ClassificationSet.Validation & dict(classification_set=name)).fetch1()
    arrays = {k: v.load() for k, v in {**row, **validation}.items() if k.endswith(("_images", "_labels"))}
    return Images(class_names=tuple(row["class_names"]), source=row["source"], **arrays)


# -- task -----------------------------------------------------------------------------------------------


def run_task(args, sizes: dict, common: dict) -> dict:
    """The baseline arm, the shallow baselines, convergence and the noise curves against chance."""
    from threadpoolctl import threadpool_limits

    from pipeline.classifier.baselines import task_baselines

    tasks = {("none", 0.0): declare_arm(sizes, common, "none", sizes["task_seeds"])}
    run_jobs(args, "task", [k for keys in tasks.values() for k in keys])
    rows = classifier_rows(tasks, common["evaluation"])
    start, images = time.monotonic(), stored_set(common["set"])
    with threadpool_limits(1):  # BLAS threads spin against each other on a busy machine: one is faster
        baselines = {name: vars(score) for name, score in task_baselines(images).items()}
    print(f"[task] histogram and linear-pixel baselines: {time.monotonic() - start:.0f} s")
    noise = noise_curves(tasks[("none", 0.0)], common["evaluation"])
    chance = 1.0 / images.n_classes
    return dict(
        baseline=[{k: r[k] for k in ("seed", "clean", "validation", "history")} for r in rows],
        baselines=baselines,
        convergence=[convergence(r["seed"], r["history"]) for r in rows],
        noise=noise,
        chance=chance,
        criteria=task_criteria(rows, baselines, noise, chance),
    )


def convergence(seed: int, history: list[dict]) -> dict:
    """How far one classifier's test accuracy moved (max - min) over its last ``CONVERGENCE_EPOCHS`` epochs."""
    last = [h["test_accuracy"] for h in history[-CONVERGENCE_EPOCHS:]]
    moved = float(max(last) - min(last)) if len(last) == CONVERGENCE_EPOCHS else None
    return dict(seed=seed, last=last, moved=moved, converged=moved is not None and moved < CONVERGENCE_TOLERANCE)


def noise_curves(keys: list[dict], evaluation: dict) -> dict:
    """{kind: {strengths, accuracy (n_seeds, n_strengths), seeds}} of the classifiers ``keys``."""
    from schemas.classifiers import NoiseEvaluation

    levels = (NoiseEvaluation.Level & [dict(k, **evaluation) for k in keys]).to_dicts()
    seeds = sorted({r["seed"] for r in levels})
    curves = {}
    for kind in sorted({r["noise_type"] for r in levels}):
        table = {(r["seed"], r["strength"]): r["accuracy"] for r in levels if r["noise_type"] == kind}
        strengths = sorted({s for _, s in table})
        curves[kind] = dict(
            seeds=seeds, strengths=strengths, accuracy=[[table.get((s, x)) for x in strengths] for s in seeds]
        )
    return curves


def task_criteria(rows: list[dict], baselines: dict, noise: dict, chance: float) -> dict:
    """The registered conditions of the task (clean accuracy, baselines' margin, convergence) and the
    accuracy at the strongest level of each noise type against chance."""
    clean = float(np.mean([r["clean"] for r in rows])) if rows else None
    best_shallow = max(b["test_accuracy"] for b in baselines.values())
    moved = [convergence(r["seed"], r["history"])["moved"] for r in rows]
    strongest = {
        kind: dict(strength=c["strengths"][-1], accuracy=_mean([a[-1] for a in c["accuracy"]]), chance=chance)
        for kind, c in noise.items()
    }
    return dict(
        clean_accuracy=dict(value=clean, threshold=TASK_ACCURACY, met=clean is not None and clean >= TASK_ACCURACY),
        baseline_margin=dict(
            value=None if clean is None else clean - best_shallow,
            threshold=BASELINE_MARGIN,
            met=clean is not None and clean - best_shallow >= BASELINE_MARGIN,
        ),
        convergence=dict(
            value=None if None in moved or not moved else max(moved),
            threshold=CONVERGENCE_TOLERANCE,
            met=bool(moved) and all(m is not None and m < CONVERGENCE_TOLERANCE for m in moved),
        ),
        strongest_noise=strongest,
    )


def task_figures(record: dict, folder: Path, stem: str) -> list[Path]:
    import pandas as pd

    from pipeline import figures as figs

    results = record["results"]
    clean = {"ResNet (baseline)": [r["clean"] for r in results["baseline"]]}
    clean.update({robustness_tables.SHALLOW[name]: [b["test_accuracy"]] for name, b in results["baselines"].items()})
    noise = pd.DataFrame(
        dict(noise_type=kind, strength=x, seed=seed, accuracy=a)
        for kind, c in results["noise"].items()
        for seed, values in zip(c["seeds"], c["accuracy"])
        for x, a in zip(c["strengths"], values)
    )
    history = pd.DataFrame(
        dict(seed=r["seed"], epoch=h["epoch"], test_accuracy=h["test_accuracy"])
        for r in results["baseline"]
        for h in r["history"]
    )
    return [save_figure(figs.task_overview(clean, noise, history, results["chance"]), folder / f"{stem}.png")]


# -- sweep ----------------------------------------------------------------------------------------------


def sweep_tasks(sizes: dict, common: dict) -> dict[tuple[str, float], list[dict]]:
    tasks = {("none", 0.0): declare_arm(sizes, common, "none", sizes["sweep_seeds"])}
    for arm in SWEPT_ARMS:
        for alpha in sizes["alphas"]:
            tasks[(arm, alpha)] = declare_arm(sizes, common, arm, sizes["sweep_seeds"], alpha)
    return tasks


def run_sweep(args, sizes: dict, common: dict) -> dict:
    """Every alpha of every swept arm, the alpha each keeps by the rule, and the teacher target's invariance."""
    from pipeline.classifier.alpha_rule import DEFAULT_TOLERANCE, choose_alpha

    common = declare_teacher(sizes, common)
    tasks = sweep_tasks(sizes, common)
    run_jobs(args, "sweep", [k for keys in tasks.values() for k in keys] + [common["teacher_key"]])
    rows = classifier_rows(tasks, common["evaluation"])
    for row in rows:
        row.pop("history")
    untrained = sum(len(keys) for keys in tasks.values()) - len(rows)
    if untrained:
        print(f"note: {untrained} classifiers of the sweep are not trained: the means are over fewer seeds")
    means = sweep_means(rows)
    baseline = means.get("none", {}).get(0.0)
    chosen = {
        arm: choose_alpha({a: m["validation"] for a, m in means.get(arm, {}).items()}, baseline["validation"])
        if baseline
        else None
        for arm in SWEPT_ARMS
    }
    teacher = classifier_rows({("teacher model", 0.0): [common["teacher_key"]]}, common["evaluation"])
    return dict(
        rows=rows,
        untrained=untrained,
        means={arm: {f"{a:g}": m for a, m in by_alpha.items()} for arm, by_alpha in means.items()},
        tolerance=DEFAULT_TOLERANCE,
        chosen=chosen,
        teacher_model=[{k: r[k] for k in ("seed", "clean", "validation", "relative")} for r in teacher],
        invariance=target_invariance(common, tasks[("none", 0.0)]),
    )


def sweep_means(rows: list[dict]) -> dict[str, dict[float, dict]]:
    """{arm: {alpha: mean over seeds of validation, clean and relative accuracy, and the seeds}}."""
    out: dict[str, dict[float, dict]] = {}
    order = ("none", *SWEPT_ARMS)
    for arm, alpha in sorted({(r["arm"], r["alpha"]) for r in rows}, key=lambda p: (order.index(p[0]), p[1])):
        group = [r for r in rows if r["arm"] == arm and r["alpha"] == alpha]
        out.setdefault(arm, {})[alpha] = dict(
            {k: _mean([r[k] for r in group]) for k in ("validation", "clean", "relative")},
            seeds=[r["seed"] for r in group],
        )
    return out


def _mean(values: list) -> float | None:
    finite = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def target_invariance(common: dict, baseline: list[dict]) -> dict:
    """Invariance (r of clean with noisy pair similarity) per noise std of the teacher and neural targets
    (TargetInvariance) and of the baseline networks (NoiseEvaluation.Invariance, mean over seeds)."""
    from schemas.classifiers import NoiseEvaluation, TargetInvariance

    out: dict[str, dict] = {}
    for name in (common["teacher"], common["neural"]):
        levels = (TargetInvariance.Level & dict(similarity_name=name, **common["evaluation"])).to_dicts()
        out[f"target {name}"] = {f"{r['noise_std']:g}": r["correlation"] for r in levels}
    levels = (NoiseEvaluation.Invariance & [dict(k, **common["evaluation"]) for k in baseline]).to_dicts()
    out["baseline network"] = {
        f"{std:g}": _mean([r["correlation"] for r in levels if r["noise_std"] == std])
        for std in sorted({r["noise_std"] for r in levels})
    }
    return out


def sweep_figures(record: dict, folder: Path, stem: str) -> list[Path]:
    import pandas as pd

    from pipeline import figures as figs

    results = record["results"]
    frame = pd.DataFrame(
        dict(
            arm=ARMS.get(r["arm"], r["arm"]),
            alpha=r["alpha"],
            seed=r["seed"],
            validation_accuracy=r["validation"],
            relative_accuracy=r["relative"],
        )
        for r in results["rows"]
    ).astype({"relative_accuracy": float, "validation_accuracy": float})
    baseline = ARMS["none"]
    regularized = frame[frame["arm"] != baseline]
    references = {f"{baseline} (mean)": frame[frame["arm"] == baseline]["relative_accuracy"].mean()}
    teacher = [r["relative"] for r in results["teacher_model"] if r["relative"] is not None]
    if teacher:
        references["teacher network itself"] = float(np.mean(teacher))
    return [
        save_figure(figs.dose_response(regularized, references), folder / f"{stem}-dose.png"),
        save_figure(
            figs.accuracy_tradeoff(frame, baseline=baseline, tolerance=results["tolerance"]),
            folder / f"{stem}-tradeoff.png",
        ),
    ]


# -- compare --------------------------------------------------------------------------------------------


def chosen_alphas(args, sizes: dict) -> dict:
    """The sweep's chosen alpha per swept arm, from its results file (the sweep may have run elsewhere)."""
    path = results_path(args, "sweep")
    if not path.is_file():
        raise SystemExit(f"{path}: no sweep results; run --part sweep first (with the same --tag)")
    record = json.loads(path.read_text())
    if record["settings"]["name"] != sizes["name"]:
        raise SystemExit(f"{path}: a sweep of settings {record['settings']['name']!r}, not {sizes['name']!r}")
    if record["settings"]["classifier"] != comparison.plain(sizes["classifier"]):
        raise SystemExit(f"{path}: its alphas were chosen for another classifier schedule than this command's")
    return {arm: record["results"]["chosen"].get(arm) for arm in SWEPT_ARMS}


def compare_tasks(sizes: dict, common: dict, alphas: dict) -> dict[str, list[dict]]:
    """The compared arms' tasks; an arm without an admissible alpha is left out (the shuffled control
    with the neural arm)."""
    seeds = sizes["compare_seeds"]
    tasks = {arm: declare_arm(sizes, common, arm, seeds) for arm in ("none", "augmented")}
    if alphas["neural"] is not None:
        for arm in ("neural", "shuffled"):
            tasks[arm] = declare_arm(sizes, common, arm, seeds, alphas["neural"])
    if alphas["teacher"] is not None:
        tasks["teacher"] = declare_arm(sizes, common, "teacher", seeds, alphas["teacher"])
    return tasks


def run_compare(args, sizes: dict, common: dict) -> dict:
    from schemas.classifiers import ComparisonGroup

    alphas = chosen_alphas(args, sizes)
    print(f"[compare] alphas chosen by the sweep: {alphas}")
    common = declare_teacher(sizes, common)
    tasks = compare_tasks(sizes, common, alphas)
    members = [k for keys in tasks.values() for k in keys]
    group = ComparisonGroup.create(
        common["name"], members, description="baseline, neural, shuffled, teacher target, upper bound; by seed"
    )
    run_jobs(args, "compare", members + [common["teacher_key"]])
    data = comparison.collect(dict(comparison=group, evaluation=common["evaluation"]))
    summary = comparison.analyse(data)
    tests = endpoints.endpoints(data, teacher_target=common["teacher"])
    comparison.report(summary)
    endpoints.report(tests)
    unadmitted = [arm for arm, alpha in alphas.items() if alpha is None]
    return dict(alphas=alphas, not_admissible=unadmitted, endpoints=tests, summary=summary, data=data)


def compare_figures(record: dict, folder: Path, stem: str) -> list[Path]:
    from pipeline import figures as figs

    data = record["results"]["data"]
    noise = figs.noise_curves_ci(_curve_frame(data, "noise", "noise_type", ("strengths", "strength")), labels=ARMS)
    curves = _curve_frame(data, "convergence", "norm", ("steps", "steps"), ("median", "median_distance"))
    return [
        save_figure(noise, folder / f"{stem}-noise.png"),
        save_figure(
            figs.attack_convergence(curves, labels=ARMS, attacks=_attacks(record)), folder / f"{stem}-convergence.png"
        ),
    ]


def _attacks(record: dict) -> dict[str, str]:
    """{norm: name of the attack the evaluation runs for it}."""
    from pipeline.classifier.attacks import NORMS
    from pipeline.classifier.evaluation import EvaluationSettings

    evaluation = EvaluationSettings.from_dict(record["settings"]["evaluation"])
    return {norm: ATTACK_NAMES[evaluation.attack(norm)] for norm in NORMS}


def _curve_frame(data: dict, part: str, name_column: str, x: tuple[str, str], y=("accuracy", "accuracy")):
    """Long form of the per-seed curves ``data["arms"][arm][part][name]``: one row per arm, curve, seed and
    point with columns control, seed, ``name_column`` and the point's x and y; ``x`` and ``y`` are each
    (key of the curve's values, column)."""
    import pandas as pd

    (x_key, x_column), (y_key, y_column) = x, y
    rows = [
        {"control": arm_name, "seed": seed, name_column: name, x_column: a, y_column: b}
        for arm_name, arm in data["arms"].items()
        for name, curve in arm[part].items()
        for seed, values in zip(arm["seeds"], curve[y_key])
        for a, b in zip(curve[x_key], values)
    ]
    return pd.DataFrame(rows).astype({y_column: float})


# -- running a part -------------------------------------------------------------------------------------

PART_RUNS = {"task": run_task, "sweep": run_sweep, "compare": run_compare}
PART_FIGURES = {"task": task_figures, "sweep": sweep_figures, "compare": compare_figures}


def run_jobs(args, part: str, tasks: list[dict]) -> None:
    """Populate everything the part's ``tasks`` need, with progress lines before and after."""
    progress(part, tasks)
    if not args.analyse_only:
        populate(args.workers or os.cpu_count() or 1)
        progress(part, tasks)


def results_path(args, part: str) -> Path:
    tag = args.tag or ("quick" if args.quick else "")
    return Path(args.results) / f"robustness-{part}{'-' + tag if tag else ''}.json"


def save_figure(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"figure: {path}")
    return path


def task_checks(args) -> dict | None:
    """The task part's registered conditions from its results file, for the later parts' records (None
    without the file); a condition not met is printed."""
    path = results_path(args, "task")
    if not path.is_file():
        print(f"note: {path} is absent: the task's conditions are not checked in this record")
        return None
    criteria = json.loads(path.read_text())["results"]["criteria"]
    unmet = [name for name, c in criteria.items() if "met" in c and not c["met"]]
    if unmet:
        print(f"note: the task's registered conditions not met ({path}): {', '.join(unmet)}")
    return criteria


def run_part(args) -> dict:
    """Declare, populate and analyse one part; write its results file, tables and figures."""
    start = time.monotonic()
    sizes = settings(args.quick)
    if args.seeds:
        sizes["compare_seeds"] = tuple(args.seeds)
    if args.sweep_seeds:
        sizes["sweep_seeds"] = tuple(args.sweep_seeds)
    common = declare_common(sizes)
    results = PART_RUNS[args.part](args, sizes, common)
    record = comparison.plain(
        dict(
            part=args.part,
            settings=sizes,
            task_checks=None if args.part == "task" else task_checks(args),
            results=results,
            wall_seconds=time.monotonic() - start,
        )
    )
    path = results_path(args, args.part)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))
    path.with_suffix(".md").write_text(robustness_tables.markdown(record))
    folder = Path(args.figures) if args.figures else (path.parent if args.quick else FIGURES)
    record["figures"] = [str(p) for p in PART_FIGURES[args.part](record, folder, path.stem)]
    print(f"results: {path}; {record['wall_seconds'] / 60:.1f} min")
    return record


def main(argv=None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=PARTS, help="which part to run (see the module docstring)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds of every compared arm (8)")
    parser.add_argument("--sweep-seeds", type=int, nargs="+", default=None, help="seeds of the sweep (2)")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: one per core)")
    parser.add_argument("--work", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="toy sizes, for tests (tag 'quick' unless --tag)")
    parser.add_argument("--tag", default="", help="suffix of the results files and figures")
    parser.add_argument("--results", default=str(RESULTS), help="folder of the results files")
    parser.add_argument("--figures", default=None, help="folder of the figures (default docs/figures)")
    parser.add_argument("--analyse-only", action="store_true", help="no populate: analyse what is computed")
    args = parser.parse_args(argv)
    os.environ.setdefault("PIPELINE_PREFIX", "robustness")
    import datajoint as dj

    import schemas

    if not dj.config.get("database.host") and not os.environ.get("DJ_HOST"):
        raise SystemExit("the experiment needs a database: set DJ_HOST etc. (populate/deploy/local_db.sh)")
    if args.work:
        schemas.activate()
        work(threads=1)
        return None
    if args.part is None:
        parser.error("--part is required: task, sweep or compare")
    schemas.declare_all()
    return run_part(args)


if __name__ == "__main__":
    main()
