"""The GPU check: one script, under 5 minutes on one GPU, for the day a GPU machine is lent.

``python -m benchmarks.gpu_check`` (``--device cuda:0`` by default) measures, on that device:

- **the torch path of every torch-computing table**, each against the same call on the CPU:
  ``TrainedModel`` (an encoder fitted on the ``tiny`` simulated scan: test correlation on both
  devices), ``DenoisedResponses`` (ensemble predictions: largest relative difference),
  ``Similarity`` (blockwise cosine similarity: largest absolute difference), ``TrainedClassifier``
  (a regularized ResNet18 fitted for a few steps: it runs and its loss is finite),
  ``NoiseEvaluation`` (accuracy under noise of one network on both devices) and, when foolbox is
  installed, ``AttackEvaluation`` (minimal perturbations of a few images);
- **the worker path**, only where a database is configured (``DJ_HOST``): the quick demo's tasks
  computed by ``python -m populate worker --device cuda:0``;
- **the regularized/baseline step ratio at width 64** and **noise-evaluation images/s**
  (:mod:`benchmarks.bench_similarity`'s measurements, on the device).

Results: ``benchmarks/results/gpu_check.json`` (``gpu_check-cpu.json`` for a dry run with
``--device cpu``, which checks the script itself on a machine without a GPU).  The GPU image has
torch, numpy, scipy and scikit-image; ``pipeline/`` needs nothing else, so the table paths and the
ratios run without DataJoint or a database.
"""

from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
import time

import numpy as np
import torch

from benchmarks.bench_similarity import robustness_throughput, step_time
from benchmarks.common import save


def _encoder_data():
    from pipeline import stats
    from pipeline.data.dataset import ScanTensors
    from pipeline.data.simulate import simulate

    recording = simulate("tiny", seed=0)
    return ScanTensors.from_recording(recording, stats.normalization_stats(recording), (18, 32))


def encoder_paths(device: str) -> dict:
    """TrainedModel and DenoisedResponses: fit one encoder on ``device`` and on the CPU; compare."""
    from pipeline.models import denoise, experiment
    from pipeline.models.encoder import ModelConfig
    from pipeline.models.training import TrainerConfig

    data = _encoder_data()
    model_config = ModelConfig.from_dict(dict(core=dict(kind="rotation", features=4, kernel_sizes=(9, 5, 5))))
    trainer = TrainerConfig(max_iterations=200, eval_every=50, patience=10, batch_size=64)
    fitted = {d: experiment.run(model_config, trainer, data, seed=0, device=d, progress=False) for d in (device, "cpu")}
    images = data.images[:256]
    cpu_model = fitted["cpu"].model.cpu()
    on_device = denoise.ensemble_predict([copy.deepcopy(cpu_model).to(device)], images)
    on_cpu = denoise.ensemble_predict([cpu_model], images)
    return dict(
        encoder_test_correlation={d: float(np.nanmean(r.test.correlation)) for d, r in fitted.items()},
        encoder_seconds={d: r.seconds for d, r in fitted.items()},
        denoise_max_relative_difference=float(np.abs(on_device - on_cpu).max() / np.abs(on_cpu).max()),
    )


def similarity_path(device: str, tmp: str) -> dict:
    """Similarity: the blockwise cosine similarity of 2,000 images on ``device`` against the CPU."""
    from pipeline.similarity.compute import write_similarity

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((2000, 64)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    on_device, on_cpu = (
        write_similarity([vectors], os.path.join(tmp, name), dtype=np.float32, device=d, progress=False)
        for name, d in (("device", device), ("cpu", "cpu"))
    )
    rows = np.arange(0, 2000, 97)
    difference = np.abs(on_device.rows(rows) - on_cpu.rows(rows)).max()
    return dict(similarity_max_abs_difference=float(difference))


def classifier_paths(device: str) -> dict:
    """TrainedClassifier and NoiseEvaluation: a regularized fit on ``device``; noise accuracy on both."""
    from pipeline.classifier import robustness
    from pipeline.classifier.train import ClassifierConfig, build_classifier, fit_classifier

    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.random((640, 1, 32, 32), dtype=np.float32))
    labels = torch.from_numpy(rng.integers(0, 10, len(images)))
    stimuli = torch.from_numpy(rng.random((100, 1, 32, 32), dtype=np.float32))
    vectors = rng.standard_normal((100, 20))
    target = np.corrcoef(vectors)
    config = ClassifierConfig.from_dict(dict(width=16, epochs=1, control="neural", alpha=5.0, holdout_fraction=0.1))
    model = build_classifier(config)
    fit = fit_classifier(model, images, labels, stimuli, target, config, device=device, progress=False)
    model = model.cpu().eval()
    noise = {
        d: robustness.noise_accuracy(model.to(d), images[:256], labels[:256], kinds=("gaussian",), device=d)
        for d in ("cpu", device)
    }
    checks = dict(
        classifier_final_train_loss=float(fit.history[-1]["train_loss"]),
        noise_accuracy_max_difference=max(
            abs(a["accuracy"] - b["accuracy"]) for a, b in zip(noise["cpu"], noise[device])
        ),
    )
    checks.update(attack_path(model.to(device), images[:8], labels[:8], device))
    return checks


def attack_path(model, images, labels, device: str) -> dict:
    """AttackEvaluation: minimal L2 perturbations of a few images, where foolbox is installed."""
    from pipeline.classifier import attacks

    try:
        attacks.import_foolbox()
    except ImportError as error:
        return dict(attack="skipped: " + str(error).splitlines()[0])
    distances = attacks.minimal_perturbations(model, images, labels, "l2", [10], device=device)
    return dict(attack_finite_fraction=float(np.isfinite(distances).mean()))


def worker_path(device: str) -> dict:
    """The quick demo's tasks through a real worker on ``device``; needs a database (``DJ_HOST``)."""
    if not os.environ.get("DJ_HOST"):
        return dict(worker="skipped: no database configured (DJ_HOST)")
    python = sys.executable
    subprocess.run([python, "-m", "populate", "setup"], check=True)
    subprocess.run([python, "-c", "from populate.cli import demo; demo.declare_tasks(quick=True)"], check=True)
    start = time.perf_counter()
    worker = subprocess.run([python, "-m", "populate", "worker", "--device", device, "--idle-exit", "10"])
    status = subprocess.run([python, "-m", "populate", "status"], capture_output=True, text=True)
    return dict(
        worker_exit=worker.returncode, worker_seconds=time.perf_counter() - start, worker_status=status.stdout[-2000:]
    )


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda:0", help="the device to check (cpu: a dry run of this script)")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"{args.device} is not available here; `--device cpu` checks the script itself")
    import tempfile

    figures: dict = dict(device=args.device, torch=torch.__version__)
    if args.device.startswith("cuda"):
        figures["gpu"] = torch.cuda.get_device_name(torch.device(args.device))
    figures.update(encoder_paths(args.device))
    with tempfile.TemporaryDirectory() as tmp:
        figures.update(similarity_path(args.device, tmp))
    figures.update(classifier_paths(args.device))
    figures["step_paper_width"] = step_time(64, steps=4 if args.device == "cpu" else 20, device=args.device)
    figures.update(robustness_throughput(64, device=args.device))
    figures.update(worker_path(args.device))
    save("gpu_check" + ("-cpu" if args.device == "cpu" else ""), figures)
    return figures


if __name__ == "__main__":
    main()
