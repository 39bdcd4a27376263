"""Markdown tables of a cell-type experiment's results file, as docs/results.md shows them: the
pre-registered criterion of issue 33 per ensemble, and whether grid phase still predicts the splits.

``python -m benchmarks.celltypes_tables benchmarks/results/experiment_celltypes-standard-criteria.json``
(written by ``python -m benchmarks.experiment_celltypes --parts standard criteria``; with
``--preset demo-one-size`` the file ends in ``-demo-one-size``).
"""

from __future__ import annotations

from benchmarks.common import markdown_table, print_tables

ARI_GOAL = 0.8
K_TOLERANCE = 1
HOMOGENEITY_GOAL = 0.9
SPLIT_ALPHA = 0.05


def _ari_at(row: dict, k: int) -> str:
    return next((f"{r['ari']:.2f}" for r in row["k_curve"] if r["k"] == k), "")


def _verdict(row: dict) -> tuple[str, str]:
    """(criterion 1, criterion 2) of the pre-registration: ARI >= 0.8 at the chosen k; |k - true| <= 1
    (else whether the homogeneity alternative may apply, which needs the nuisance check in the text)."""
    first = "met" if row["ari"] >= ARI_GOAL else "**not met**"
    if abs(row["k"] - row["true_k"]) <= K_TOLERANCE:
        return first, "met"
    if row.get("homogeneity", 0.0) >= HOMOGENEITY_GOAL:
        return first, f"k differs from {row['true_k']} by more than 1; homogeneity >= 0.9: merging checked in the text"
    return first, "**not met**"


def criterion_table(record: dict) -> list[str]:
    """One row per ensemble: models, chosen k, ARI at the chosen and the true k, homogeneity and
    completeness, and the two parts of the criterion."""
    rows = []
    for name, row in record["standard"]["ensembles"].items():
        first, second = _verdict(row)
        purity = f"{row['homogeneity']:.2f} / {row['completeness']:.2f}" if "homogeneity" in row else ""
        rows.append(
            [
                name,
                str(row["models"]),
                str(row["k"]),
                f"{row['ari']:.2f}",
                _ari_at(row, row["true_k"]),
                purity,
                first,
                second,
            ]
        )
    header = ["ensemble", "models", "chosen k", "ARI at chosen k", "ARI at true k", "homogeneity / completeness"]
    return markdown_table([*header, "1: ARI >= 0.8", "2: k within 1 of the truth"], rows)


def _association(types: list[dict] | None) -> str:
    """``type: units per cluster, p (odds ratio)`` of the side-of-the-step test, per split type."""
    if types is None:
        return "(not computed)"
    if not types:
        return "no type split"
    parts = []
    for t in types:
        odds = t.get("first_half_odds_ratio")
        odds_text = f", OR {odds:.2g}" if odds is not None else ""
        units = "+".join(map(str, t["units"]))
        flag = "" if t["first_half_p"] > SPLIT_ALPHA else " **p <= 0.05**"
        parts.append(f"{t['type']} ({units}): p {t['first_half_p']:.2g}{odds_text}{flag}")
    return "; ".join(parts)


def splits_table(record: dict) -> list[str]:
    """Per ensemble, the association of cluster membership with the side of the rotation step, within
    each simulated type split over clusters of >= 8 units: today's distance and the band-limited one at
    k = true + 2, and the band-limited one at its chosen k (Fisher's exact test; OR, odds ratio)."""
    rows = []
    for name, row in record.get("criteria", {}).items():
        splits = row["splits"]
        past = splits["k_past_truth"]
        chosen = splits["after_chosen_k"]
        rows.append(
            [
                name,
                f"k = {past}: {_association(splits['before'])}",
                f"k = {past}: {_association(splits['after'])}",
                f"k = {chosen['k']}: {_association(chosen['types'])}",
            ]
        )
    header = ["ensemble", "whole readouts (before)", "band-limited (after)", "band-limited, chosen k"]
    return markdown_table(header, rows) if rows else []


def markdown(record: dict) -> str:
    return "\n".join(criterion_table(record) + splits_table(record))


def main(argv=None) -> None:
    print_tables(markdown, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    main()
