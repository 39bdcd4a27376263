"""Neural similarity and regularized classifiers.

- similarity throughput: ``write_similarity`` (blockwise, written to disk as float16) vs a plain
  in-memory ``X @ X.T`` of the same size (ratio = matmul time / ours; goal >= 0.7);
- peak memory of ``write_similarity`` at N = 50,000 images (a child process; vs the N x N floats a
  dense matrix would need);
- regularized vs baseline classifier training step time (ratio; goal <= 1.5), at the paper's width
  (64) and at the CPU demo's (``--width``, 16), for both designs of a step's stimulus pairs;
- robustness evaluation throughput (noise evaluation, images/s).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import best_of, save

PARTS = ("throughput", "peak", "step", "noise")


def population(n: int, d: int, seed: int = 0) -> np.ndarray:
    from pipeline.similarity import population_vectors

    return population_vectors(np.random.default_rng(seed).gamma(1.0, 1.0, size=(n, d)).astype(np.float32))


def throughput(n: int, d: int) -> dict:
    from pipeline.similarity import write_similarity

    vectors = population(n, d)
    x = torch.from_numpy(vectors)

    def ours():
        with tempfile.TemporaryDirectory() as tmp:
            write_similarity([vectors], Path(tmp) / "s", progress=False)

    def matmul():
        return x @ x.T

    t_ours, t_matmul = best_of(ours, 2), best_of(matmul, 2)
    return dict(
        similarity_n=n,
        similarity_units=d,
        similarity_seconds=t_ours,
        matmul_seconds=t_matmul,
        similarity_throughput_ratio=t_matmul / t_ours,
        similarity_pairs_per_second=n * (n - 1) / 2 / t_ours,
    )


def _peak_child(n: int, d: int) -> None:
    """Run in a child: write the N x N similarity blockwise and print the peak resident memory."""
    import resource

    vectors = population(n, d)
    from pipeline.similarity import write_similarity

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        store = write_similarity([vectors], Path(tmp) / "s", progress=False)
        seconds = time.perf_counter() - start
        check = store.rows([n - 1])[0, :10]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(
        json.dumps(dict(peak_bytes=peak, seconds=seconds, input_bytes=vectors.nbytes, check=float(np.abs(check).sum())))
    )


def peak_memory(n: int, d: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_similarity", "--peak-child", str(n), str(d)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    dense = n * n * 4
    return dict(
        peak_n=n,
        peak_units=d,
        peak_resident_gib=result["peak_bytes"] / 2**30,
        peak_input_gib=result["input_bytes"] / 2**30,
        dense_matrix_gib=dense / 2**30,
        peak_over_dense=result["peak_bytes"] / dense,
        peak_write_seconds=result["seconds"],
    )


def step_time(width: int, steps: int, device: str = "cpu") -> dict:
    """Seconds per classification step of a baseline and a regularized (alpha 20) ResNet18 of ``width``.

    A regularized step adds the similarity term in the same single update, with either design of
    its stimulus pairs: the paper's 16 independent pairs (32 stimulus images through the network)
    or every pair among 16 images (120 pairs, ``pair_images=16``; what the experiment and the demo
    use).  The baseline runs before and after the regularized arms and its faster run counts; each
    arm keeps its best of two runs.
    """
    from pipeline.classifier.train import ClassifierConfig, build_classifier, fit_classifier

    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.random((64 * (steps + 2), 1, 32, 32), dtype=np.float32))
    labels = torch.from_numpy(rng.integers(0, 10, len(images)))
    stimuli = torch.from_numpy(rng.random((200, 1, 32, 32), dtype=np.float32))
    vectors = population(200, 50)
    target = vectors @ vectors.T
    arms = (
        ("baseline", dict(control="none", alpha=0.0)),
        ("paper_pairs", dict(control="neural", alpha=20.0)),
        ("all_pairs", dict(control="neural", alpha=20.0, pair_images=16)),
        ("baseline_again", dict(control="none", alpha=0.0)),
    )
    times = {}
    for name, changes in arms:
        config = ClassifierConfig.from_dict(
            dict(width=width, epochs=1, max_steps_per_epoch=steps, holdout_fraction=0.0, **changes)
        )

        def run(config=config):
            fit_classifier(
                build_classifier(config), images, labels, stimuli, target, config, device=device, progress=False
            )

        times[name] = best_of(run, 2) / steps
    baseline = min(times["baseline"], times["baseline_again"])
    return dict(
        width=width,
        baseline_step_seconds=baseline,
        paper_pairs_step_seconds=times["paper_pairs"],
        all_pairs_step_seconds=times["all_pairs"],
        paper_pairs_over_baseline_step=times["paper_pairs"] / baseline,
        all_pairs_over_baseline_step=times["all_pairs"] / baseline,
    )


def robustness_throughput(width: int, n: int = 256, device: str = "cpu") -> dict:
    from pipeline.classifier import robustness
    from pipeline.classifier.resnet import ResNet18

    model = ResNet18(width=width).eval()
    images = torch.rand(n, 1, 32, 32)
    labels = torch.randint(0, 10, (n,))
    start = time.perf_counter()
    rows = robustness.noise_accuracy(model.to(device), images, labels, device=device)
    seconds = time.perf_counter() - start
    evaluated = n * len(rows)
    return dict(noise_images_evaluated=evaluated, noise_images_per_second=evaluated / seconds)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=12000, help="images for the throughput comparison")
    parser.add_argument("--units", type=int, default=1000)
    parser.add_argument("--peak-n", type=int, default=50000)
    parser.add_argument("--peak-units", type=int, default=256)
    parser.add_argument("--width", type=int, default=16, help="ResNet width of the demo-size step and noise timings")
    parser.add_argument("--only", nargs="+", choices=PARTS, help="measure only these parts")
    parser.add_argument("--peak-child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.peak_child:
        _peak_child(*args.peak_child)
        return {}
    torch.manual_seed(0)
    figures = dict(torch_threads=torch.get_num_threads(), cpu_count=os.cpu_count())
    wanted = set(args.only or PARTS)
    if "throughput" in wanted:
        figures.update(throughput(args.n, args.units))
    if "peak" in wanted:
        figures.update(peak_memory(args.peak_n, args.peak_units))
    if "step" in wanted:
        # The goal holds at both widths: the paper's (64) and the CPU demo's, where small-batch overheads show.
        figures["step_paper_width"] = step_time(64, steps=4)
        figures["step_demo_width"] = step_time(args.width, steps=10)
    if "noise" in wanted:
        figures.update(robustness_throughput(args.width))
    save("similarity" if args.only is None else "similarity-" + "-".join(args.only), figures)
    return figures


if __name__ == "__main__":
    main()
