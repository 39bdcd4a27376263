"""The pipeline from a notebook: results as pandas DataFrames, fitted networks as torch modules.

Connection settings are DataJoint's own (``DJ_HOST``, ``DJ_USER``, ``DJ_PASS``, ``DJ_BACKEND``, ...);
:func:`connect` binds the tables to a schema prefix (default ``PIPELINE_PREFIX``; the first read binds
that one) and ``PIPELINE_STORE_DIR`` names the object store (see :mod:`schemas.db`).  Nothing here
declares tables or writes to the database.

Every table-reading function returns a DataFrame with one row per entry and the primary key as
ordinary columns (plus a ``scan`` column ``"animal-session-scan"`` where a scan is involved), so
rows can be filtered with pandas and passed back as keys::

    from populate import api
    scores = api.unit_scores()
    model = api.load_predictor(api.models().iloc[0])

A stage whose schema or tables are not declared on the server raises :class:`StageNotComputed`;
:func:`stage_available` asks first.  Declared but empty tables give empty DataFrames.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from populate.api.classifiers import (  # noqa: F401  (part of the notebook API)
    CLASSIFIER_CURVE,
    adversarial,
    adversarial_summary,
    classifier_curves,
    classifier_robustness,
    classifier_similarity_pairs,
    classifiers,
    load_classifier,
)
from populate.api.frames import (  # noqa: F401  (connect, scan_name, StageNotComputed: part of the notebook API)
    SCAN_KEY,
    STAGES,
    StageNotComputed,
    connect,
    curves,
    one_key,
    parse_scan,
    restrict,
    scan_name,
    stage,
    stage_available,
    to_frame,
)

# --------------------------------------------------------------------------------------------------
# Recordings
# --------------------------------------------------------------------------------------------------


SCAN_ATTRIBUTES = ("area", "layers", "depth_min", "depth_max", "n_trials", "n_units", "n_withheld")
"""What a scan recorded: brain area, layers, depth range [um], trials, units and withheld units."""


def scans() -> pd.DataFrame:
    """One row per scan: area, layers, depth range [um], trials, units, and (when computed) its mean
    oracle correlation and explainable variance."""
    recordings = stage("recordings")
    frame = to_frame(
        recordings.Scan.proj(*SCAN_ATTRIBUTES, "image_height", "image_width", "simulated", "source"),
        order_by=list(SCAN_KEY),
    )
    summary = to_frame(stage("stats").Reliability)
    if summary.empty:
        return frame.assign(
            n_repeated_images=pd.NA, mean_repeats=np.nan, mean_oracle=np.nan, mean_explainable_variance=np.nan
        )
    return frame.merge(summary.drop(columns="scan"), on=list(SCAN_KEY), how="left")


def reliability(scan: str | dict | None = None) -> pd.DataFrame:
    """Per unit: oracle correlation, explainable variance and signal-to-noise ratio, with area, layer
    and cortical position (x, y, z in um); all scans, or one."""
    recordings, stats = stage("recordings"), stage("stats")
    query = stats.Reliability.Unit * recordings.Scan.Unit
    if scan is not None:
        query = query & parse_scan(scan)
    return to_frame(query, order_by=[*SCAN_KEY, "unit_index"])


def scan_tensors(scan: str | dict = "1-1-1", image_shape: tuple[int, int] = (36, 64)):
    """One scan's trials in model units (:class:`pipeline.data.dataset.ScanTensors`): images
    (n, 1, h, w), responses (n, n_units), behaviour, tiers, image ids."""
    models = stage("models")
    return models.load_scan_tensors(parse_scan(scan), tuple(image_shape))


# --------------------------------------------------------------------------------------------------
# Predictive models and cell types
# --------------------------------------------------------------------------------------------------

_MODEL_COLUMNS = ("config_name", "core_kind", "feature_maps")


MODEL_LABELS = ("config_name", "core_kind", "feature_maps", "seed")
"""Columns of :func:`models` that tell one model from another in a listing."""
MODEL_SCORES = ("test_correlation", "test_single_trial", "test_feve", "oracle", "fraction_oracle")
"""Columns of :func:`models` that score a model on the test tier, in the order listings show them."""


def models(restriction=None) -> pd.DataFrame:
    """One row per trained model: key, name, core kind, feature maps, seed, scan, input size
    (``image_height``, ``image_width`` pixels) and scores on the test tier: ``test_correlation``
    (image-averaged prediction vs repeat-averaged response) and ``test_single_trial`` (vs single
    trials), both means over units; ``test_feve``; ``oracle``, the mean leave-one-out oracle
    correlation of the scan's units, which bounds single-trial correlations, not averaged ones;
    ``fraction_oracle`` (``OracleFraction``: slope through the origin of the per-unit single-trial
    correlation against the oracle; missing until computed); and ``val_correlation``."""
    m = stage("models")
    query = (
        m.TrainedModel.proj(
            "n_units",
            "image_height",
            "image_width",
            "test_correlation",
            "test_single_trial",
            "test_feve",
            "val_correlation",
            "iterations",
            "train_seconds",
            "device",
            oracle="oracle_ceiling",
        )
        * m.ModelConfig.proj(*_MODEL_COLUMNS)
        * m.DatasetConfig.proj(*SCAN_KEY)
    ).join(m.OracleFraction.proj("fraction_oracle"), left=True)
    return to_frame(restrict(query, restriction), order_by=["core_kind", "model_hash", "seed"])


def load_predictor(key, device=None):
    """The fitted encoder (``torch.nn.Module`` in eval mode) of one trained model.

    key : a key dict, a row of :func:`models`, or a query selecting exactly one model.
    Call it as ``model(images)`` with images (B, 1, h, w) in model units (see :func:`scan_tensors`);
    it returns rates (B, n_units) in model units (multiply by ``response_std`` for original units).
    """
    m = stage("models")
    return m.TrainedModel.load_model(one_key(m.TrainedModel, key), device=device)


PREDICTOR_CURVE = ("iteration", "lr", "train_loss", "val_loss", "val_correlation")


def training_curves(restriction=None) -> pd.DataFrame:
    """The stored validation history of every trained model, long form: one row per model and
    evaluation with the model key, name, core kind, seed, scan, ``run`` (a label per model) and
    ``iteration``, ``lr``, ``train_loss`` (mean since the previous evaluation, regularizers included;
    NaN at iteration 0), ``val_loss`` and ``val_correlation``."""
    m = stage("models")
    query = restrict(
        m.TrainedModel.proj("history") * m.ModelConfig.proj(*_MODEL_COLUMNS) * m.DatasetConfig.proj(*SCAN_KEY),
        restriction,
    )
    return curves(
        query,
        ["core_kind", "model_hash", "seed"],
        lambda r: f"{r['config_name'] or r['core_kind']} seed {r['seed']} ({r['model_hash'][:6]})",
        PREDICTOR_CURVE,
    )


def unit_scores(restriction=None) -> pd.DataFrame:
    """Per unit and trained model: test correlation, single-trial correlation and FEVE, with the unit's
    area, layer, cortical position (um), oracle correlation and explainable variance, and the model's
    core kind and name."""
    recordings, stats, m = stage("recordings"), stage("stats"), stage("models")
    query = (
        m.TrainedModel.Unit
        * recordings.Scan.Unit.proj("unit_index", "area", "layer", "cortical_x", "cortical_y", "cortical_z")
        * stats.Reliability.Unit.proj("oracle", "explainable_variance", "snr")
        * m.ModelConfig.proj(*_MODEL_COLUMNS)
    )
    return to_frame(restrict(query, restriction), order_by=["model_hash", "seed", *SCAN_KEY, "unit_index"])


def cell_types(restriction=None) -> pd.DataFrame:
    """Per unit of every rotation-equivariant model: learned type, cluster, preferred orientation
    (radians and degrees), weight share of the main feature; with the simulated type and orientation
    (``true_type``, ``true_orientation``) where the scan has ground truth (else missing)."""
    recordings, m = stage("recordings"), stage("models")
    query = restrict(m.CellTypes.Unit * m.ModelConfig.proj("config_name"), restriction)
    truth = recordings.GroundTruth.Unit.proj(true_type="unit_type", true_orientation="orientation")
    frame = to_frame(query.join(truth, left=True), order_by=["model_hash", "seed", *SCAN_KEY, "unit_id"])
    frame["preferred_orientation_deg"] = np.degrees(frame["preferred_orientation"].astype(float))
    return frame


def ensembles(restriction=None) -> pd.DataFrame:
    """Per ensemble consensus of cell types (``EnsembleCellTypes``): ``n_models``, ``n_clusters``,
    ``k_source`` (``fixed``: the ensemble's ``n_types`` or the members' features; ``data``: chosen by
    :mod:`pipeline.celltypes.type_count`), ``ari_clusters`` against the simulated types (missing without ground
    truth), ``description`` and the ``k_curve`` evidence (list of dicts per candidate k, else None)."""
    m = stage("models")
    query = restrict(m.EnsembleCellTypes * m.Ensemble.proj("description"), restriction)
    return to_frame(query, order_by=["ensemble_name"])


def ensemble_cell_types(restriction=None) -> pd.DataFrame:
    """Per unit of every ensemble consensus: consensus ``cell_type`` and its ``agreement`` (mean fraction
    of members that group the unit with the rest of its type, 0-1), with ``n_models``, ``n_clusters``
    and ``k_source`` of the consensus, and the simulated ``true_type``/``true_orientation`` where the scan
    has ground truth (else missing)."""
    recordings, m = stage("recordings"), stage("models")
    query = restrict(
        m.EnsembleCellTypes.Unit * m.EnsembleCellTypes.proj("n_models", "n_clusters", "k_source"), restriction
    )
    truth = recordings.GroundTruth.Unit.proj(true_type="unit_type", true_orientation="orientation")
    return to_frame(query.join(truth, left=True), order_by=["ensemble_name", *SCAN_KEY, "unit_id"])


def cell_type_filters(key) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each type's layer-1 filter of a rotation-equivariant model, turned to the type's preferred
    orientation.

    Returns ``filters`` (features, k, k) (first input channel), ``orientation_deg`` (features,) the
    rotation shown, in degrees (the circular mean over the type's units, rounded to the core's
    rotation grid; 0 for unused types), and ``counts`` (features,) units per type.
    """
    m = stage("models")
    key = one_key(m.TrainedModel, key)
    if (m.ModelConfig & key).fetch1("core_kind") != "rotation":
        raise ValueError(f"model {key['model_hash'][:8]} has no rotation-equivariant core: no cell types")
    model = m.TrainedModel.load_model(key, device="cpu")
    from pipeline.models.rotation_filters import type_filters

    core = model.core
    types, orientation = (m.CellTypes.Unit & key).to_arrays("cell_type", "preferred_orientation")
    weight = core.convs[0].weight.detach().cpu().numpy()
    return type_filters(weight, types, orientation, core.features, core.rotations)


# --------------------------------------------------------------------------------------------------
# Neural similarity
# --------------------------------------------------------------------------------------------------


def similarities(restriction=None) -> pd.DataFrame:
    """One row per computed similarity matrix: name, method, image set, images, scans, and agreement
    with repeat-averaged similarity on repeated images (model-based and single-trial)."""
    s = stage("similarity")
    query = s.Similarity.proj(..., "-matrix") * s.SimilarityTask * s.SimilarityConfig.proj("method")
    return to_frame(restrict(query, restriction), order_by="similarity_name")


def similarity_matrix(name: str, images: int | None = 64) -> np.ndarray:
    """The first ``images`` rows and columns (all when None) of a stored similarity matrix."""
    s = stage("similarity")
    store = s.Similarity.open(s.SimilarityTask & dict(similarity_name=name))
    n = store.n if images is None else min(images, store.n)
    return np.asarray(store.submatrix(np.arange(n)), dtype=np.float64)


# --------------------------------------------------------------------------------------------------
# Pipeline progress
# --------------------------------------------------------------------------------------------------


def progress() -> pd.DataFrame:
    """One row per computed table of the declared stages, upstream first: keys ``done``, ``pending``
    (not computed yet, including running) and ``error`` (failed in the job queue)."""
    from populate.work.jobs import QueueError, queue
    from schemas import module_tables

    rows = []
    for name in STAGES:
        if not stage_available(name):
            continue
        for table in module_tables(stage(name)):
            remaining, total = table().progress()
            try:
                errors = len(queue(table).errors)
            except QueueError:
                errors = 0
            errors = min(errors, remaining)
            rows.append(
                dict(
                    stage=name,
                    table=table.__name__,
                    done=total - remaining,
                    pending=remaining - errors,
                    error=errors,
                    keys=total,
                )
            )
    return pd.DataFrame(rows, columns=["stage", "table", "done", "pending", "error", "keys"])
