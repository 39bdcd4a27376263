"""Markdown tables of a robustness experiment's results file, as docs/results.md shows them.

``python -m benchmarks.robustness_tables benchmarks/results/robustness-compare.json`` prints them;
``benchmarks.experiment_robustness`` writes them beside each part's results file
(``robustness-{part}[-tag].md``).  A results file of the earlier one-part experiment (no ``part``) gives
its arms, differences, invariance and convergence tables.
"""

from __future__ import annotations

import numpy as np

from benchmarks.common import markdown_table, print_tables
from populate.api.comparison import ARMS, COMPARISONS, format_ci, format_median
from populate.api.endpoints import format_test, invariance_text

SHALLOW = {"histogram": "grey-level histogram", "linear_pixels": "linear on pixels"}
"""Label of each shallow baseline of the task (:func:`pipeline.classifier.baselines.task_baselines`)."""


def _ci(stat: dict | None, digits: int = 3, bold: bool = False, sign: bool = False) -> str:
    """:func:`populate.api.comparison.format_ci`, in bold where a trustworthy CI excludes 0."""
    text = format_ci(stat, f"{'+' if sign else ''}.{digits}f")
    return f"**{text}**" if bold and stat and stat.get("trustworthy") and stat.get("excludes_zero") else text


def _label(control: str) -> str:
    return ARMS.get(control, control)


def _ordered(arms: dict) -> dict:
    return {c: arms[c] for c in ARMS if c in arms}


def arms_tables(summary: dict) -> list[str]:
    """Every arm: clean accuracy, median distances (failed attacks beside them), fidelity, steps; then
    accuracy per noise strength."""
    arms = _ordered(summary["arms"])
    lines = markdown_table(
        ["arm", "clean accuracy", "median L2", "median L∞", "S fidelity", "steps kept"],
        [
            [
                _label(c),
                _ci(a["clean"]),
                format_median(a, "l2"),
                format_median(a, "linf", ".4f"),
                _ci(a.get("fidelity")),
                ", ".join(str(s) for s in a["steps"]),
            ]
            for c, a in arms.items()
        ],
    )
    for kind in next(iter(arms.values()))["noise"]:
        strengths = [s for s in next(iter(arms.values()))["noise"][kind] if float(s) > 0]
        lines += [f"{kind} noise: accuracy at each strength", ""]
        lines += markdown_table(
            ["arm", *strengths], [[_label(c), *(_ci(a["noise"][kind][s]) for s in strengths)] for c, a in arms.items()]
        )
    return lines


def difference_tables(summary: dict) -> list[str]:
    """Paired differences (bold: the CI excludes 0) per noise strength, then clean and median distances."""
    differences = {f"{a} - {b}": (a, b) for a, b in COMPARISONS if f"{a} - {b}" in summary["differences"]}
    lines: list[str] = []
    first = summary["differences"][next(iter(differences))]
    for kind, levels in first["noise"].items():
        lines += [f"{kind}: difference in accuracy", ""]
        lines += markdown_table(
            ["difference", *levels],
            [
                [
                    f"{_label(a)} - {_label(b)}",
                    *(_ci(summary["differences"][name]["noise"][kind][s], bold=True, sign=True) for s in levels),
                ]
                for name, (a, b) in differences.items()
            ],
        )
    lines += markdown_table(
        ["difference", "clean", "median L2 (per image)", "median L∞ (per image)"],
        [
            [
                f"{_label(a)} - {_label(b)}",
                _ci(summary["differences"][name]["clean"], bold=True, sign=True),
                _ci(summary["differences"][name]["median"].get("l2"), bold=True, sign=True),
                _ci(summary["differences"][name]["median"].get("linf"), 4, bold=True, sign=True),
            ]
            for name, (a, b) in differences.items()
        ],
    )
    return lines


def invariance_table(summary: dict) -> list[str]:
    """Noise invariance of each similarity target and of each arm's trained network."""
    stds = sorted({s for t in summary["targets"].values() for s in t}, key=float)
    rows = [[f"target {name}", *(f"{values[s]:.3f}" for s in stds)] for name, values in summary["targets"].items()]
    rows += [
        [f"trained {_label(c)} network", *(_ci(a["invariance"].get(s)) for s in stds)]
        for c, a in _ordered(summary["arms"]).items()
    ]
    return markdown_table(["representation", *(f"std {s}" for s in stds)], rows)


def convergence_lines(data: dict) -> list[str]:
    """Per norm: where the median curves flattened and how much they still fell over the last step count."""
    lines = []
    for norm in ("l2", "linf"):
        flat, last = [], []
        for arm in data["arms"].values():
            curve = arm["convergence"].get(norm)
            if not curve:
                continue
            flat += arm["flat_steps"][norm]
            medians = np.asarray(curve["median"], dtype=float)
            last += list(1 - medians[:, -1] / medians[:, -2]) if medians.shape[1] > 1 else []
            steps = curve["steps"]
        if flat:
            lines.append(
                f"- {norm}: schedule {steps}; flat (within the tolerance of the last) from {min(flat)}-{max(flat)} "
                f"steps; the median fell by at most {100 * max(last):.1f} % over the last step count"
            )
    return lines + [""]


def comparison_lines(summary: dict, data: dict) -> list[str]:
    """Every arm, the paired differences (bootstrap), the noise invariance and the attacks' convergence."""
    lines = ["Every arm (mean [95 % CI] over seeds)", ""] + arms_tables(summary)
    lines += ["Paired differences (mean [95 % CI] over seed pairs)", ""] + difference_tables(summary)
    lines += ["Noise invariance", ""] + invariance_table(summary)
    return lines + ["Convergence of the attacks", ""] + convergence_lines(data)


def _value(value, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def task_lines(results: dict) -> list[str]:
    """The task's registered conditions, its shallow baselines, convergence per seed and the noise curves."""
    criteria = results["criteria"]
    lines = ["The task's registered conditions", ""] + markdown_table(
        ["condition", "value", "threshold", "met"],
        [
            [name.replace("_", " "), _value(c["value"]), f"{c['threshold']:g}", "yes" if c["met"] else "**no**"]
            for name, c in criteria.items()
            if "met" in c
        ],
    )
    clean = [r["clean"] for r in results["baseline"]]
    rows = [["ResNet baseline", " / ".join(_value(c) for c in clean), "-"]]
    rows += [
        [f"{SHALLOW[name]} (logistic regression)", _value(b["test_accuracy"]), f"{b['C']:g}"]
        for name, b in results["baselines"].items()
    ]
    lines += ["Clean test accuracy (per seed)", ""] + markdown_table(["classifier", "test accuracy", "C"], rows)
    lines += ["Test accuracy over the last epochs", ""] + markdown_table(
        ["seed", "last epochs", "moved (max - min)"],
        [[str(c["seed"]), ", ".join(_value(a) for a in c["last"]), _value(c["moved"])] for c in results["convergence"]],
    )
    for kind, curve in results["noise"].items():
        means = np.nanmean(np.asarray(curve["accuracy"], dtype=float), axis=0)
        lines += [f"{kind} noise: baseline accuracy (mean over seeds; chance {results['chance']:g})", ""]
        lines += markdown_table([f"{s:g}" for s in curve["strengths"]], [[_value(m) for m in means]])
    return lines


def sweep_lines(results: dict) -> list[str]:
    """Every alpha of every arm (means over seeds; the chosen alpha in bold), the choice and the invariance."""
    chosen = results["chosen"]
    rows = []
    for arm, by_alpha in results["means"].items():
        for alpha, m in by_alpha.items():
            mark = "**" if chosen.get(arm) is not None and float(alpha) == chosen[arm] else ""
            rows.append(
                [_label(arm), f"{mark}{alpha}{mark}", str(len(m["seeds"])), _value(m["validation"]), _value(m["clean"]),
                 _value(m["relative"])]
            )  # fmt: skip
    lines = ["The sweep (means over seeds)", ""] + markdown_table(
        ["arm", "alpha", "seeds", "validation accuracy", "test accuracy", "relative accuracy, Gaussian 0.1"], rows
    )
    lines += [
        f"- {_label(arm)}: " + (f"alpha {alpha:g}" if alpha is not None else "**no admissible alpha**")
        + f" (largest within {results['tolerance']:g} of the baseline's validation accuracy)"
        for arm, alpha in chosen.items()
    ] + [""]  # fmt: skip
    invariance = results["invariance"]
    stds = sorted({s for levels in invariance.values() for s in levels}, key=float)
    lines += ["Noise invariance of the similarity (r of clean with noisy pairs)", ""]
    lines += markdown_table(
        ["representation", *(f"std {s}" for s in stds)],
        [[name, *(_value(levels.get(s)) for s in stds)] for name, levels in invariance.items()],
    )
    return lines


def endpoint_lines(tests: dict) -> list[str]:
    """Per question the primary endpoint with its verdict, then the Holm-corrected secondary endpoints."""
    lines = []
    for name, entry in tests["questions"].items():
        if "untestable" in entry:
            lines += [f"- {name}: not tested ({entry['untestable']})", ""]
            continue
        primary = entry["primary"]
        rows = [["**primary**: relative accuracy, Gaussian 0.1", format_test(primary), primary.get("verdict", "-"),
                 _value(primary.get("detectable"))]]  # fmt: skip
        rows += [[test, format_test(value), "-", "-"] for test, value in entry["secondary"].items()]
        lines += [f"{name}: {_label(entry['arm'])} - {_label(entry['reference'])} (paired t over seeds)", ""]
        lines += markdown_table(["endpoint", "difference [95 % CI], p", "verdict", "detectable (80 %)"], rows)
        if "invariance" in entry:
            lines += [f"- {invariance_text(entry)}", ""]
    lines += [f"- upper bound - baseline, primary endpoint: {format_test(tests['upper_bound'])}", ""]
    weights = tests["layer_weights"]
    layers = list(next(iter(weights.values()), {}))
    lines += ["Learned layer weights (softmax of gamma, mean over seeds)", ""]
    return lines + markdown_table(
        ["arm", *layers], [[_label(arm), *(f"{w[k]:.2f}" for k in layers)] for arm, w in weights.items()]
    )


def markdown(results: dict) -> str:
    """The tables of one results file: a part of the experiment (``part``) or the earlier one-part one."""
    part, body = results.get("part"), results.get("results")
    if part == "task":
        return "\n".join(task_lines(body))
    if part == "sweep":
        return "\n".join(sweep_lines(body))
    if part == "compare":
        alphas = ", ".join(
            f"{_label(a)} {v:g}" if v is not None else f"{_label(a)}: none" for a, v in body["alphas"].items()
        )
        lines = [f"Alphas from the sweep: {alphas}", ""] + endpoint_lines(body["endpoints"])
        return "\n".join(lines + comparison_lines(body["summary"], body["data"]))
    return "\n".join(comparison_lines(results["summary"], results["data"]))


def main(argv=None) -> None:
    print_tables(markdown, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    main()
