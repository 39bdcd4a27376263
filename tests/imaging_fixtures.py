"""A suite2p output folder made from a simulated movie without running suite2p (fast), for import tests.

Traces are what suite2p's extraction computes from known footprints: F the footprint-weighted mean
of the movie, Fneu the mean of a ring around the ROI, spks the simulated activity itself (a perfect
deconvolution).  Two extra ROIs on empty background carry a low cell probability.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np
from scipy import ndimage

from pipeline.data.movie import MovieSimulation, simulate_movie, write_movie_folder


def _roi_pixels(footprint: np.ndarray, threshold: float = 0.2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y, x = np.nonzero(footprint >= threshold * footprint.max())
    lam = footprint[y, x].astype(np.float32)
    return y.astype(np.int32), x.astype(np.int32), lam / lam.sum()


def write_fake_suite2p(sim: MovieSimulation, out: Path) -> Path:
    """Write ``out/suite2p/plane0`` for ``sim``; returns ``out/suite2p``."""
    plane = Path(out) / "suite2p" / "plane0"
    plane.mkdir(parents=True, exist_ok=True)
    movie = sim.movie.reshape(sim.n_frames, -1).astype(np.float32)
    shape = sim.movie.shape[1:]
    footprints = list(sim.footprints)
    rng = np.random.default_rng(0)
    for _ in range(2):  # non-cells: blobs on background, away from the neurons
        blob = np.zeros(shape, np.float32)
        while True:
            cy, cx = rng.uniform(4, np.array(shape) - 4)
            if np.hypot(*(sim.centres - (cy, cx)).T).min() > 9:
                break
        yy, xx = np.mgrid[: shape[0], : shape[1]]
        blob[:] = np.exp(-0.5 * ((yy - cy) ** 2 + (xx - cx) ** 2) / 2.0**2)
        footprints.append(blob)
    stat, F, Fneu = [], [], []
    cells = np.zeros(shape, bool)
    for fp in sim.footprints:
        cells |= fp > 0
    for fp in footprints:
        y, x, lam = _roi_pixels(fp)
        mask = np.zeros(shape, bool)
        mask[y, x] = True
        ring = ndimage.binary_dilation(mask, iterations=6) & ~ndimage.binary_dilation(mask, iterations=2) & ~cells
        stat.append(dict(ypix=y, xpix=x, lam=lam, med=[int(np.median(y)), int(np.median(x))], npix=len(y)))
        F.append(movie[:, np.ravel_multi_index((y, x), shape)] @ lam)
        Fneu.append(movie[:, ring.ravel()].mean(axis=1))
    n_cells = len(sim.footprints)
    spks = np.concatenate([sim.activity, np.zeros((len(footprints) - n_cells, sim.n_frames), np.float32)])
    iscell = np.array([[1.0, 0.9]] * n_cells + [[0.0, 0.1]] * (len(footprints) - n_cells))
    np.save(plane / "F.npy", np.array(F, np.float32))
    np.save(plane / "Fneu.npy", np.array(Fneu, np.float32))
    np.save(plane / "spks.npy", spks.astype(np.float32))
    np.save(plane / "iscell.npy", iscell)
    np.save(plane / "stat.npy", np.array(stat, dtype=object), allow_pickle=True)
    np.save(
        plane / "ops.npy",
        np.array(dict(fs=float(sim.frame_rate), neucoeff=0.7, Ly=shape[0], Lx=shape[1]), dtype=object),
        allow_pickle=True,
    )
    return plane.parent


def fake_imaging_folder(out: Path, seed: int = 0) -> tuple[MovieSimulation, dict[str, Path]]:
    """A simulated movie's stimulus files plus a fake suite2p folder (``paths['suite2p']``)."""
    sim = simulate_movie(seed=seed)
    paths = write_movie_folder(sim, out)
    paths["suite2p"] = write_fake_suite2p(sim, out)
    return sim, paths


@functools.lru_cache(maxsize=None)
def shared_imaging_folder(seed: int) -> tuple[MovieSimulation, dict[str, Path]]:
    """:func:`fake_imaging_folder` made once per test session and seed (tests must not modify it)."""
    root = Path(tempfile.mkdtemp(prefix=f"imaging-{seed}-"))
    atexit.register(shutil.rmtree, root, True)
    return fake_imaging_folder(root, seed)
