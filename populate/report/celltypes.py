"""The cell-type section of ``python -m populate report``: per rotation-equivariant model and per
ensemble consensus (``EnsembleCellTypes``)."""

from __future__ import annotations

from populate import api
from populate.api import findings
from populate.report import provenance
from populate.report.sections import MAX_CELLTYPE_MODELS, NotComputed, Panel, model_label, note_toy, require


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
    # the code version and size of the model that the types come from (CellTypes stores neither)
    models = provenance.with_model_provenance(api.models())[[*model_key, "code_version", provenance.TOY]]
    summary = summary.merge(models, on=model_key, how="left")
    panel.table(
        summary.drop(columns=["dataset_hash", "trainer_hash"]),
        "Cell types per rotation-equivariant model (code_version and toy: the model's)",
    )
    note_toy(panel, summary, "models with cell types are")
    panel.note("Cell types, " + findings.cell_types() + ".")
    for _, model in summary.head(MAX_CELLTYPE_MODELS).iterrows():
        label = model_label(model)
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
        scan=("scan", "first"), units=("unit_id", "size"), mean_agreement=("agreement", "mean")
    )
    summary = provenance.with_scan_toy_flag(ensembles.merge(agreement, on="ensemble_name", how="left"))
    columns = [
        "ensemble_name",
        "scan",
        "n_models",
        "n_clusters",
        "k_source",
        "ari_clusters",
        "units",
        "mean_agreement",
        provenance.TOY,
    ]
    panel.table(
        summary[[c for c in columns if c in summary]],
        "Consensus cell types per ensemble (EnsembleCellTypes): clusters combined over the member models; "
        "agreement is the mean fraction of members that group a unit with the rest of its type",
    )
    note_toy(panel, summary, "ensembles are")
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
