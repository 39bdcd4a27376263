"""Rotation-equivariant vs regular CNN core on the simulated V1 population, several seeds.

Same data, same number of feature maps, same trainer budget. Reports per seed and as mean ± sd:
test correlation (image-averaged prediction vs repeat-averaged response), single-trial test
correlation and its fraction of oracle (slope through the origin of the per-unit single-trial
correlation against the per-unit oracle correlation), FEVE, and for the
rotation-equivariant models the agreement of the recovered cell types with the simulated ones
(adjusted Rand index; the paper's argmax types, the rotation-invariant clusters of each model, and
the co-association consensus of all seeds' clusters (:func:`pipeline.celltypes.clustering.consensus_types`;
``EnsembleCellTypes`` uses the averaged band-limited distance since issue 33, which
``benchmarks.experiment_celltypes`` scores)) and the circular error of
preferred orientations. How the consensus improves with the number of models is drawn in
``benchmarks/results/experiment_cores[-tag]-consensus.png``; each unit's single-trial test correlation
against its oracle, all seeds pooled per core, in ``docs/figures/models-oracle.png`` (a ``--tag``
run: ``benchmarks/results/experiment_cores-{tag}-oracle.png``). A long run:
``python -m benchmarks.experiment_cores`` (about 3 minutes per demo-size model on 2 CPU cores).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from benchmarks.common import RESULTS, save


def confusion(unit_type, labels, n_groups: int) -> dict[str, list[int]]:
    """Simulated type -> number of its units in each recovered group (feature or cluster)."""
    unit_type, labels = np.asarray(unit_type).astype(str), np.asarray(labels)
    return {
        str(name): np.bincount(labels[unit_type == name], minlength=n_groups).tolist()
        for name in sorted(set(unit_type))
    }


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--features", type=int, default=4)
    parser.add_argument("--rotations", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-shape", type=int, nargs=2, default=[18, 32])
    parser.add_argument(
        "--gamma-readout",
        type=float,
        default=None,
        help="L1 weight of the readouts (default: the ReadoutConfig default, the paper's 0.017)",
    )
    parser.add_argument("--tag", default="", help="suffix of the results file (variants keep the main figures)")
    parser.add_argument("--cores", nargs="+", default=["rotation", "cnn"], choices=["rotation", "cnn"])
    parser.add_argument(
        "--save-readouts",
        action="store_true",
        help="also write the rotation models' readouts and the true types to "
        "benchmarks/results/experiment_cores[-tag]-readouts.npz (for pipeline.celltypes.type_count)",
    )
    parser.add_argument(
        "--noise-free",
        action="store_true",
        help="fit the simulator's noise-free rates instead of the noisy responses (a ceiling)",
    )
    return parser.parse_args(argv)


def results_name(tag: str) -> str:
    """Stem of the results files: ``experiment_cores`` or ``experiment_cores-{tag}``."""
    return "experiment_cores" + (f"-{tag}" if tag else "")


def simulated_data(args):
    """The simulated recording (noisy, or its noise-free rates with ``--noise-free``) and its tensors."""
    from pipeline import stats
    from pipeline.data.dataset import ScanTensors
    from pipeline.data.simulate import simulate

    recording = simulate(args.preset, seed=0)
    if args.noise_free:
        position = {int(i): k for k, i in enumerate(recording.image_ids)}
        rates = recording.ground_truth.rates[[position[int(i)] for i in recording.trial_image_ids]]
        recording.responses = np.where(recording.withheld[:, None], 0, rates).astype(np.float32)
    data = ScanTensors.from_recording(recording, stats.normalization_stats(recording), tuple(args.image_shape))
    return recording, data


def core_configs(args) -> dict[str, dict]:
    """Model config per core kind: the CNN has as many feature maps as the rotation core's features x rotations."""
    kernels = (9, 5, 5)
    configs = {
        "rotation": dict(
            core=dict(kind="rotation", features=args.features, rotations=args.rotations, kernel_sizes=kernels)
        ),
        "cnn": dict(core=dict(kind="cnn", features=args.features * args.rotations, kernel_sizes=kernels)),
    }
    configs = {name: configs[name] for name in args.cores}
    if args.gamma_readout is not None:
        for config in configs.values():
            config["readout"] = dict(gamma_readout=args.gamma_readout)
    return configs


def fit_row(args, name: str, config: dict, trainer, data, truth, seed: int, oracle) -> tuple[dict, np.ndarray, object]:
    """Train one model: its results row, its per-unit single-trial test correlation (n_units,) and,
    for a rotation core, its readout feature weights (n_units, rotations x features) and recovered
    cluster per unit (n_units,); None for a CNN.

    oracle : (n_units,) leave-one-out oracle correlation of the test trials, for the fraction of oracle."""
    from pipeline.celltypes import clustering as celltypes
    from pipeline.models import experiment, metrics
    from pipeline.models.encoder import ModelConfig

    result = experiment.run(ModelConfig.from_dict(config), trainer, data, seed=seed, progress=False)
    row = dict(
        core=name,
        seed=seed,
        test_correlation=float(np.nanmean(result.test.correlation)),
        test_single_trial=float(np.nanmean(result.test.single_trial)),
        fraction_oracle=metrics.fraction_of_oracle(result.test.single_trial, oracle),
        feve=result.test.mean_feve,
        iterations=result.fit.iterations,
        seconds=result.seconds,
        parameters=sum(p.numel() for p in result.model.core.parameters()),
    )
    single_trial = np.asarray(result.test.single_trial, dtype=float)
    if name != "rotation":
        return row, single_trial, None
    typed = celltypes.summarize(
        result.model.feature_weights(),
        args.rotations,
        truth=dict(unit_type=truth.unit_type, orientation=truth.orientation),
        seed=seed,
        n_clusters=args.features,
    )
    summary = typed.summary
    row.update(
        ari_types=summary["ari_types"],
        ari_clusters=summary["ari_clusters"],
        n_clusters=summary["n_clusters"],
        orientation_error_deg=summary["orientation_error"],
        type_confusion=confusion(truth.unit_type, [u["cell_type"] for u in typed.units], args.features),
        cluster_confusion=confusion(truth.unit_type, [u["cluster"] for u in typed.units], args.features),
    )
    return row, single_trial, (result.model.feature_weights(), np.array([u["cluster"] for u in typed.units]))


def spreads(per_seed: list[dict], configs: dict) -> dict:
    """``{core}_{field}_mean`` and ``_sd`` over the seeds (sd 0 for one seed)."""

    def spread(core: str, field: str) -> tuple[float, float]:
        values = np.array([r[field] for r in per_seed if r["core"] == core and r.get(field) is not None], float)
        return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0

    figures = {}
    for core in configs:
        for field in ("test_correlation", "test_single_trial", "fraction_oracle", "feve"):
            mean, sd = spread(core, field)
            figures[f"{core}_{field}_mean"], figures[f"{core}_{field}_sd"] = mean, sd
    for field in ("ari_types", "ari_clusters", "orientation_error_deg"):
        if "rotation" in configs:
            mean, sd = spread("rotation", field)
            figures[f"rotation_{field}_mean"], figures[f"rotation_{field}_sd"] = mean, sd
    return figures


def consensus_figures(args, clusters: list[np.ndarray], unit_type) -> dict:
    """The co-association consensus of the rotation models' clusters against the truth,
    and its ARI for every ensemble size (how many models a consensus needs), drawn to a figure."""
    from pipeline import figures as figures_module
    from pipeline.celltypes import clustering as celltypes

    consensus, _ = celltypes.consensus_types(clusters, args.features)
    figures = dict(
        rotation_ensemble_ari_clusters=celltypes.adjusted_rand_index(unit_type, consensus),
        rotation_ensemble_confusion=confusion(unit_type, consensus, args.features),
    )
    curve = celltypes.consensus_by_ensemble_size(clusters, args.features, unit_type)
    figures["rotation_consensus_by_size"] = [
        {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items() if k != "ari"} for row in curve
    ]
    figure_path = RESULTS / f"{results_name(args.tag)}-consensus.png"
    RESULTS.mkdir(exist_ok=True)
    figures_module.consensus_curve(curve).savefig(figure_path, dpi=120)
    figures["rotation_consensus_figure"] = figure_path.name
    return figures


def oracle_figure(args, oracle: np.ndarray, single_trials: dict[str, list[np.ndarray]]) -> str:
    """Draw every unit's single-trial test correlation against its oracle, one colour per core with
    all seeds pooled (its legend: the pooled fraction of oracle); returns the file's repository path.

    oracle : (n_units,); single_trials : core -> one (n_units,) array per seed."""
    from pipeline import figures as figures_module

    cores = list(single_trials)
    points = np.concatenate([np.concatenate(single_trials[core]) for core in cores])
    oracles = np.concatenate([np.tile(oracle, len(single_trials[core])) for core in cores])
    groups = np.concatenate([np.full(oracle.size * len(single_trials[core]), core, dtype=object) for core in cores])
    folder = RESULTS.parent.parent / "docs" / "figures" if not args.tag else RESULTS
    path = folder / ("models-oracle.png" if not args.tag else f"{results_name(args.tag)}-oracle.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    figures_module.oracle_vs_correlation(oracles, points, groups=groups).savefig(path, dpi=120)
    return str(path.relative_to(RESULTS.parent.parent))


def rotation_wins(per_seed: list[dict], seeds: list[int]) -> str:
    """``wins/seeds``: on how many seeds the rotation core's test correlation beats the CNN's."""
    wins = [
        next(r for r in per_seed if r["core"] == "rotation" and r["seed"] == s)["test_correlation"]
        > next(r for r in per_seed if r["core"] == "cnn" and r["seed"] == s)["test_correlation"]
        for s in seeds
    ]
    return f"{sum(wins)}/{len(wins)}"


def main(argv=None) -> dict:
    args = parse_args(argv)
    from pipeline import stats
    from pipeline.models.training import TrainerConfig

    recording, data = simulated_data(args)
    truth = recording.ground_truth
    test = (recording.tiers == "test") & ~recording.withheld
    oracle = stats.oracle_correlation(recording.responses[test], recording.trial_image_ids[test])
    configs = core_configs(args)
    trainer = TrainerConfig(max_iterations=args.iterations, eval_every=50, patience=4, batch_size=args.batch_size)
    per_seed, clusters, readouts = [], [], []
    single_trials: dict[str, list[np.ndarray]] = {name: [] for name in configs}
    for seed in args.seeds:
        for name, config in configs.items():
            row, single_trial, typed = fit_row(args, name, config, trainer, data, truth, seed, oracle)
            single_trials[name].append(single_trial)
            if typed is not None:
                readouts.append(typed[0])
                clusters.append(typed[1])
            per_seed.append(row)
            print(row, flush=True)

    figures = dict(
        preset=args.preset,
        noise_free=args.noise_free,
        seeds=args.seeds,
        feature_maps=args.features * args.rotations,
        features=args.features,
        gamma_readout=args.gamma_readout,
        iterations=args.iterations,
        mean_oracle=float(np.nanmean(oracle)),
        torch_threads=torch.get_num_threads(),
    )
    figures.update(spreads(per_seed, configs))
    figures["oracle_figure"] = oracle_figure(args, oracle, single_trials)
    if len(clusters) > 1:
        figures.update(consensus_figures(args, clusters, truth.unit_type))
    if set(configs) == {"rotation", "cnn"}:
        figures["rotation_beats_cnn_seeds"] = rotation_wins(per_seed, args.seeds)
    figures["per_seed"] = per_seed
    if args.save_readouts and readouts:
        RESULTS.mkdir(exist_ok=True)
        np.savez(
            RESULTS / f"{results_name(args.tag)}-readouts.npz",
            readouts=np.stack(readouts),
            unit_type=np.asarray(truth.unit_type).astype(str),
            rotations=args.rotations,
        )
    save(results_name(args.tag), figures)
    return figures


if __name__ == "__main__":
    main()
