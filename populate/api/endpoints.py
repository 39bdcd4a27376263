"""The pre-registered endpoints of the robustness experiment (docs/results.md, "Neural regularization with
power"), from what :func:`populate.api.comparison.collect` returns.

Per question (:data:`QUESTIONS`): the **primary endpoint**, relative accuracy under Gaussian noise of std
0.1 (accuracy at 0.1 over accuracy without noise, the same images), as the paired difference arm -
reference over seeds with a two-sided paired t-test and its 95 % t-interval (:func:`pipeline.paired.paired_t`),
the registered verdict with the meaningful difference :data:`MEANINGFUL` and the smallest difference
detectable at 80 % power (:mod:`pipeline.power`); then the **secondary endpoints**, Holm-corrected within
the question (:func:`pipeline.paired.holm`).  The upper bound (the noise-augmented classifier) is tested
the same way beside the questions, without a verdict.

Arms are paired by seed over the union of both arms' seeds: a seed one arm lacks, or whose value is not
finite, is excluded from the test and counted in its ``excluded``, never dropped silently.  Attack
distances are paired per image: per seed, the median over the common images of the per-image difference
(:func:`pipeline.paired.paired_median_difference`), tested against 0.
"""

from __future__ import annotations

import dataclasses

import numpy as np

PRIMARY = ("gaussian", 0.1)
SECONDARY_NOISE = (("gaussian", 0.2), ("salt_pepper", 0.05), ("uniform", 0.12))
NORMS = ("l2", "linf")
MEANINGFUL = 0.03
"""The smallest difference in relative accuracy at std 0.1 called meaningful (registered)."""
INVARIANCE_STD = 0.2
"""Noise std at which the teacher target's invariance is compared with the baseline network's."""
QUESTIONS = {
    "positive control": dict(arm="teacher", reference="none"),
    "neural": dict(arm="neural", reference="none", control="shuffled"),
}
"""Each registered question: the arm, the reference it is compared with, and (neural) the control whose
difference on the primary endpoint is a secondary endpoint.  Arm names: :data:`populate.api.comparison.ARMS`."""
UPPER_BOUND = ("augmented", "none")


def relative(strengths, accuracy, strength: float, kind: str = "noise") -> np.ndarray:
    """Accuracy at ``strength`` over accuracy at 0 (the same images without noise), per row of ``accuracy``
    (n, len(strengths)); NaN or inf where the clean accuracy is 0.  KeyError when either is not evaluated."""
    strengths = np.asarray(strengths, dtype=np.float64)
    if not (np.isclose(strengths, strength).any() and np.isclose(strengths, 0.0).any()):
        raise KeyError(f"{kind} noise at {strength:g} and 0: not both evaluated (EvaluationSettings.{kind})")
    accuracy = np.asarray(accuracy, dtype=np.float64).reshape(-1, len(strengths))
    at, clean = np.isclose(strengths, strength).argmax(), np.isclose(strengths, 0.0).argmax()
    with np.errstate(divide="ignore", invalid="ignore"):
        return accuracy[:, at] / accuracy[:, clean]


def relative_accuracy(arm: dict, kind: str, strength: float) -> dict[int, float]:
    """{seed: accuracy under ``kind`` noise of ``strength`` / accuracy without noise} of one collected arm."""
    noise = arm["noise"].get(kind) or dict(strengths=[], accuracy=[])
    return dict(zip(arm["seeds"], relative(noise["strengths"], noise["accuracy"], strength, kind).tolist()))


def _aligned(a: dict[int, float], b: dict[int, float]) -> tuple[np.ndarray, np.ndarray]:
    """The values of two arms over the union of their seeds, NaN where one lacks the seed."""
    seeds = sorted(set(a) | set(b))
    return np.array([a.get(s, np.nan) for s in seeds]), np.array([b.get(s, np.nan) for s in seeds])


def paired_entry(a: dict[int, float], b: dict[int, float]) -> dict:
    """:func:`pipeline.paired.paired_t` of ``a - b`` (per seed) as a plain dict with ``excludes_zero``; with
    fewer than 2 finite pairs, ``untestable`` says why."""
    from pipeline.paired import paired_t

    x, y = _aligned(a, b)
    try:
        test = paired_t(x, y)
    except ValueError as err:
        return dict(untestable=str(err), n=int((np.isfinite(x) & np.isfinite(y)).sum()))
    return dict(dataclasses.asdict(test), excludes_zero=test.excludes_zero)


def median_differences(a: dict, b: dict, norm: str) -> tuple[dict[int, float], dict[int, float]]:
    """Per seed, the median over the common images of arm a's minimal ``norm`` distance minus arm b's (and 0
    for b), for :func:`paired_entry`; NaN for a seed either arm lacks or whose images differ."""
    da, db = a["distances"].get(norm), b["distances"].get(norm)
    if not da or not db or da["images"] != db["images"]:
        raise KeyError(f"{norm} attack: not run on the same common images in both arms")
    if not da["images"]:
        raise KeyError(f"{norm} attack: no common images (no test image every member classifies correctly)")
    from pipeline.paired import paired_median_difference

    rows_a = dict(zip(a["seeds"], np.asarray(da["distance"], dtype=np.float64)))
    rows_b = dict(zip(b["seeds"], np.asarray(db["distance"], dtype=np.float64)))
    shared = sorted(set(rows_a) & set(rows_b))
    medians = dict.fromkeys(sorted(set(rows_a) | set(rows_b)), np.nan)
    if shared:
        values = paired_median_difference(np.stack([rows_a[s] for s in shared]), np.stack([rows_b[s] for s in shared]))
        medians.update(zip(shared, values.tolist()))
    return medians, dict.fromkeys(medians, 0.0)


def _secondary(arms: dict, arm: str, reference: str, control: str | None) -> dict[str, dict]:
    """Every secondary endpoint of one question, untested where its data are missing."""
    a, b = arms[arm], arms[reference]
    tests: dict[str, dict] = {}
    for kind, strength in SECONDARY_NOISE:
        name = f"relative accuracy, {kind} {strength:g}"
        try:
            tests[name] = paired_entry(relative_accuracy(a, kind, strength), relative_accuracy(b, kind, strength))
        except KeyError as err:
            tests[name] = dict(untestable=str(err.args[0]), n=0)
    for norm in NORMS:
        name = f"median minimal {norm} perturbation"
        try:
            tests[name] = paired_entry(*median_differences(a, b, norm))
        except KeyError as err:
            tests[name] = dict(untestable=str(err.args[0]), n=0)
    if control is not None:
        name = f"{arm} - {control}, relative accuracy, {PRIMARY[0]} {PRIMARY[1]:g}"
        if control in arms:
            tests[name] = paired_entry(relative_accuracy(a, *PRIMARY), relative_accuracy(arms[control], *PRIMARY))
        else:
            tests[name] = dict(untestable=f"no {control} arm", n=0)
    return tests


def holm_corrected(tests: dict[str, dict]) -> dict[str, dict]:
    """``tests`` with ``p_holm`` added to every tested entry, Holm over the tested ones (``family`` of them)."""
    from pipeline.paired import holm

    tested = [name for name, entry in tests.items() if "p" in entry]
    adjusted = holm([tests[name]["p"] for name in tested]) if tested else []
    out = {name: dict(entry) for name, entry in tests.items()}
    for name, p in zip(tested, adjusted):
        out[name].update(p_holm=float(p), family=len(tested))
    return out


def primary_test(arms: dict, arm: str, reference: str) -> dict:
    """The primary endpoint's paired test, its verdict and the difference detectable at 80 % power."""
    from pipeline import power
    from pipeline.paired import PairedTest

    entry = paired_entry(relative_accuracy(arms[arm], *PRIMARY), relative_accuracy(arms[reference], *PRIMARY))
    if "untestable" in entry:
        return entry
    test = PairedTest(**{k: v for k, v in entry.items() if k != "excludes_zero"})
    entry["verdict"] = power.verdict(test, MEANINGFUL)
    entry["detectable"] = power.detectable_difference(test.sd, test.n)
    return entry


def question(arms: dict, arm: str, reference: str, control: str | None = None) -> dict:
    """One registered question: its primary test (with verdict) and its Holm-corrected secondary tests."""
    missing = [name for name in (arm, reference) if name not in arms]
    if missing:
        return dict(arm=arm, reference=reference, untestable=f"no {' or '.join(missing)} arm")
    return dict(
        arm=arm,
        reference=reference,
        primary=primary_test(arms, arm, reference),
        secondary=holm_corrected(_secondary(arms, arm, reference, control)),
    )


def teacher_invariance(data: dict, teacher_target: str | None) -> dict | None:
    """The teacher target's noise invariance at :data:`INVARIANCE_STD` against the baseline network's
    (mean over seeds), and whether the target is the more invariant; None without both."""
    target = (data["targets"].get(teacher_target) or {}).get(f"{INVARIANCE_STD:g}")
    baseline = data["arms"].get("none", {}).get("invariance")
    if target is None or not baseline or INVARIANCE_STD not in baseline["noise_std"]:
        return None
    column = np.asarray(baseline["correlation"], dtype=np.float64)[:, baseline["noise_std"].index(INVARIANCE_STD)]
    network = float(np.nanmean(column))
    return dict(noise_std=INVARIANCE_STD, target=target, baseline_network=network, more_invariant=target > network)


def layer_weights(arms: dict) -> dict[str, dict[str, float]]:
    """Per arm, the mean over seeds of each layer's learned weight (softmax of gamma)."""
    out = {}
    for name, arm in arms.items():
        rows = [w for w in arm.get("layer_weights", []) if w]
        if rows:
            out[name] = {layer: float(np.mean([w[layer] for w in rows])) for layer in rows[0]}
    return out


def endpoints(data: dict, teacher_target: str | None = None) -> dict:
    """Every registered test of a collected comparison: ``questions`` (name -> :func:`question`; the
    positive control's with its ``invariance`` check and ``transfers``), ``upper_bound`` (the augmented
    classifier against the baseline on the primary endpoint) and ``layer_weights``."""
    arms = data["arms"]
    questions = {name: question(arms, **spec) for name, spec in QUESTIONS.items()}
    control = questions["positive control"]
    control["invariance"] = teacher_invariance(data, teacher_target)
    primary = control.get("primary", {})
    control["transfers"] = bool(
        primary.get("verdict") == "positive" and (control["invariance"] or {}).get("more_invariant")
    )
    upper = None
    if all(name in arms for name in UPPER_BOUND):
        upper = paired_entry(*(relative_accuracy(arms[name], *PRIMARY) for name in UPPER_BOUND))
    return dict(
        primary=dict(kind=PRIMARY[0], strength=PRIMARY[1], meaningful=MEANINGFUL),
        questions=questions,
        upper_bound=upper,
        layer_weights=layer_weights(arms),
    )


def format_test(entry: dict | None, spec: str = "+.3f") -> str:
    """``mean [low, high] (p ..., Holm p ...)`` of a :func:`paired_entry`, or why it was not tested."""
    if entry is None:
        return "n/a"
    if "untestable" in entry:
        return f"not tested: {entry['untestable']}"
    text = f"{entry['mean']:{spec}} [{entry['low']:{spec}}, {entry['high']:{spec}}], p = {entry['p']:.3g}"
    if "p_holm" in entry:
        text += f", Holm p = {entry['p_holm']:.3g}"
    excluded = entry.get("excluded", 0)
    return text + f" (n = {entry['n']}" + (f", {excluded} excluded)" if excluded else ")")


def invariance_text(entry: dict) -> str:
    """The positive control's invariance check and whether it transfers, in words."""
    check = entry.get("invariance")
    if check is None:
        return f"target invariance not measured at std {INVARIANCE_STD:g}; transfers: no"
    return (
        f"target invariance at std {check['noise_std']:g}: teacher target {check['target']:.3f}, baseline network "
        f"{check['baseline_network']:.3f} (more invariant: {'yes' if check['more_invariant'] else 'no'}); "
        f"transfers: {'yes' if entry['transfers'] else 'no'}"
    )


def report(result: dict) -> None:
    """The endpoints, printed."""
    strength = result["primary"]["strength"]
    print(f"\n== pre-registered endpoints (primary: relative accuracy, Gaussian std {strength:g}; paired t, 95 % CI)")
    for name, entry in result["questions"].items():
        if "untestable" in entry:
            print(f"{name}: not tested ({entry['untestable']})")
            continue
        primary = entry["primary"]
        verdict = primary.get("verdict", "")
        detectable = f", detectable at 80 % power {primary['detectable']:.3f}" if "detectable" in primary else ""
        print(f"{name} ({entry['arm']} - {entry['reference']}): {format_test(primary)} -> {verdict}{detectable}")
        for test, value in entry["secondary"].items():
            print(f"  {test}: {format_test(value)}")
        if "invariance" in entry:
            print(f"  {invariance_text(entry)}")
    print(f"upper bound (augmented - none): {format_test(result['upper_bound'])}")
    for arm, weights in result["layer_weights"].items():
        print(f"layer weights {arm}: " + ", ".join(f"{k} {v:.2f}" for k, v in weights.items()))
