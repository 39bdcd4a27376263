"""Cell types without knowing their number, on the demo scan and on the harder ground truths.

One command, run as populate jobs in the configured database, so an interrupted run resumes where it
stopped (every step is a table row: scans, training tasks, searches, ensembles)::

    python -m benchmarks.experiment_celltypes                  # both parts, every variant
    python -m benchmarks.experiment_celltypes --parts standard # (a) only
    python -m benchmarks.experiment_celltypes --parts variants --variants scales cardinal
    python -m benchmarks.experiment_celltypes --parts criteria --models 6  # after standard
    python -m benchmarks.experiment_celltypes --parts standard criteria --models 6 --preset demo-one-size

Its populate calls reserve jobs in the tables' queues (:mod:`populate.work.run`): ``python -m populate
worker`` processes on the same database share the training, and two drivers (e.g. two variants side
by side) never train one model twice.

(a) ``standard``: the demo scan; two independent ensembles of ``--models`` rotation-equivariant
    models (6 features x ``--rotations`` rotations, 8 unless given; seeds 0.. and 100..);
    ``EnsembleCellTypes`` (the averaged band-limited distance consensus, :mod:`pipeline.celltypes.ensemble`)
    with k chosen from the data.  Reports each ensemble's chosen k, its ARI with the
    simulated types and the k curve, and the spread over the two ensembles.
(b) ``variants``: per harder ground truth (``pipeline.data.simulate.VARIANTS``), a random search
    (``Search``) with ``--budget`` draws for each of the rotation core and a CNN with the same 48
    feature maps (the same draws for both); the best of each kind by validation correlation is
    trained with ``--seeds`` seeds (test correlation mean +- sd), the best rotation config again
    with positive readout weights (single-model ARI, positive vs signed), and ``--models`` seeds of
    the best rotation config form the consensus (chosen k, ARI).

(c) ``criteria``: after (a), on the first ``--models`` members of each ensemble, the consensus ARI
    over k of the co-association consensus, of the averaged-distance consensus on whole readouts and
    on band-limited ones (the table's since issue 33), the k the held-out residual (both), the gap
    statistic and half-ensemble stability choose, and ``splits``: whether clusters past the true k
    follow each unit's grid phase (the fractional part of its alignment shift), before and after
    band-limiting (no training; a few minutes).  Writes docs/figures/celltypes-criteria.png.

``--rotations 16`` trains (a) with a 16-rotation core (22.5-degree grid) under ensemble names ending
in ``-r16``; (c) with the same flag reads them.

With ``--preset demo-one-size`` (a control, :data:`pipeline.data.simulate.CONTROLS`: the same units at
one receptive-field size) (a) and (c) run on that population in the configured database, and write
their figures and results with the preset in the name.

Time on 2 CPU cores, about 3 minutes per demo-size model at 1,000 iterations: (a) 2 x 10 models,
about 60 minutes; (b) per variant 2 x budget (search) + 2 x (seeds - 1) + seeds (positive weights)
+ (models - seeds) (more rotation seeds) models: with the defaults (budget 6, 3 seeds, 8 models)
24 models, about 75 minutes, plus a minute of simulation.  The paper's search had 32 models per
core; 6 is what fits 2 hours per variant.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from benchmarks.common import save

KERNELS = (9, 5, 5)
BASES = {
    "rotation": dict(core=dict(kind="rotation", features=6, rotations=8, kernel_sizes=KERNELS)),
    "cnn": dict(core=dict(kind="cnn", features=48, kernel_sizes=KERNELS)),
}
STANDARD_SCAN = "21-1-1"
FIGURES = Path(__file__).resolve().parents[1] / "docs" / "figures"
SECOND_ENSEMBLE_SEED = 100  # seeds of the second ensemble start here: no model is in both


def _rotation_base(rotations: int) -> dict:
    """The rotation core of :data:`BASES` with ``rotations`` orientations per feature."""
    return dict(core=dict(BASES["rotation"]["core"], rotations=rotations))


def _named(name: str, rotations: int) -> str:
    """Ensemble and figure names: the 8-rotation core keeps the names it always had."""
    return name if rotations == BASES["rotation"]["core"]["rotations"] else f"{name}-r{rotations}"


def _scan(index: int) -> str:
    return f"22-1-{index}"


def _populate(tables: list[str]) -> None:
    from populate.work import run

    run.populate_all(tables=tables, progress=True)


def _ensemble(name: str, tasks: list[dict]) -> dict:
    from schemas.models import Ensemble

    key = dict(ensemble_name=name)
    if not Ensemble & key:  # resuming: the ensemble was declared by an earlier run
        Ensemble.create(name, tasks, description="benchmarks.experiment_celltypes")
    return key


def _consensus(key: dict) -> dict:
    """The ensemble's ``EnsembleCellTypes`` row, with its k curve and, per candidate k, the ARI of the
    consensus at that k with the simulated types (recomputed from the members' readouts by the same
    deterministic :func:`pipeline.celltypes.type_count.choose_distance_type_count` call as the table's
    :func:`pipeline.celltypes.ensemble.ensemble_types`)."""
    from pipeline.celltypes import clustering as celltypes
    from pipeline.celltypes import ensemble, type_count
    from schemas.models import DatasetConfig, Ensemble, EnsembleCellTypes, ModelConfig, TrainedModel
    from schemas.recordings import ground_truth_of

    row = (EnsembleCellTypes & key).fetch1()
    curve = [dict(r) for r in row["k_curve"] or []]
    if curve:
        members = (Ensemble.Member & key).keys()
        rotations = ModelConfig.load(members[0]).core.rotations
        readouts = [TrainedModel.load_model(m, device="cpu").feature_weights() for m in members]
        vectors, distances = ensemble.member_distances(readouts, rotations)
        count = type_count.choose_distance_type_count(distances, vectors, rotations)
        dataset_hash = (Ensemble & key).fetch1("dataset_hash")
        truth = ground_truth_of(DatasetConfig.load(dict(dataset_hash=dataset_hash)).scan_key)
        for r in curve:
            r["ari"] = celltypes.adjusted_rand_index(truth["unit_type"], count.consensus[r["k"]])
        n_types = len(np.unique(truth["unit_type"]))
        composition = _composition(truth["unit_type"], count.consensus[row["n_clusters"]])
    else:
        n_types, composition = None, {}
    return dict(
        models=row["n_models"],
        k=row["n_clusters"],
        ari=row["ari_clusters"],
        true_k=n_types,
        k_curve=curve,
        **composition,
    )


def _composition(truth: np.ndarray, labels: np.ndarray) -> dict:
    """Homogeneity and completeness (``sklearn.metrics``) of consensus ``labels`` (n_units,) against the
    simulated types ``truth`` (n_units,), and per cluster its size, majority type and purity."""
    from sklearn import metrics

    clusters = []
    for cluster in np.unique(labels):
        names, counts = np.unique(truth[labels == cluster], return_counts=True)
        clusters.append(
            dict(
                cluster=int(cluster),
                units=int(counts.sum()),
                majority=str(names[np.argmax(counts)]),
                purity=float(counts.max() / counts.sum()),
            )
        )
    return dict(
        homogeneity=float(metrics.homogeneity_score(truth, labels)),
        completeness=float(metrics.completeness_score(truth, labels)),
        clusters=clusters,
    )


def _figure_path(stem: str, preset: str) -> Path:
    """docs/figures/<stem>.png for the demo scan; other presets (e.g. a control) get their own file."""
    return FIGURES / (f"{stem}.png" if preset == "demo" else f"{stem}-{preset}.png")


def _figure(rows: dict, path: Path) -> None:
    """``path`` (docs/figures/celltypes-k.png): per ensemble, the criterion over k and the consensus ARI at each k."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.6), layout="constrained", sharey="row")
    for ax, (name, row) in zip(axes, rows.items()):
        k = [r["k"] for r in row["k_curve"]]
        ax.errorbar(
            k,
            [r["residual"] for r in row["k_curve"]],
            yerr=[r["residual_se"] for r in row["k_curve"]],
            fmt="o-",
            capsize=2,
            label="held-out residual (criterion)",
        )
        ax.axvline(row["k"], color="C3", linestyle=":", label=f"chosen k = {row['k']}")
        ax.axvline(row["true_k"], color="0.5", linestyle="--", linewidth=1, label=f"simulated types ({row['true_k']})")
        ax.set_xlabel("number of types k")
        ax.set_title(f"{name}: {row['models']} models")
        right = ax.twinx()
        right.plot(k, [r["ari"] for r in row["k_curve"]], "s-", color="C2", label="consensus ARI with the truth")
        right.set_ylim(0, 1)
        handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
        ax.legend(handles=handles, fontsize="x-small", loc="center right")
    axes[0].set_ylabel("held-out residual")
    FIGURES.mkdir(exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def standard(args, dataset_shape, trainer) -> dict:
    from populate import ingest
    from schemas.models import TrainingTask

    ingest.simulate(args.preset, seed=0, scan=STANDARD_SCAN)
    _populate(["Reliability", "Normalization"])
    dataset = dict(scan=STANDARD_SCAN, image_shape=dataset_shape)
    ensembles = {}
    for base, first in (("celltypes-a", 0), ("celltypes-b", SECOND_ENSEMBLE_SEED)):
        name = _named(base, args.rotations)
        tasks = TrainingTask.add(
            _rotation_base(args.rotations),
            dataset,
            trainer,
            seeds=range(first, first + args.models),
            name=_named("celltypes-rotation", args.rotations),
        )
        ensembles[name] = _ensemble(name, tasks)
    _populate(["TrainedModel", "CellTypes", "EnsembleCellTypes"])
    rows = {name: _consensus(key) for name, key in ensembles.items()}
    _figure(rows, _figure_path(_named("celltypes-k", args.rotations), args.preset))
    ari = np.array([r["ari"] for r in rows.values()], float)
    return dict(
        scan=STANDARD_SCAN,
        ensembles=rows,
        ari_mean=float(ari.mean()),
        ari_sd=float(ari.std(ddof=1)),
        chosen_k=[r["k"] for r in rows.values()],
    )


def criteria(args) -> dict:
    """(c) ``criteria``: on the first ``--models`` members of each standard ensemble (trained by
    ``standard``), the consensus ARI at every k of two consensus methods, co-association
    (:func:`pipeline.celltypes.clustering.consensus_types`, the table's) and averaged readout distances
    (:func:`pipeline.celltypes.clustering.distance_consensus`), with the k three criteria choose: the held-out
    residual (the table's), the gap statistic on the averaged distances, and half-ensemble stability."""
    names = (_named(name, args.rotations) for name in ("celltypes-a", "celltypes-b"))
    out = {name: _criteria_row(name, args.models) for name in names}
    _criteria_figure(out, _figure_path(_named("celltypes-criteria", args.rotations), args.preset))
    return out


def _criteria_row(name: str, models: int) -> dict:
    """The comparison of :func:`criteria` on the first ``models`` members (by seed) of one ensemble."""
    from pipeline.celltypes import clustering as celltypes
    from pipeline.celltypes import ensemble, type_count
    from schemas.models import DatasetConfig, Ensemble, ModelConfig, TrainedModel
    from schemas.recordings import ground_truth_of

    key = dict(ensemble_name=name)
    members = sorted((Ensemble.Member & key).keys(), key=lambda m: m["seed"])[:models]
    missing = [m["seed"] for m in members if not TrainedModel & m]
    if not members or missing:
        raise SystemExit(f"--parts criteria: {name} has untrained members (seeds {missing}); run --parts standard")
    rotations = ModelConfig.load(members[0]).core.rotations
    readouts = [TrainedModel.load_model(m, device="cpu").feature_weights() for m in members]
    dataset_hash = (Ensemble & key).fetch1("dataset_hash")
    simulated = ground_truth_of(DatasetConfig.load(dict(dataset_hash=dataset_hash)).scan_key)
    truth = simulated["unit_type"]
    count = type_count.choose_type_count(readouts, rotations)
    averaged = celltypes.averaged_distances(readouts, rotations)
    vectors, distances = ensemble.member_distances(readouts, rotations)
    band = type_count.choose_distance_type_count(distances, vectors, rotations)  # the table's (issue 33)
    candidates = [int(k) for k in count.candidates]
    gap_k, gap, gap_se = type_count.gap_statistic(celltypes.classical_scaling(averaged), [1, *candidates])
    n_types = len(np.unique(truth))
    rows = [
        dict(
            k=k,
            ari_coassociation=celltypes.adjusted_rand_index(truth, celltypes.consensus_types(count.labelings[k], k)[0]),
            ari_distance=celltypes.adjusted_rand_index(truth, celltypes.distance_consensus(averaged, k)),
            ari_band_limited=celltypes.adjusted_rand_index(truth, band.consensus[k]),
            residual=float(count.residual[i]),
            residual_band_limited=float(band.residual[i]),
            stability=float(count.stability[i]),
            gap=float(gap[i + 1]),
            gap_se=float(gap_se[i + 1]),
        )
        for i, k in enumerate(candidates)
    ]
    return dict(
        models=len(members),
        seeds=[int(m["seed"]) for m in members],
        rotations=rotations,
        harmonics=ensemble.DEFAULT_HARMONICS,
        true_k=n_types,
        chosen=dict(
            residual=count.k,
            gap=gap_k,
            stability=candidates[int(np.argmax(count.stability))],
            band_limited_residual=band.k,
        ),
        curve=rows,
        splits=_split_types(truth, readouts, rotations, averaged, band, n_types),
    )


def _split_types(
    truth: np.ndarray, readouts: list[np.ndarray], rotations: int, averaged: np.ndarray, band, n_types: int
) -> dict:
    """Do clusters past the true k follow the core's rotation grid?  Each unit's grid phase is the
    fractional part of its own alignment shift onto its simulated type's mean
    (:func:`pipeline.celltypes.grid_phase.grid_phase`, averaged over members); per type spread over two
    or more clusters, :func:`pipeline.celltypes.grid_phase.split_association` tests cluster membership
    against the side of the step and nearness to a rotation.  ``before``: today's distance (whole
    readouts) at k = true + 2; ``after``: the band-limited distance at k = true + 2 and at its chosen k."""
    from pipeline.celltypes import clustering as celltypes
    from pipeline.celltypes import grid_phase

    phase = grid_phase.grid_phase(readouts, truth, rotations)
    past = n_types + 2

    def association(labels: np.ndarray) -> list[dict]:
        return grid_phase.split_association(truth, labels, phase)

    return dict(
        k_past_truth=past,
        before=association(celltypes.distance_consensus(averaged, past)),
        after=association(band.consensus[past]) if past in band.consensus else None,
        after_chosen_k=dict(k=band.k, types=association(band.consensus[band.k])),
    )


def _criteria_figure(rows: dict, path: Path) -> None:
    """``path`` (docs/figures/celltypes-criteria.png): per ensemble, consensus ARI over k for both methods, and the
    k each criterion chooses."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(rows), figsize=(9.5, 3.4), layout="constrained", sharey=True)
    for ax, (name, row) in zip(np.atleast_1d(axes), rows.items()):
        k = [r["k"] for r in row["curve"]]
        ax.plot(k, [r["ari_coassociation"] for r in row["curve"]], "o-", label="co-association consensus")
        ax.plot(k, [r["ari_distance"] for r in row["curve"]], "s-", label="averaged-distance consensus")
        ax.plot(k, [r["ari_band_limited"] for r in row["curve"]], "^-", label="band-limited (the table's)")
        for (criterion, chosen), colour in zip(row["chosen"].items(), ("C3", "C4", "C5", "C6")):
            ax.axvline(chosen, color=colour, linestyle=":", label=f"{criterion}: k = {chosen}")
        ax.axvline(row["true_k"], color="0.5", linestyle="--", linewidth=1, label=f"simulated types ({row['true_k']})")
        ax.set_title(f"{name}: {row['models']} models")
        ax.set_xlabel("number of types k")
        ax.set_ylim(0, 1)
        ax.legend(fontsize="x-small", loc="lower right")
    np.atleast_1d(axes)[0].set_ylabel("consensus ARI with the simulated types")
    FIGURES.mkdir(exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def variant(args, name: str, index: int, dataset_shape, trainer) -> dict:
    from populate import ingest
    from schemas.models import CellTypes, Search, SearchBest, TrainedModel, TrainingTask

    scan = _scan(index)
    ingest.simulate(f"{args.preset}-{name}", seed=0, scan=scan)
    _populate(["Reliability", "Normalization"])
    dataset = dict(scan=scan, image_shape=dataset_shape)
    search_key = dict(search_name=f"celltypes-{name}")
    if not Search & search_key:
        Search.create(search_key["search_name"], BASES, dataset, budget=args.budget, trainer=trainer)
    _populate(["TrainedModel", "SearchBest"])
    best = SearchBest.best_tasks(search_key)
    from schemas.models import ModelConfig

    configs = {kind: ModelConfig.load(task).to_dict() for kind, task in best.items()}
    seeds = range(args.seeds)  # seed 0 is the search's own model
    arms = {
        kind: TrainingTask.add(configs[kind], dataset, trainer, seeds=seeds, name=f"celltypes-{name}-{kind}")
        for kind in configs
    }
    positive = dict(configs["rotation"], readout=dict(configs["rotation"]["readout"], positive_weights=True))
    arms["rotation-positive"] = TrainingTask.add(
        positive, dataset, trainer, seeds=seeds, name=f"celltypes-{name}-positive"
    )
    consensus_tasks = TrainingTask.add(
        configs["rotation"], dataset, trainer, seeds=range(args.models), name=f"celltypes-{name}-rotation"
    )
    ensemble = _ensemble(f"celltypes-{name}", consensus_tasks)
    _populate(["TrainedModel", "CellTypes", "EnsembleCellTypes"])

    def spread(values) -> str:
        values = np.asarray(values, float)
        return f"{values.mean():.3f} +- {values.std(ddof=1) if len(values) > 1 else 0:.3f}"

    out = dict(scan=scan, variant=name, search_budget_per_core=args.budget)
    for arm, tasks in arms.items():
        out[f"{arm}_test_correlation"] = spread((TrainedModel & tasks).to_arrays("test_correlation"))
        if arm.startswith("rotation"):
            out[f"{arm}_single_model_ari"] = spread((CellTypes & tasks).to_arrays("ari_clusters"))
    out["consensus"] = _consensus(ensemble)
    return out


def main(argv=None) -> dict:
    from pipeline.data.simulate import VARIANTS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--parts", nargs="+", choices=["standard", "variants", "criteria"], default=["standard", "variants"]
    )
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--models", type=int, default=10, help="models per consensus (up to 10)")
    parser.add_argument("--budget", type=int, default=6, help="search draws per core kind (the paper: 32)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of each best config")
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument(
        "--stop-on",
        choices=["correlation", "loss"],
        default="correlation",
        help="early-stopping criterion (the paper's: loss, the validation Poisson loss)",
    )
    parser.add_argument("--preset", default="demo", help="simulation preset (the variants are '<preset>-<name>')")
    parser.add_argument(
        "--rotations",
        type=int,
        default=BASES["rotation"]["core"]["rotations"],
        help="rotations of the rotation core in standard and criteria (16: a 22.5-degree grid; the variants keep 8)",
    )
    args = parser.parse_args(argv)
    if not os.environ.get("DJ_HOST"):
        raise SystemExit("experiment_celltypes runs as populate jobs: configure a database (DJ_HOST, ...)")
    import schemas

    schemas.declare_all()
    trainer = dict(max_iterations=args.iterations, eval_every=50, patience=4, batch_size=64, stop_on=args.stop_on)
    shape = (18, 32)
    figures = dict(models=args.models, iterations=args.iterations, stop_on=args.stop_on)
    if "standard" in args.parts:
        figures["standard"] = standard(args, shape, trainer)
    if "criteria" in args.parts:
        figures["criteria"] = criteria(args)
    if "variants" in args.parts:
        for index, name in enumerate(VARIANTS, start=1):
            if name in args.variants:
                figures[name] = variant(args, name, index, shape, trainer)
    # one file per part (and preset): runs of parts apart keep both
    suffix = ("" if args.preset == "demo" else f"-{args.preset}") + _named("", args.rotations)
    save("experiment_celltypes-" + "-".join(args.parts) + suffix, figures)
    return figures


if __name__ == "__main__":
    main()
