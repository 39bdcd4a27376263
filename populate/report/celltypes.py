"""The cell-type section of ``python -m populate report``: per rotation-equivariant model and per
ensemble consensus (``EnsembleCellTypes``)."""

from __future__ import annotations

from populate import api
from populate.api import findings
from populate.report.sections import MAX_CELLTYPE_MODELS, NotComputed, Panel, require


def cell_types(panel: Panel) -> None:
    from pipeline import figures

    require("models")
    units = api.cell_types()
    if units.empty:
        raise NotComputed(
            "no cell types yet: they are computed for rotation-equivariant models "
            "(`python -m populate run --tables CellTypes`)"
        )
    model_key = ["model_hash", "dataset_hash", "trainer_hash", "seed"]
    summary = units.groupby(["scan", "config_name", *model_key], as_index=False).agg(
        units=("unit_id", "size"),
        types_used=("cell_type", "nunique"),
        clusters=("cluster", "nunique"),
        clean_fraction=("clean", "mean"),
    )
    panel.table(summary.drop(columns=["dataset_hash", "trainer_hash"]), "Cell types per rotation-equivariant model")
    panel.note("Cell types, " + findings.cell_types() + ".")
    for _, model in summary.head(MAX_CELLTYPE_MODELS).iterrows():
        label = f"{model['config_name']} (seed {model['seed']}, {model['model_hash'][:6]})"
        filters, orientation, counts = api.cell_type_filters(model)
        panel.figure(
            figures.cell_type_gallery(filters, counts, orientation),
            f"{label}: layer-1 filter of each used type at its units' typical preferred orientation, "
            "and units per type.",
        )
        rows = units[(units[model_key] == model[model_key]).all(axis=1)]
        truth = rows["true_type"].notna()
        if truth.any():
            panel.figure(
                figures.cell_type_confusion(rows.loc[truth, "true_type"], rows.loc[truth, "cell_type"]),
                f"{label}: simulated type against learned type (units).",
            )
            clusters = figures.cell_type_confusion(rows.loc[truth, "true_type"], rows.loc[truth, "cluster"], "cluster")
            panel.figure(clusters, f"{label}: simulated type against rotation-invariant cluster (units).")
        else:
            panel.note(f"{label}: no ground truth (not a simulated scan), so no agreement matrix.")
    _ensemble_cell_types(panel)


def _ensemble_cell_types(panel: Panel) -> None:
    """The consensus of each ensemble (``EnsembleCellTypes``): the table to analyse across seeds."""
    from pipeline import figures

    ensembles = api.ensembles()
    if ensembles.empty:
        panel.note(
            "No consensus cell types yet: declare an ensemble of rotation-equivariant models "
            "(`Ensemble`, `Ensemble.Member`) and run `python -m populate run --tables EnsembleCellTypes`."
        )
        return
    units = api.ensemble_cell_types()
    agreement = units.groupby("ensemble_name", as_index=False).agg(
        units=("unit_id", "size"), mean_agreement=("agreement", "mean")
    )
    summary = ensembles.merge(agreement, on="ensemble_name", how="left")
    columns = ["ensemble_name", "scan", "n_models", "n_clusters", "k_source", "ari_clusters", "units", "mean_agreement"]
    panel.table(
        summary[[c for c in columns if c in summary]],
        "Consensus cell types per ensemble (EnsembleCellTypes): clusters combined over the member models; "
        "agreement is the mean fraction of members that group a unit with the rest of its type",
    )
    for _, ensemble in summary.head(MAX_CELLTYPE_MODELS).iterrows():
        name = ensemble["ensemble_name"]
        rows = units[units["ensemble_name"] == name]
        truth = rows["true_type"].notna()
        if truth.any():
            confusion = figures.cell_type_confusion(
                rows.loc[truth, "true_type"], rows.loc[truth, "cell_type"], "consensus type"
            )
            panel.figure(
                confusion,
                f"Ensemble {name}: simulated type against consensus type (units).",
            )
        if ensemble["k_curve"] is not None and len(ensemble["k_curve"]):
            panel.figure(
                figures.type_count_curve(ensemble["k_curve"]),
                f"Ensemble {name}: the number of types chosen from the data, with the evidence over k.",
            )
