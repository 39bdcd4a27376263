"""Rotation-equivariant vs regular CNN core on the simulated V1 population, several seeds.

Same data, same number of feature maps, same trainer budget. Reports per seed and as mean ± sd:
test correlation (repeat-averaged), FEVE against the simulator's noise ceiling, and for the
rotation-equivariant models the agreement of the recovered cell types with the simulated ones
(adjusted Rand index; the paper's argmax types, the rotation-invariant clusters of each model, and
the consensus of all seeds' clusters as ``EnsembleCellTypes`` computes it) and the circular error of
preferred orientations. How the consensus improves with the number of models is drawn in
``benchmarks/results/experiment_cores[-tag]-consensus.png``. A long run:
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


def main(argv=None) -> dict:
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
    args = parser.parse_args(argv)

    from pipeline import figures as figures_module
    from pipeline import stats
    from pipeline.celltypes import clustering as celltypes
    from pipeline.data.dataset import ScanTensors
    from pipeline.data.simulate import simulate
    from pipeline.models import experiment
    from pipeline.models.encoder import ModelConfig
    from pipeline.models.training import TrainerConfig

    recording = simulate(args.preset, seed=0)
    if args.noise_free:
        position = {int(i): k for k, i in enumerate(recording.image_ids)}
        rates = recording.ground_truth.rates[[position[int(i)] for i in recording.trial_image_ids]]
        recording.responses = np.where(recording.withheld[:, None], 0, rates).astype(np.float32)
    data = ScanTensors.from_recording(recording, stats.normalization_stats(recording), tuple(args.image_shape))
    truth = recording.ground_truth
    test = (recording.tiers == "test") & ~recording.withheld
    oracle = stats.oracle_correlation(recording.responses[test], recording.trial_image_ids[test])
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
    trainer = TrainerConfig(max_iterations=args.iterations, eval_every=50, patience=4, batch_size=args.batch_size)
    per_seed, clusters, readouts = [], [], []
    for seed in args.seeds:
        for name, config in configs.items():
            result = experiment.run(ModelConfig.from_dict(config), trainer, data, seed=seed, progress=False)
            row = dict(
                core=name,
                seed=seed,
                test_correlation=float(np.nanmean(result.test.correlation)),
                feve=result.test.mean_feve,
                iterations=result.fit.iterations,
                seconds=result.seconds,
                parameters=sum(p.numel() for p in result.model.core.parameters()),
            )
            if name == "rotation":
                readouts.append(result.model.feature_weights())
                typed = celltypes.summarize(
                    result.model.feature_weights(),
                    args.rotations,
                    truth=dict(unit_type=truth.unit_type, orientation=truth.orientation),
                    seed=seed,
                    n_clusters=args.features,
                )
                clusters.append(np.array([u["cluster"] for u in typed.units]))
                summary = typed.summary
                row.update(
                    ari_types=summary["ari_types"],
                    ari_clusters=summary["ari_clusters"],
                    n_clusters=summary["n_clusters"],
                    orientation_error_deg=summary["orientation_error"],
                    type_confusion=confusion(truth.unit_type, [u["cell_type"] for u in typed.units], args.features),
                    cluster_confusion=confusion(truth.unit_type, clusters[-1], args.features),
                )
            per_seed.append(row)
            print(row, flush=True)

    def spread(core: str, field: str) -> tuple[float, float]:
        values = np.array([r[field] for r in per_seed if r["core"] == core and r.get(field) is not None], float)
        return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0

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
    for core in configs:
        for field in ("test_correlation", "feve"):
            mean, sd = spread(core, field)
            figures[f"{core}_{field}_mean"], figures[f"{core}_{field}_sd"] = mean, sd
    for field in ("ari_types", "ari_clusters", "orientation_error_deg"):
        if "rotation" in configs:
            mean, sd = spread("rotation", field)
            figures[f"rotation_{field}_mean"], figures[f"rotation_{field}_sd"] = mean, sd
    if len(clusters) > 1:
        # The pipeline's EnsembleCellTypes: consensus of the rotation models' clusters.
        consensus, _ = celltypes.consensus_types(clusters, args.features)
        figures["rotation_ensemble_ari_clusters"] = celltypes.adjusted_rand_index(truth.unit_type, consensus)
        figures["rotation_ensemble_confusion"] = confusion(truth.unit_type, consensus, args.features)
        # Every subset size: how many models a consensus needs (the single models are size 1).
        curve = celltypes.consensus_by_ensemble_size(clusters, args.features, truth.unit_type)
        figures["rotation_consensus_by_size"] = [
            {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items() if k != "ari"} for row in curve
        ]
        figure_path = RESULTS / f"experiment_cores{'-' + args.tag if args.tag else ''}-consensus.png"
        RESULTS.mkdir(exist_ok=True)
        figures_module.consensus_curve(curve).savefig(figure_path, dpi=120)
        figures["rotation_consensus_figure"] = figure_path.name
    if set(configs) == {"rotation", "cnn"}:
        wins = [
            next(r for r in per_seed if r["core"] == "rotation" and r["seed"] == s)["test_correlation"]
            > next(r for r in per_seed if r["core"] == "cnn" and r["seed"] == s)["test_correlation"]
            for s in args.seeds
        ]
        figures["rotation_beats_cnn_seeds"] = f"{sum(wins)}/{len(wins)}"
    figures["per_seed"] = per_seed
    if args.save_readouts and readouts:
        RESULTS.mkdir(exist_ok=True)
        np.savez(
            RESULTS / f"experiment_cores{'-' + args.tag if args.tag else ''}-readouts.npz",
            readouts=np.stack(readouts),
            unit_type=np.asarray(truth.unit_type).astype(str),
            rotations=args.rotations,
        )
    save("experiment_cores" + (f"-{args.tag}" if args.tag else ""), figures)
    return figures


if __name__ == "__main__":
    main()
