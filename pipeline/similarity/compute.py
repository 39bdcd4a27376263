"""The scan-averaged cosine similarity matrix, written blockwise into a store.

The regularization target of the neurally regularized classifiers is a matrix ``S`` over stimulus
images whose entry ``S[i, j]`` is the cosine between the population response vectors of images
``i`` and ``j`` (:mod:`pipeline.similarity.vectors`), averaged over scans.

Averaging over scans: with unit-length rows ``X_k`` (N, d_k) per scan,
``mean_k X_k X_k^T == Z Z^T`` for ``Z = [X_1, ..., X_K] / sqrt(K)``.  :func:`write_similarity`
computes exactly this Gram matrix, one block of rows at a time, accumulating the per-scan products
into one block buffer so that neither the concatenation nor the N x N matrix is ever held in memory
(peak ~ ``block_rows * N`` floats on top of the inputs).

Controls: :func:`single_trial_similarity` (raw single-trial responses instead of denoised
predictions) and :func:`pixel_similarity` (cosine of centred pixel vectors).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch

from pipeline.device import resolve_device
from pipeline.progress import progress_bar
from pipeline.similarity.pairs import DTYPES, FORMAT_VERSION, MANIFEST, SimilarityStore, block_name
from pipeline.similarity.vectors import SimilarityError, check_scans, pixel_vectors, single_trial_vectors


def write_similarity(
    vectors_per_scan: Sequence[np.ndarray],
    out_dir: str | Path,
    block_rows: int = 1024,
    dtype: type | str = np.float16,
    device: str | torch.device | None = None,
    progress: bool = True,
    metadata: dict | None = None,
) -> SimilarityStore:
    """Write the scan-averaged cosine similarity matrix as row blocks.

    Parameters
    ----------
    vectors_per_scan : list of K arrays (N, d_k), unit-length rows (see
        :func:`~pipeline.similarity.vectors.population_vectors`), the same N images in the same order
        in every scan.
    out_dir : folder to create; it must not exist or be empty.
    block_rows : rows per block file; peak memory is about ``block_rows * N * 4`` bytes (plus the
        inputs, and on CUDA the inputs once more on the device).
    dtype : storage dtype, float16 (default; cosines in [-1, 1] keep ~3 significant digits) or float32.
    device : where the matrix products run; CUDA when available by default.
    metadata : extra JSON-able entries stored in the manifest under ``"metadata"``.

    Returns
    -------
    The :class:`SimilarityStore` of ``out_dir``: ``S = mean_k X_k X_k^T``.
    """
    scans = check_scans(vectors_per_scan)
    dtype_name = np.dtype(dtype).name
    if dtype_name not in DTYPES:
        raise SimilarityError(f"dtype must be float16 or float32, got {dtype_name}")
    if int(block_rows) < 1:
        raise SimilarityError(f"block_rows must be >= 1, got {block_rows}")
    block_rows = int(block_rows)
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise SimilarityError(f"{out_dir} is not empty; refusing to overwrite a similarity store")
    out_dir.mkdir(parents=True, exist_ok=True)

    device = resolve_device(device)
    n, k_scans = scans[0].shape[0], len(scans)
    n_blocks = -(-n // block_rows)
    # Z Z^T with Z = [X_1..X_K]/sqrt(K) is accumulated as (sum_k X_k[rows] X_k^T) / K, so the
    # concatenation is never built; on CPU the operands are zero-copy views of the inputs.
    scans_t = [torch.from_numpy(v).to(device) for v in scans]
    # One host buffer, allocated by numpy, receives every block: this is the memory bound.
    host = np.empty((min(block_rows, n), n), dtype=np.float32)
    on_cpu = device.type == "cpu"
    work = torch.from_numpy(host) if on_cpu else torch.empty(host.shape, dtype=torch.float32, device=device)

    with torch.no_grad():
        for b in progress_bar(range(n_blocks), desc="similarity blocks", enabled=progress):
            lo, hi = b * block_rows, min((b + 1) * block_rows, n)
            out = work[: hi - lo]
            torch.matmul(scans_t[0][lo:hi], scans_t[0].T, out=out)
            for x in scans_t[1:]:
                out.addmm_(x[lo:hi], x.T)
            if k_scans > 1:
                out.div_(k_scans)
            if not on_cpu:
                torch.from_numpy(host[: hi - lo]).copy_(out)
            np.save(out_dir / block_name(b), host[: hi - lo].astype(DTYPES[dtype_name], copy=False))

    manifest = {
        "format_version": FORMAT_VERSION,
        "n": n,
        "block_rows": block_rows,
        "n_blocks": n_blocks,
        "dtype": dtype_name,
        "n_scans": k_scans,
        "dims": [int(v.shape[1]) for v in scans],
        "metadata": metadata or {},
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return SimilarityStore(out_dir)


def single_trial_similarity(
    scans: Sequence[tuple[np.ndarray, np.ndarray]],
    image_ids: np.ndarray,
    out_dir: str | Path,
    unit_scales: Sequence[np.ndarray | None] | None = None,
    mode: Literal["random_trial", "mean"] = "random_trial",
    seed: int = 0,
    **write_kwargs,
) -> SimilarityStore:
    """Similarity store of the raw single-trial control.

    Parameters
    ----------
    scans : per scan a pair ``(responses (n_trials, n_units), trial_image_ids (n_trials,))``.
    image_ids : (N,) images of the matrix, in row order; every scan must have a trial of each.
    unit_scales : per scan a (n_units,) weight or None; None for no scaling anywhere.
    mode, seed : see :func:`~pipeline.similarity.vectors.single_trial_vectors`; scan ``k`` draws its trials with seed
        ``(seed, k)`` so scans draw independently.
    write_kwargs : passed to :func:`write_similarity`.
    """
    if unit_scales is None:
        unit_scales = [None] * len(scans)
    if len(unit_scales) != len(scans):
        raise SimilarityError(f"{len(unit_scales)} unit_scales for {len(scans)} scans")
    vectors = [
        single_trial_vectors(r, t, image_ids, s, mode=mode, seed=(seed, k))
        for k, ((r, t), s) in enumerate(zip(scans, unit_scales))
    ]
    meta = {"control": "single_trial", "mode": mode, "seed": seed, **write_kwargs.pop("metadata", {})}
    return write_similarity(vectors, out_dir, metadata=meta, **write_kwargs)


def pixel_similarity(
    images: np.ndarray, out_dir: str | Path, lowpass_sigma: float = 0.0, **write_kwargs
) -> SimilarityStore:
    """Similarity store of the pixel-space control, or with ``lowpass_sigma`` > 0 of blurred images.

    Each pixel plays the role of a unit: pixels are centred across images and each image's centred
    pixel vector is normalised, so ``S[i, j]`` is the cosine of the mean-subtracted images.  The
    low-pass version (a Gaussian blur of ``lowpass_sigma`` pixels first) is the positive control of
    the robustness experiment: a target that pixel noise barely changes, by construction.

    Parameters
    ----------
    images : (N, H, W) grayscale images (any units; the cosine is scale-free).
    write_kwargs : passed to :func:`write_similarity`.
    """
    vectors = pixel_vectors(images, lowpass_sigma)
    meta = {
        "control": "lowpass" if lowpass_sigma else "pixel",
        "lowpass_sigma": float(lowpass_sigma),
        **write_kwargs.pop("metadata", {}),
    }
    return write_similarity([vectors], out_dir, metadata=meta, **write_kwargs)
