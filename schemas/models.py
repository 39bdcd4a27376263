"""Predictive models of V1: configs, trained models, ensembles and functional cell types."""

from __future__ import annotations

import datajoint as dj
import numpy as np

import pipeline
from pipeline.celltypes import clustering as celltypes
from pipeline.celltypes import ensemble as celltypes_ensemble
from pipeline.data.dataset import ScanTensors
from pipeline.data.dataset_config import DatasetConfig as DatasetSettings
from pipeline.models import experiment, metrics
from pipeline.models.encoder import ModelConfig as ModelSettings
from pipeline.models.training import TrainerConfig as TrainerSettings
from pipeline.stats import finite_or
from schemas import checkpoints
from schemas.binding import StageSchema, tables_kept_in
from schemas.configs import ConfigTable, atomic, config_definition
from schemas.readiness import Readiness, require
from schemas.recordings import Scan, fetch_recording, ground_truth_of
from schemas.stats import Normalization, Reliability

schema = StageSchema("models")


@schema
class ModelConfig(ConfigTable, dj.Lookup):
    definition = config_definition(
        ("model_hash", "canonical hash of the full config"),
        ("core_kind: varchar(16)", "'cnn' or 'rotation'"),
        ("feature_maps: int32", "channels per core layer (features x rotations)"),
        comment="an encoding model: core, readout, shifter, modulator",
        name_comment="optional label",
    )
    config_class = ModelSettings

    @classmethod
    def config_attributes(cls, config: ModelSettings) -> dict:
        core = config.core
        rotations = core.rotations if core.kind == "rotation" else 1
        return dict(core_kind=core.kind, feature_maps=core.features * rotations)


@schema
class DatasetConfig(ConfigTable, dj.Lookup):
    definition = config_definition("dataset_hash", "-> Scan", comment="the data a model is fitted to")
    config_class = DatasetSettings

    @classmethod
    def config_attributes(cls, config: DatasetSettings) -> dict:
        key = config.scan_key
        if not (Scan & key):
            raise LookupError(f"dataset config names scan {config.scan}, which is not in the database")
        return key


@schema
class TrainerConfig(ConfigTable, dj.Lookup):
    definition = config_definition("trainer_hash", comment="optimisation settings (the seed comes from Seed)")
    config_class = TrainerSettings
    seeded_by_table = "trainer"


@schema
class Seed(dj.Lookup):
    definition = """
    seed: int32
    """
    contents = [dict(seed=0), dict(seed=1), dict(seed=2)]


@schema
class TrainingTask(dj.Manual):
    definition = """
    # a model to train: which model, data, trainer and seed
    -> ModelConfig
    -> DatasetConfig
    -> TrainerConfig
    -> Seed
    """

    @classmethod
    def add(
        cls, model: dict, dataset: dict, trainer: dict | None = None, seeds=(0,), name: str = "", description: str = ""
    ) -> list[dict]:
        """Insert configs as needed and one task per seed, all or nothing; returns the task keys.

        ``name`` and ``description`` label the model config (:meth:`ConfigTable.add`)."""
        keys = []
        with atomic(cls().connection):  # a dataset naming an unknown scan leaves no model config behind
            base = {
                **ModelConfig.add(model, name=name, description=description),
                **DatasetConfig.add(dataset),
                **TrainerConfig.add(trainer or {}),
            }
            for seed in seeds:
                Seed.insert1(dict(seed=int(seed)), skip_duplicates=True)
                key = dict(base, seed=int(seed))
                cls.insert1(key, skip_duplicates=True)
                keys.append(key)
        return keys


def rotation_tasks():
    """Training tasks of rotation-equivariant models (the ones with cell types)."""
    return TrainingTask & (ModelConfig & "core_kind = 'rotation'")


def _datasets_with(statistic):
    """Dataset configs whose scan has ``statistic`` (Normalization, Reliability) computed."""
    return (DatasetConfig & statistic.proj()).proj()


def load_scan_tensors(scan_key, image_shape) -> ScanTensors:
    """One scan's trials in model units, normalised with its stored statistics."""
    return ScanTensors.from_recording(fetch_recording(scan_key), Normalization.load(scan_key), tuple(image_shape))


@schema
class TrainedModel(Readiness, dj.Computed):
    definition = """
    # a fitted encoding model, its weights and its scores
    -> TrainingTask
    ---
    n_units: int32
    image_height: int32                 # model input, pixels
    image_width: int32
    weights: <blob@pipeline>            # state dict as numpy arrays
    val_correlation: float64            # best mean single-trial correlation on the validation tier
    test_correlation: float64           # mean over units, image-averaged prediction vs repeat-averaged response
    test_single_trial: float64          # mean over units, single test trials
    test_feve = null: float64           # mean FEVE over units with at least 15 percent explainable variance
    oracle_ceiling: float64             # mean oracle correlation of the scan's units
    iterations: int32
    best_iteration: int32
    train_seconds: float64
    device: varchar(32)
    code_version: varchar(64)
    history: <blob>                     # validation curve, one dict per evaluation
    """

    class Unit(dj.Part):
        definition = """
        -> master
        -> Scan.Unit
        ---
        test_correlation = null: float64  # null where undefined (a unit silent on the test images)
        test_single_trial = null: float64
        test_feve = null: float64       # null where the unit has no explainable variance
        """

    def inputs(self) -> dict:
        # Training reads the scan's normalisation; its scores store the scan's mean oracle correlation.
        return {"Normalization": _datasets_with(Normalization), "Reliability": _datasets_with(Reliability)}

    def make_fetch(self, key):
        # Small, hashable inputs: DataJoint fetches twice and compares.  The response matrix's store
        # path stands for the data, so a re-imported scan is noticed.
        dataset = DatasetConfig.load(key)
        return (
            (ModelConfig & key).fetch1("config"),
            dataset.to_dict(),
            (TrainerConfig & key).fetch1("config"),
            (Scan.Responses & dataset.scan_key).fetch1("matrix").path,
        )

    def make_compute(self, key, model_config, dataset_config, trainer_config, data_version):
        dataset = DatasetSettings.from_dict(dataset_config)
        data = load_scan_tensors(dataset.scan_key, dataset.image_shape)
        # An interrupted job resumes from its latest checkpoint (schemas.checkpoints).
        inputs = (model_config, dataset_config, trainer_config, data_version)
        checkpoint, progress_log = checkpoints.supervision(self, key, inputs, "fit")
        result = experiment.run(
            ModelSettings.from_dict(model_config),
            TrainerSettings.from_dict(trainer_config),
            data,
            seed=key["seed"],
            checkpoint=checkpoint,
            progress_log=progress_log,
        )
        return (
            dict(
                n_units=data.n_units,
                image_shape=data.image_shape,
                weights=experiment.state_to_arrays(result.fit.state_dict),
                val_correlation=result.fit.best_correlation,
                iterations=result.fit.iterations,
                best_iteration=result.fit.best_iteration,
                history=result.fit.history,
                seconds=result.seconds,
                device=result.device,
            ),
            dataclass_arrays(result.test),
        )

    def make_insert(self, key, fitted, test):
        checkpoints.clear(self, key)
        dataset = DatasetConfig.load(key)
        oracle = require(Reliability, dataset.scan_key).fetch1("mean_oracle")
        self.insert1(
            dict(
                key,
                n_units=fitted["n_units"],
                image_height=fitted["image_shape"][0],
                image_width=fitted["image_shape"][1],
                weights=fitted["weights"],
                val_correlation=fitted["val_correlation"],
                test_correlation=float(np.nanmean(test["correlation"])),
                test_single_trial=float(np.nanmean(test["single_trial"])),
                test_feve=finite_or(metrics.population_feve(test["feve"], test["explainable"]), None),
                oracle_ceiling=float(oracle),
                iterations=fitted["iterations"],
                best_iteration=fitted["best_iteration"],
                train_seconds=fitted["seconds"],
                device=fitted["device"],
                code_version=pipeline.code_version(),
                history=fitted["history"],
            )
        )
        unit_ids = (Scan.Unit & dataset.scan_key).to_arrays("unit_id", order_by="unit_index")
        self.Unit.insert(
            dict(
                key,
                **dataset.scan_key,
                unit_id=int(u),
                test_correlation=finite_or(c, None),
                test_single_trial=finite_or(s, None),
                test_feve=finite_or(f, None),
            )
            for u, c, s, f in zip(unit_ids, test["correlation"], test["single_trial"], test["feve"])
        )

    @classmethod
    def load_model(cls, key, device=None):
        """The fitted encoder of one trained model, in eval mode on ``device`` (no training data read)."""
        row = require(cls(), key).fetch1()
        return experiment.load_encoder(
            ModelConfig.load(row),
            row["n_units"],
            (row["image_height"], row["image_width"]),
            row["weights"],
            device=device,
        )


def dataclass_arrays(scores) -> dict[str, np.ndarray]:
    return {name: np.asarray(value) for name, value in vars(scores).items()}


@schema
class OracleFraction(Readiness, dj.Computed):
    definition = """
    # fraction of oracle: per-unit single-trial test correlation against the unit's oracle correlation
    -> TrainedModel
    ---
    fraction_oracle = null: float64     # slope of the least-squares line through the origin; null: no oracle
    units_scored: int32                 # units whose single-trial correlation and oracle are both defined
    """

    def inputs(self) -> dict:
        # The oracle is the scan's (Reliability.Unit), which the primary key does not reference.
        return {"Reliability": TrainedModel.proj() & _datasets_with(Reliability)}

    def make(self, key):
        scan = DatasetConfig.load(key).scan_key
        require(Reliability, scan)
        units = (TrainedModel.Unit & key).proj("test_single_trial") * (Reliability.Unit & scan).proj("oracle")
        single, oracle = (np.asarray(a, dtype=np.float64) for a in units.to_arrays("test_single_trial", "oracle"))
        fraction = metrics.fraction_of_oracle(single, oracle)
        scored = int((np.isfinite(single) & np.isfinite(oracle)).sum())
        self.insert1(dict(key, fraction_oracle=finite_or(fraction, None), units_scored=scored))


@schema
class Ensemble(dj.Manual):
    definition = """
    # a named set of trained models whose averaged predictions are the denoised responses
    ensemble_name: varchar(64)
    ---
    description = '': varchar(255)
    -> DatasetConfig                    # every member is fitted to this data
    n_types = null: int32               # cell types of the consensus (EnsembleCellTypes); null: chosen from the data
    """

    class Member(dj.Part):
        definition = """
        -> master
        -> TrainingTask                 # trained or still to train: ensembles can be declared up front
        """

    @classmethod
    def create(cls, name: str, models, description: str = "", n_types: int | None = None) -> dict:
        """Group models (training-task or trained-model keys, or a query) into an ensemble; they must
        share one dataset.  Members need not be trained yet: what reads them waits until they are.

        ``n_types`` fixes the number of consensus cell types of :class:`EnsembleCellTypes`; None
        (the default) has it chosen from the members' readouts (:mod:`pipeline.celltypes.type_count`), which
        takes two models or more: an ensemble of one keeps its model's clusters, one per feature."""
        if n_types is not None and (isinstance(n_types, bool) or int(n_types) != n_types or n_types < 1):
            raise ValueError(f"ensemble {name!r}: n_types must be a positive integer or None, got {n_types!r}")
        members = (TrainingTask.proj() & models).keys()
        if not members:
            raise ValueError(f"ensemble {name!r}: no training task matches")
        datasets = {m["dataset_hash"] for m in members}
        if len(datasets) != 1:
            raise ValueError(f"ensemble {name!r}: members are fitted to {len(datasets)} datasets; one is required")
        key = dict(ensemble_name=name)
        with dj.conn().transaction:
            cls.insert1(
                dict(
                    key,
                    description=description,
                    dataset_hash=datasets.pop(),
                    n_types=None if n_types is None else int(n_types),
                )
            )
            cls.Member.insert(dict(key, **m) for m in members)
        return key


def ensembles_with_every(member_result):
    """Ensembles none of whose members lacks a row in ``member_result`` (a table keyed by training task)."""
    return Ensemble.proj() - (Ensemble.Member.proj() - member_result.proj())


def ensembles_with_scan(statistic):
    """Ensembles whose scan has ``statistic`` (Normalization, Reliability) computed."""
    return (Ensemble & _datasets_with(statistic)).proj()


@schema
class CellTypes(Readiness, dj.Computed):
    definition = """
    # orientation-free functional types from a rotation-equivariant model's readout
    -> TrainedModel
    ---
    n_types: int32                      # features that are the main feature of some unit
    n_clusters: int32                   # clusters of rotation-aligned readout vectors
    clean_fraction: float64             # units whose main feature carries > 50 percent of the weight
    type_counts: <blob>                 # (features,) units per type
    ari_types = null: float64           # adjusted Rand index vs simulated ground truth (argmax types)
    ari_clusters = null: float64        # same, for the clusters
    orientation_error = null: float64   # median circular error vs ground truth, degrees
    """

    class Unit(dj.Part):
        definition = """
        -> master
        -> Scan.Unit
        ---
        cell_type: int32                # main feature (argmax over features of squared weights)
        cluster: int32                  # cluster of the rotation-aligned readout vector
        preferred_orientation: float64  # radians in [0, pi)
        main_share: float64             # weight share of the main feature
        clean: bool                     # main_share > 0.5
        """

    @property
    def candidates(self):
        return rotation_tasks().proj()

    def inputs(self) -> dict:
        return {"TrainedModel": TrainedModel.proj()}

    def make(self, key):
        model_config = ModelConfig.load(key)
        scan = DatasetConfig.load(key).scan_key
        weights = TrainedModel.load_model(key, device="cpu").feature_weights()
        # As many clusters as the model has features: the argmax types and the clusters are then two
        # partitions of the same size, comparable unit by unit.
        result = celltypes.summarize(
            weights,
            model_config.core.rotations,
            truth=ground_truth_of(scan),
            seed=key["seed"],
            n_clusters=model_config.core.features,
        )
        self.insert1(dict(key, **result.summary))
        unit_ids = (Scan.Unit & scan).to_arrays("unit_id", order_by="unit_index")
        self.Unit.insert(dict(key, **scan, unit_id=int(u), **row) for u, row in zip(unit_ids, result.units))


@schema
class EnsembleCellTypes(Readiness, dj.Computed):
    definition = """
    # consensus of the cell-type clusters of an ensemble's rotation-equivariant models
    -> Ensemble
    ---
    n_models: int32                     # members whose clusters were combined
    n_clusters: int32
    k_source = 'fixed': varchar(16)     # how the number of clusters was set: 'fixed' or 'data' (pipeline.type_count)
    k_curve = null: <blob>              # from the data: one dict per candidate k (pipeline.type_count.TypeCount.curve)
    ari_clusters = null: float64        # adjusted Rand index vs simulated ground truth
    """

    class Unit(dj.Part):
        definition = """
        -> master
        -> Scan.Unit
        ---
        cell_type: int32                # consensus cluster
        agreement: float64              # mean fraction of members that group the unit with the rest of its cluster
        """

    @property
    def candidates(self):
        # Ensembles of rotation-equivariant models only: a CNN member never has cell types.
        return ensembles_with_every(rotation_tasks())

    def inputs(self) -> dict:
        return {"CellTypes of every member": ensembles_with_every(CellTypes)}

    def make(self, key):
        ensemble = (Ensemble & key).fetch1()
        # the ensemble's dataset: `key` alone names no dataset, and would restrict nothing
        scan = DatasetConfig.load(dict(dataset_hash=ensemble["dataset_hash"])).scan_key
        members = (Ensemble.Member & key).keys()
        cores = {ModelConfig.load(m).core for m in members}
        shapes = {(c.features, c.rotations) for c in cores}
        if len(shapes) != 1:
            raise ValueError(
                f"ensemble {key['ensemble_name']!r}: members have (features, rotations) {sorted(shapes)}; "
                "a consensus needs readouts of one shape"
            )
        features, rotations = shapes.pop()
        for member in members:
            require(CellTypes(), member)
        unit_ids = (Scan.Unit & scan).to_arrays("unit_id", order_by="unit_index")
        k = ensemble["n_types"]
        if k is None and len(members) < 2:
            k = features  # k from the data compares models; one model is clustered at its features (k_source 'fixed')
        readouts = [TrainedModel.load_model(m, device="cpu").feature_weights() for m in members]
        types = celltypes_ensemble.ensemble_types(readouts, rotations, n_types=k)
        consensus, agreement, curve = types.labels, types.agreement, types.curve
        truth = ground_truth_of(scan)
        self.insert1(
            dict(
                key,
                n_models=len(members),
                n_clusters=int(len(np.unique(consensus))),
                k_source=types.k_source,
                k_curve=curve,
                ari_clusters=None if truth is None else celltypes.adjusted_rand_index(truth["unit_type"], consensus),
            )
        )
        self.Unit.insert(
            dict(key, **scan, unit_id=int(u), cell_type=int(c), agreement=float(a))
            for u, c, a in zip(unit_ids, consensus, agreement)
        )


# The model search's tables belong to this schema; their module holds them apart from the models.
KEPT_TABLES = {"schemas.model_search": ("Search", "SearchBest")}
__getattr__ = tables_kept_in(__name__, KEPT_TABLES)
