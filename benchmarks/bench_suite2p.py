"""Simulated two-photon movie -> real suite2p -> window extraction, scored against the ground truth.

Per seed and movie condition:
- recovered: fraction of simulated neurons matched one-to-one by a detected ROI that the classifier
  keeps (iscell probability >= 0.5) with footprint overlap (IoU) >= 0.3;
- r_activity: median over recovered neurons of the correlation, across trials, between the
  imported response and the activity that drove the movie (the single-trial response);
- r_rates: the same against the simulated noise-free rate of the image shown on each trial (bounded
  by the trial-to-trial noise of the simulated scan, not by the imaging: ``r_rates_ceiling`` is the
  activity itself against the rates);
- precision: fraction of the kept ROIs that are matched to a simulated neuron;
for the deconvolved (``spikes``) and the ΔF/F extraction.  Conditions: ``clean`` (the default movie)
and ``hard`` (motion of up to 3 pixels, half the photons, dimmer cells).

Run: ``python -m benchmarks.bench_suite2p [--seeds 0 1 2] [--conditions clean hard]``; about 1.5 min
of suite2p for the first movie on 2 cores (numba compiles), 15-30 s for each further one.  No database
needed.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import save

CONDITIONS = {
    "clean": {},
    "hard": dict(motion_pixels=3, photons_per_unit=0.5, brightness=(80.0, 200.0)),
}


def score(seed: int, condition: str, workdir: Path) -> dict[str, float]:
    from pipeline.data.extraction import ExtractionConfig, extract
    from pipeline.data.movie import MovieConfig, match_rois, simulate_movie, write_movie_folder
    from pipeline.data.suite2p import read_schedule, read_suite2p, run_suite2p

    sim = simulate_movie(MovieConfig(**CONDITIONS[condition]), seed=seed)
    paths = write_movie_folder(sim, workdir)
    start = time.perf_counter()
    run_suite2p(paths["movie"], workdir, sim.frame_rate)
    seconds = time.perf_counter() - start
    traces = read_suite2p(workdir / "suite2p")
    schedule = read_schedule(paths["stimuli"], paths["images"], paths["behavior"])
    order = np.argsort(sim.onset_frames, kind="stable")
    activity = sim.recording.responses[order]
    slot = {int(i): k for k, i in enumerate(sim.recording.image_ids)}
    rates = sim.recording.ground_truth.rates[[slot[int(i)] for i in schedule.image_id]]
    figures = dict(suite2p_seconds=seconds, n_rois=len(traces.footprints))
    for signal in ("spikes", "dff"):
        recording, footprints = extract(
            traces, schedule, ExtractionConfig(signal=signal), dict(animal_id=1, session=1, scan_idx=1)
        )
        shape = sim.movie.shape[1:]
        match, _ = match_rois(sim.footprints, [p[:, :2].astype(int) for p in footprints.pixels], shape)
        found = np.flatnonzero(match >= 0)
        figures["recovered"] = len(found) / len(match)
        figures["n_units"] = recording.n_units
        figures["precision"] = len(found) / recording.n_units  # kept ROIs that are a simulated neuron
        for name, truth in (("activity", activity), ("rates", rates)):
            r = [np.corrcoef(recording.responses[:, match[u]], truth[:, u])[0, 1] for u in found]
            figures[f"r_{name}_{signal}"] = float(np.median(r)) if r else float("nan")
    # the ceiling of r_rates: the simulated activity itself against the rates (trial-to-trial noise)
    figures["r_rates_ceiling"] = float(
        np.median([np.corrcoef(activity[:, u], rates[:, u])[0, 1] for u in range(len(match))])
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--conditions", nargs="+", choices=sorted(CONDITIONS), default=["clean", "hard"])
    args = parser.parse_args()
    results = {}
    for condition in args.conditions:
        runs = []
        for seed in args.seeds:
            with tempfile.TemporaryDirectory(prefix="bench-suite2p-") as workdir:
                runs.append(score(seed, condition, Path(workdir)))
            print(f"{condition} seed {seed}: " + ", ".join(f"{k} {v:.3g}" for k, v in runs[-1].items()), flush=True)
        for key in runs[0]:
            values = np.array([run[key] for run in runs], float)
            results[f"{condition}_{key}_mean"] = float(values.mean())
            results[f"{condition}_{key}_min"] = float(values.min())
            results[f"{condition}_{key}_max"] = float(values.max())
    results["seeds"] = " ".join(map(str, args.seeds))
    save("suite2p", results)


if __name__ == "__main__":
    main()
