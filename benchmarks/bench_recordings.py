"""Recordings at Sensorium size (~6000 trials x ~8000 units, 144x256 images).

- response loading: one scan's response matrix from the database into a torch tensor, vs ``np.load``
  of the same array from local disk (ratio = baseline time / ours; goal >= 0.5);
- import throughput of a Sensorium-format folder (read, validate, insert), trials/s.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import best_of, private_database, save


def sensorium_sized(n_trials: int, n_units: int, seed: int = 0):
    """A Recording with the real trial design: unique train/validation images plus 100 test images x 10."""
    from pipeline.data.recording import Recording

    rng = np.random.default_rng(seed)
    n_test_images, repeats = 100, 10
    n_once = n_trials - n_test_images * repeats
    image_ids = np.arange(n_once + n_test_images, dtype=np.int64) + 1000
    trial_images = np.concatenate([image_ids[:n_once], np.repeat(image_ids[n_once:], repeats)])
    tiers = np.array(
        ["train"] * int(n_once * 0.9)
        + ["validation"] * (n_once - int(n_once * 0.9))
        + ["test"] * (n_test_images * repeats)
    )
    order = rng.permutation(n_trials)
    return Recording(
        animal_id=99,
        session=1,
        scan_idx=1,
        images=rng.integers(0, 256, size=(len(image_ids), 144, 256)).astype(np.float32),
        image_ids=image_ids,
        trial_idx=np.arange(n_trials, dtype=np.int64)[order],
        trial_image_ids=trial_images[order],
        tiers=tiers[order],
        responses=rng.gamma(0.5, 1.0, size=(n_trials, n_units)).astype(np.float32),
        withheld=np.zeros(n_trials, bool),
        behavior=rng.random((n_trials, 3)).astype(np.float32),
        pupil_center=rng.random((n_trials, 2)).astype(np.float32),
        unit_ids=np.arange(1, n_units + 1, dtype=np.int64),
        unit_area=np.array(["V1"] * n_units),
        unit_layer=np.array(["L2/3"] * n_units),
        unit_xyz=rng.random((n_units, 3)).astype(np.float32),
    )


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=6000)
    parser.add_argument("--units", type=int, default=8000)
    args = parser.parse_args(argv)

    from pipeline.data.sensorium import write_sensorium
    from populate import ingest

    with tempfile.TemporaryDirectory() as tmp, private_database("recordings"):
        from schemas.recordings import Scan

        recording = sensorium_sized(args.trials, args.units)
        folder = write_sensorium(recording, Path(tmp) / "static99-1-1-GrayImageNet-bench")
        start = time.perf_counter()
        key, inserted = ingest.import_sensorium(folder)
        import_seconds = time.perf_counter() - start
        assert inserted

        local = Path(tmp) / "responses.npy"
        np.save(local, recording.responses)
        scan = Scan & key

        def ours():
            return torch.from_numpy(scan.responses())

        def baseline():
            return torch.from_numpy(np.load(local))

        assert torch.equal(ours(), baseline())
        t_ours, t_base = best_of(ours, 5), best_of(baseline, 5)
        figures = dict(
            trials=args.trials,
            units=args.units,
            matrix_megabytes=recording.responses.nbytes / 2**20,
            load_seconds_database=t_ours,
            load_seconds_np_load=t_base,
            load_ratio_np_over_database=t_base / t_ours,
            import_seconds=import_seconds,
            import_trials_per_second=args.trials / import_seconds,
        )
    save("recordings", figures)
    return figures


if __name__ == "__main__":
    main()
