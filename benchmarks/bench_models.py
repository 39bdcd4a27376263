"""Predictive models: pipeline overhead, core cost, data loading.

- ``TrainedModel.populate`` wall time vs the same training as a bare PyTorch loop on the same data
  and device (overhead = ours / bare - 1; goal <= 5%);
- rotation-equivariant vs CNN core forward+backward time at equal feature maps (ratio);
- training throughput with data loading vs the model step alone on ready batches (goal >= 0.9).
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
import torch

from benchmarks.common import best_of, private_database, save

SCAN = "5-1-1"


def bare_loop(model_config, data, iterations: int, eval_every: int, batch_size: int, seed: int) -> float:
    """The same optimisation written plainly: Adam, Poisson loss + regularizers, periodic validation."""
    from pipeline.models.encoder import build_encoder

    start = time.perf_counter()
    torch.manual_seed(seed)
    train, validation = data.split("train"), data.split("validation")
    model = build_encoder(model_config, data.n_units, data.image_shape, mean_responses=train.mean_responses())
    optimizer = torch.optim.Adam(model.parameters(), lr=0.002)
    generator = torch.Generator().manual_seed(seed)
    for iteration in range(1, iterations + 1):
        rows = torch.randint(len(train), (batch_size,), generator=generator)
        rates = model(train.images[rows], train.behavior[rows], train.pupil_center[rows])
        target = train.responses[rows]
        loss = (rates - target * torch.log(rates + 1e-5)).sum(dim=1).mean() + model.regularizer()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if iteration % eval_every == 0:
            model.eval()
            with torch.no_grad():
                pred = model(validation.images, validation.behavior, validation.pupil_center)
            np.corrcoef(pred.T.numpy(), validation.responses.T.numpy())
            model.train()
    return time.perf_counter() - start


def populate_overhead(iterations: int) -> dict:
    from pipeline.models.encoder import ModelConfig
    from populate import ingest
    from schemas.models import TrainedModel, TrainingTask, load_scan_tensors
    from schemas.stats import Normalization, Reliability

    ingest.simulate("demo", seed=0, scan=SCAN)
    Reliability.populate()
    Normalization.populate()
    model = dict(core=dict(kind="rotation", features=4, rotations=8, kernel_sizes=(9, 5, 5)))
    batch_size, eval_every = 128, 50
    # patience high: both run exactly `iterations` steps
    trainer = dict(max_iterations=iterations, eval_every=eval_every, patience=10**6, batch_size=batch_size)
    dataset = dict(scan=SCAN, image_shape=(18, 32))
    task = TrainingTask.add(model=model, dataset=dataset, trainer=trainer, seeds=(0,))[0]
    data = load_scan_tensors(ingest.parse_scan(SCAN), (18, 32))

    start = time.perf_counter()
    TrainedModel.populate(task, display_progress=False)
    ours = time.perf_counter() - start
    bare = bare_loop(ModelConfig.from_dict(model), data, iterations, eval_every, batch_size, seed=0)
    return dict(
        populate_seconds=ours,
        bare_loop_seconds=bare,
        populate_overhead=ours / bare - 1,
        iterations=iterations,
        device="cpu",
        torch_threads=torch.get_num_threads(),
    )


def core_cost(features: int, rotations: int, batch: int) -> dict:
    from pipeline.models.cores import CoreConfig, build_core

    images = torch.randn(batch, 1, 36, 64)
    times = {}
    for kind, n in (("rotation", features), ("cnn", features * rotations)):
        core = build_core(CoreConfig(kind=kind, features=n, rotations=rotations))

        def step(core=core):
            core.zero_grad()
            (core(images).square().mean() + core.regularizer()).backward()

        step()
        times[kind] = best_of(step, 3)
    return dict(
        core_features=features,
        core_rotations=rotations,
        core_batch=batch,
        rotation_step_seconds=times["rotation"],
        cnn_step_seconds=times["cnn"],
        rotation_over_cnn_time=times["rotation"] / times["cnn"],
    )


def loading_share(batch_size: int = 128, steps: int = 40) -> dict:
    from pipeline.models.encoder import ModelConfig, build_encoder
    from schemas.models import load_scan_tensors

    data = load_scan_tensors(dict(animal_id=5, session=1, scan_idx=1), (18, 32)).split("train")
    model = build_encoder(
        ModelConfig.from_dict(dict(core=dict(kind="cnn", features=32, kernel_sizes=(9, 5, 5)))),
        data.n_units,
        data.image_shape,
    )
    optimizer = torch.optim.Adam(model.parameters())

    def step(batch):
        rates = model(batch.images, batch.behavior, batch.pupil_center)
        loss = (rates - batch.responses * torch.log(rates + 1e-5)).sum(1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def loaded(seed: int):
        generator = torch.Generator().manual_seed(seed)
        return itertools.islice(data.batches(batch_size, shuffle=True, generator=generator), steps)

    # The same batches, materialised beforehand, so that both runs step on the same data: stepping on
    # one batch over and over measured 3x slower than on fresh batches and made loading look free.
    ready = list(loaded(0))

    def with_loading():
        for batch in loaded(0):
            step(batch)

    def step_alone():
        for batch in ready:
            step(batch)

    alone, loading = best_of(step_alone, 3), best_of(with_loading, 3)
    return dict(
        loading_batch=batch_size,
        step_alone_seconds=alone,
        with_loading_seconds=loading,
        throughput_with_loading_over_step_alone=alone / loading,
    )


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=600)
    args = parser.parse_args(argv)
    with private_database("models"):
        figures = populate_overhead(args.iterations)
        figures.update(loading_share())
    figures.update(core_cost(features=16, rotations=8, batch=8))
    save("models", figures)
    return figures


if __name__ == "__main__":
    main()
