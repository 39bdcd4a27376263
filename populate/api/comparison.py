"""The paired comparison of a ComparisonGroup's arms: what the robustness experiment and the demo print.

:func:`collect` reads every result of one comparison under one evaluation config; :func:`analyse`
gives each arm's mean with a 95 % bootstrap CI over seeds and the paired differences (neural -
baseline, neural - shuffled, positive control - baseline; :mod:`pipeline.paired`); :func:`report`
prints them.
"""

from __future__ import annotations

import numpy as np

ARMS = {
    "none": "baseline",
    "neural": "neural",
    "shuffled": "shuffled",
    "lowpass": "positive control",
    "teacher": "positive control (teacher)",
    "augmented": "noise-augmented (upper bound)",
    "single_trial": "single trial",
    "pixel": "pixel",
}
"""Label of each arm: a classifier's control, or "augmented" for an unregularized one trained with noise
augmentation (:func:`arm_name`)."""
COMPARISONS = (
    ("neural", "none"),
    ("neural", "shuffled"),
    ("lowpass", "none"),
    ("teacher", "none"),
    ("augmented", "none"),
)

EVALUATION_GRID = dict(
    gaussian=(0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3),
    salt_pepper=(0.0, 0.01, 0.03, 0.05, 0.1, 0.2),
    # Carlini-Wagner for L2 (steps per binary-search step, flat from 100): FMN's L2 median was flat
    # but far above Carlini-Wagner's (pipeline.classifier.attacks.ATTACKS); FMN for L-infinity, flat by 50-100 steps
    l2_attack="cw",
    attack_schedule=(25, 50, 100, 200),
    linf_schedule=(5, 10, 25, 50, 100, 200),
    invariance_std=(0.05, 0.1, 0.2),
    invariance_images=500,
    invariance_pairs=5000,
)
"""Noise strengths, attack schedule and invariance sizes of the robustness experiment's evaluation
(:class:`pipeline.classifier.evaluation.EvaluationSettings` fields): the experiment and the demo evaluate the same
grid and differ only in how many images they evaluate and attack."""


def arm_name(control: str, config: dict) -> str:
    """The arm of a classifier: its control, or "augmented" for the baseline's control trained with Gaussian
    noise (``ClassifierConfig.noise_std``), which is the upper bound, not a baseline."""
    return "augmented" if control == "none" and config.get("noise_std") is not None else control


def collect(keys: dict) -> dict:
    """Every result of the comparison, as plain arrays per arm (rows ordered by seed; arms by
    :func:`arm_name`), with each classifier's target and learned layer weights."""
    from schemas.classifiers import (
        AdversarialEvaluation,
        ClassifierConfig,
        ClassifierTask,
        ComparisonGroup,
        NoiseEvaluation,
        TargetInvariance,
        TrainedClassifier,
    )

    members = ComparisonGroup.Member & keys["comparison"]
    query = TrainedClassifier * ClassifierConfig.proj("control", "config") * ClassifierTask.proj("target_name")
    trained = (query & members).to_dicts(order_by=["control", "seed"])
    arms: dict[str, dict] = {}
    for row in trained:
        arm = arms.setdefault(
            arm_name(row["control"], row["config"]),
            dict(
                seeds=[],
                clean=[],
                validation=[],
                steps=[],
                fidelity=[],
                history=[],
                task=[],
                target=[],
                layer_weights=[],
            ),
        )
        arm["seeds"].append(row["seed"])
        arm["clean"].append(row["clean_accuracy"])
        arm["validation"].append(row["validation_accuracy"])
        arm["steps"].append(row["steps"])
        arm["fidelity"].append(row["similarity_fidelity"])
        arm["history"].append([h["validation_accuracy"] for h in row["history"]])
        arm["task"].append({k: row[k] for k in TrainedClassifier.primary_key})
        arm["target"].append(row["target_name"])
        arm["layer_weights"].append(row["layer_weights"])
    for arm in arms.values():
        restriction = [dict(t, **keys["evaluation"]) for t in arm["task"]]
        levels = (NoiseEvaluation.Level & restriction).to_dicts()
        arm["noise"] = {}
        for kind in sorted({r["noise_type"] for r in levels}):
            strengths = sorted({r["strength"] for r in levels if r["noise_type"] == kind})
            table = {(r["seed"], r["strength"]): r["accuracy"] for r in levels if r["noise_type"] == kind}
            arm["noise"][kind] = dict(
                strengths=strengths, accuracy=[[table.get((s, x), np.nan) for x in strengths] for s in arm["seeds"]]
            )
        invariance = (NoiseEvaluation.Invariance & restriction).to_dicts()
        arm["invariance"] = _by_std(invariance, arm["seeds"])
        attack_key = [dict(t, **keys["evaluation"], **keys["comparison"]) for t in arm["task"]]
        arm["distances"], arm["convergence"], arm["flat_steps"] = {}, {}, {}
        for norm in ("l2", "linf"):
            rows = (AdversarialEvaluation.Image & attack_key & dict(norm=norm)).to_dicts()
            images = sorted({r["image_index"] for r in rows})
            table = {(r["seed"], r["image_index"]): (np.inf if r["distance"] is None else r["distance"]) for r in rows}
            arm["distances"][norm] = dict(
                images=images, distance=[[table.get((s, i), np.nan) for i in images] for s in arm["seeds"]]
            )
            curve = (AdversarialEvaluation.Convergence & attack_key & dict(norm=norm)).to_dicts()
            steps = sorted({r["steps"] for r in curve})
            table = {
                (r["seed"], r["steps"]): (np.inf if r["median_distance"] is None else r["median_distance"])
                for r in curve
            }
            arm["convergence"][norm] = dict(
                steps=steps, median=[[table.get((s, n), np.nan) for n in steps] for s in arm["seeds"]]
            )
            arm["flat_steps"][norm] = (AdversarialEvaluation & attack_key).to_arrays(f"{norm}_flat_steps").tolist()
    names = {t["similarity_name"] for arm in arms.values() for t in arm["task"]}
    names |= {n for n in (ClassifierTask & members).to_arrays("target_name") if n is not None}
    targets = _by_target(TargetInvariance.Level & keys["evaluation"] & [dict(similarity_name=n) for n in names])
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


def interval_entry(ci, values: np.ndarray) -> dict:
    """An interval as a plain dict, with the range of the values it was taken over, whether it is
    trustworthy (:data:`pipeline.paired.MIN_SEEDS_FOR_INTERVAL` seeds or more) and how many seeds
    were excluded for want of a finite value (``excluded``)."""
    return dict(
        mean=ci.estimate,
        low=ci.low,
        high=ci.high,
        n=ci.n,
        excluded=ci.excluded,
        excludes_zero=ci.excludes_zero and ci.trustworthy,
        trustworthy=ci.trustworthy,
        min=float(np.min(values)),
        max=float(np.max(values)),
    )


def finite_interval(values) -> dict | None:
    """:func:`interval_entry` of the mean over the finite ``values`` (n_seeds,)
    (:func:`pipeline.paired.bootstrap_mean_of_finite`); where none is finite, an entry without a mean
    that still counts the excluded seeds; None for no seeds at all."""
    from pipeline import paired

    values = np.asarray(values, dtype=np.float64)
    ci = paired.bootstrap_mean_of_finite(values)
    if ci is None:
        return dict(mean=None, n=0, excluded=len(values)) if len(values) else None
    return interval_entry(ci, values[np.isfinite(values)])


def attack_failures(distances) -> dict:
    """Images without an adversarial (+inf) among those attacked (not NaN) in an arm's
    (n_seeds, n_images) distances: ``failed``, ``attacked`` (totals over seeds) and ``per_seed``."""
    from pipeline.classifier.attacks import failure_count

    distances = np.asarray(distances, dtype=np.float64)
    per_seed = np.atleast_1d(failure_count(distances)).astype(int)
    return dict(failed=int(per_seed.sum()), attacked=int((~np.isnan(distances)).sum()), per_seed=per_seed.tolist())


def analyse(data: dict) -> dict:
    """Per arm mean and CI, and the paired differences, of every metric (see :mod:`pipeline.paired`);
    a seed without a finite value is left out of a mean and counted in its entry's ``excluded``, and
    each arm's ``failed`` counts, per norm, the images whose attack failed."""
    from pipeline import paired

    arms = data["arms"]

    def seed_medians(arm, norm):
        return np.median(np.asarray(arm["distances"][norm]["distance"], dtype=np.float64), axis=1)

    summary = {}
    for control, arm in arms.items():
        entry = dict(
            seeds=arm["seeds"],
            clean=finite_interval(arm["clean"]),
            steps=arm["steps"],
            fidelity=finite_interval(arm["fidelity"]),
            noise={},
            median={},
            failed={},
            invariance={},
        )
        for kind, noise in arm["noise"].items():
            acc = np.asarray(noise["accuracy"])
            entry["noise"][kind] = {f"{s:g}": finite_interval(acc[:, k]) for k, s in enumerate(noise["strengths"])}
        for norm in arm["distances"]:
            if arm["distances"][norm]["images"]:
                entry["median"][norm] = finite_interval(seed_medians(arm, norm))
                entry["failed"][norm] = attack_failures(arm["distances"][norm]["distance"])
        inv = np.asarray(arm["invariance"]["correlation"])
        stds = arm["invariance"]["noise_std"]
        entry["invariance"] = {f"{s:g}": finite_interval(inv[:, k]) for k, s in enumerate(stds)}
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
            # a seed pair without two finite values is excluded, and counted (``excluded``)
            with np.errstate(invalid="ignore"):
                return finite_interval(np.asarray(x, dtype=np.float64) - np.asarray(y, dtype=np.float64))

        entry = dict(clean=diff(np.asarray(A["clean"])[ia], np.asarray(B["clean"])[ib]), noise={}, median={})
        for kind in A["noise"]:
            xa, xb = np.asarray(A["noise"][kind]["accuracy"])[ia], np.asarray(B["noise"][kind]["accuracy"])[ib]
            entry["noise"][kind] = {
                f"{s:g}": diff(xa[:, k], xb[:, k]) for k, s in enumerate(A["noise"][kind]["strengths"])
            }
        for norm in A["distances"]:
            da = np.asarray(A["distances"][norm]["distance"], dtype=np.float64)[ia]
            db_ = np.asarray(B["distances"][norm]["distance"], dtype=np.float64)[ib]
            if da.size and A["distances"][norm]["images"] == B["distances"][norm]["images"]:
                per_seed = paired.paired_median_difference(da, db_)
                entry["median"][norm] = diff(per_seed, np.zeros_like(per_seed))
        differences[f"{a} - {b}"] = entry
    return dict(arms=summary, differences=differences, targets=data["targets"])


def plain(value):
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    return value


def format_ci(ci: dict | None, spec: str = ".3f") -> str:
    """``mean [low, high]`` of a :mod:`pipeline.paired` summary; with too few seeds for a CI, the range
    over seeds, marked as such; seeds excluded for want of a finite value are counted beside it."""
    if ci is None:
        return "n/a"
    excluded = ci.get("excluded", 0)
    note = f" ({excluded} of {ci['n'] + excluded} seeds excluded: no finite value)" if excluded else ""
    if ci.get("mean") is None:
        return "n/a" + note
    if not ci["trustworthy"]:
        return f"{ci['mean']:{spec}} (seeds {ci['min']:{spec}} to {ci['max']:{spec}})" + note
    return f"{ci['mean']:{spec}} [{ci['low']:{spec}}, {ci['high']:{spec}}]" + note


def format_failures(failed: dict | None) -> str:
    """``failed k of n`` images (over all seeds) of an :func:`attack_failures` entry; empty without one
    (a summary written before failures were counted)."""
    return f"failed {failed['failed']} of {failed['attacked']}" if failed else ""


def format_median(arm: dict, norm: str, spec: str = ".3f") -> str:
    """An arm's median distance of ``norm`` with its CI, and the failed attacks beside it."""
    failures = format_failures(arm.get("failed", {}).get(norm))
    return format_ci(arm["median"].get(norm), spec) + (f" ({failures})" if failures else "")


def report(summary: dict) -> None:
    """The comparison's summary, printed (``benchmarks.robustness_tables`` writes it as markdown)."""
    from pipeline import paired

    fmt = format_ci

    few = sorted({n for arm in summary["arms"].values() if (n := len(arm["seeds"])) < paired.MIN_SEEDS_FOR_INTERVAL})
    if few:
        print(
            f"\n(arms with {', '.join(map(str, few))} seeds: fewer than {paired.MIN_SEEDS_FOR_INTERVAL}, too few for a "
            "confidence interval; the range over seeds is shown in brackets instead, and no difference is "
            "called significant)"
        )

    print("\n== arms: mean [95% bootstrap CI over seeds]")
    for control, arm in summary["arms"].items():
        print(
            f"{ARMS.get(control, control)} ({len(arm['seeds'])} seeds): clean {fmt(arm['clean'])}; "
            f"median L2 {format_median(arm, 'l2')}; median Linf {format_median(arm, 'linf', '.4f')}; "
            f"steps {arm['steps']}"
        )
        for kind, levels in arm["noise"].items():
            print(f"  {kind}: " + "; ".join(f"{s}: {fmt(ci)}" for s, ci in levels.items()))
        print("  network invariance: " + "; ".join(f"std {s}: {fmt(ci)}" for s, ci in arm["invariance"].items()))
    print("\n== paired differences: mean [95% CI]")
    for name, entry in summary["differences"].items():
        print(
            f"{name}: clean {fmt(entry['clean'])}; median L2 {fmt(entry['median'].get('l2'))}; "
            f"median Linf {fmt(entry['median'].get('linf'), '.4f')}"
        )
        for kind, levels in entry["noise"].items():
            print(f"  {kind}: " + "; ".join(f"{s}: {fmt(ci)}" for s, ci in levels.items()))
    print("\n== target noise invariance (r of clean with noisy pair similarity)")
    for name, levels in summary["targets"].items():
        print(f"{name}: " + "; ".join(f"std {s}: {r:.3f}" for s, r in levels.items()))
