"""Markdown tables of a robustness experiment's results file, as docs/results.md shows them.

``python -m benchmarks.robustness_tables benchmarks/results/robustness.json`` prints them;
``benchmarks.experiment_robustness`` writes them beside its results file (``robustness[-tag].md``).
"""

from __future__ import annotations

import numpy as np

from benchmarks.common import markdown_table, print_tables
from populate.api.comparison import ARMS, COMPARISONS, format_ci, format_median


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


def markdown(results: dict) -> str:
    summary, data = results["summary"], results["data"]
    lines = ["Every arm (mean [95 % CI] over seeds)", ""] + arms_tables(summary)
    lines += ["Paired differences (mean [95 % CI] over seed pairs)", ""] + difference_tables(summary)
    lines += ["Noise invariance", ""] + invariance_table(summary)
    lines += ["Convergence of the attacks", ""] + convergence_lines(data)
    return "\n".join(lines)


def main(argv=None) -> None:
    print_tables(markdown, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    main()
