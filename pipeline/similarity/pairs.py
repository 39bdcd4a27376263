"""Representational similarity of neural populations (Li et al., NeurIPS 2019).

The regularization target of the neurally regularized classifiers is a matrix ``S`` over stimulus
images whose entry ``S[i, j]`` is the cosine between the population response vectors of images
``i`` and ``j``, averaged over scans.

Population vectors (:func:`population_vectors`): every unit's response is scaled by a per-unit
weight (the paper's ``w_a * v_a``: signal-to-noise ratio times prediction correlation, computed by
the caller), centred across images, and each image's vector is normalised to unit length.  The
cosine of two images is then a plain dot product.

Averaging over scans: with unit-length rows ``X_k`` (N, d_k) per scan,
``mean_k X_k X_k^T == Z Z^T`` for ``Z = [X_1, ..., X_K] / sqrt(K)``.  :func:`write_similarity`
computes exactly this Gram matrix, one block of rows at a time, accumulating the per-scan products
into one block buffer so that neither the concatenation nor the N x N matrix is ever held in memory
(peak ~ ``block_rows * N`` floats on top of the inputs).

Storage (:class:`SimilarityStore`): a folder with ``manifest.json`` and row blocks
``block_00000.npy, ...`` of shape (block_rows, N) (the last one may be shorter).  Blocks are opened
memory-mapped, so reading a few pairs or a small submatrix touches only those rows.  The manifest is
written last: a folder without it is an unfinished write.

Controls: :func:`single_trial_similarity` (raw single-trial responses instead of denoised
predictions), :func:`pixel_similarity` (cosine of centred pixel vectors) and
:meth:`SimilarityStore.shuffled` (the same matrix with image identities permuted, applied on read).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable, Literal, Sequence

import numpy as np
import torch

from pipeline.device import resolve_device
from pipeline.progress import progress_bar

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
_DTYPES = {"float16": np.float16, "float32": np.float32}


class SimilarityError(ValueError):
    """Inputs to a similarity computation are inconsistent, or a store folder is malformed."""


# --------------------------------------------------------------------------------------------------
# Population vectors
# --------------------------------------------------------------------------------------------------


def population_vectors(responses: np.ndarray, unit_scale: np.ndarray | None = None) -> np.ndarray:
    """Unit-length, centred population vectors of one scan.

    Parameters
    ----------
    responses : (n_images, n_units) responses (predicted or measured) of each unit to each image.
    unit_scale : (n_units,) per-unit weight (``w_a * v_a`` in the paper), or None for all ones.
        Only its square matters for cosines, so its sign is irrelevant.

    Returns
    -------
    (n_images, n_units) float32.  Each unit is scaled, then centred across images; each row is
    divided by its Euclidean norm.  Rows that are zero after centring (an image whose response
    equals the mean response) stay zero, so their cosine with every image is 0.
    """
    # One float64 working copy, modified in place (responses of 50,000 images are large).
    x = np.array(responses, dtype=np.float64)
    if x.ndim != 2:
        raise SimilarityError(f"responses must be (n_images, n_units), got shape {x.shape}")
    if x.shape[0] < 2:
        raise SimilarityError(f"need at least 2 images to centre units, got {x.shape[0]}")
    if not np.isfinite(x).all():
        raise SimilarityError("responses contain non-finite values")
    if unit_scale is not None:
        scale = np.asarray(unit_scale, dtype=np.float64)
        if scale.shape != (x.shape[1],):
            raise SimilarityError(f"unit_scale must have shape ({x.shape[1]},), got {scale.shape}")
        if not np.isfinite(scale).all():
            raise SimilarityError("unit_scale contains non-finite values")
        x *= scale
    x -= x.mean(axis=0, keepdims=True)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    # A row whose norm is at the rounding level of the centring is a zero vector, not a direction.
    tiny = 64 * np.finfo(np.float64).eps * max(float(np.abs(x).max(initial=0.0)), 1e-300) * math.sqrt(x.shape[1])
    zero = norm <= tiny
    x /= np.where(zero, 1.0, norm)
    x[zero[:, 0]] = 0.0
    return x.astype(np.float32)


def single_trial_vectors(
    responses: np.ndarray,
    trial_image_ids: np.ndarray,
    image_ids: np.ndarray,
    unit_scale: np.ndarray | None = None,
    mode: Literal["random_trial", "mean"] = "random_trial",
    seed: int | Sequence[int] = 0,
) -> np.ndarray:
    """Population vectors built from measured single-trial responses (the raw-data control).

    Parameters
    ----------
    responses : (n_trials, n_units) measured responses of one scan.
    trial_image_ids : (n_trials,) image shown on each trial.
    image_ids : (N,) the images, in the order of the output rows; each must have >= 1 trial.
    unit_scale : (n_units,) per-unit weight, or None.
    mode : ``"random_trial"`` (default, the paper's raw single-trial control) uses one trial per
        image, drawn uniformly with ``seed``; ``"mean"`` averages all trials of the image (equal to
        the single trial for images shown once, the repeat average for repeated images).
    seed : seed (or seed sequence) of the trial draw, for ``np.random.default_rng``.

    Returns
    -------
    (N, n_units) float32 vectors as from :func:`population_vectors`.
    """
    responses = np.asarray(responses)
    trial_image_ids = np.asarray(trial_image_ids)
    image_ids = np.asarray(image_ids)
    if responses.ndim != 2 or trial_image_ids.shape != (responses.shape[0],):
        raise SimilarityError(
            f"responses (n_trials, n_units) and trial_image_ids (n_trials,) disagree: "
            f"{responses.shape} vs {trial_image_ids.shape}"
        )
    if mode not in ("random_trial", "mean"):
        raise SimilarityError(f"mode must be 'random_trial' or 'mean', got {mode!r}")
    order = np.argsort(trial_image_ids, kind="stable")
    sorted_ids = trial_image_ids[order]
    start = np.searchsorted(sorted_ids, image_ids, side="left")
    stop = np.searchsorted(sorted_ids, image_ids, side="right")
    missing = image_ids[stop == start]
    if missing.size:
        raise SimilarityError(f"{missing.size} image(s) have no trial, e.g. id {missing[0]}")
    if mode == "random_trial":
        rng = np.random.default_rng(seed)
        pick = start + (rng.random(len(image_ids)) * (stop - start)).astype(np.int64)
        per_image = responses[order[pick]]
    else:
        per_image = np.stack([responses[order[a:b]].mean(axis=0, dtype=np.float64) for a, b in zip(start, stop)])
    return population_vectors(per_image, unit_scale)


# --------------------------------------------------------------------------------------------------
# Blockwise writing
# --------------------------------------------------------------------------------------------------


def _check_scans(vectors_per_scan: Sequence[np.ndarray]) -> list[np.ndarray]:
    if isinstance(vectors_per_scan, np.ndarray):
        raise SimilarityError("vectors_per_scan must be a list of (N, d_k) arrays, one per scan")
    scans = [np.ascontiguousarray(np.asarray(v, dtype=np.float32)) for v in vectors_per_scan]
    if not scans:
        raise SimilarityError("vectors_per_scan is empty")
    for k, v in enumerate(scans):
        if v.ndim != 2:
            raise SimilarityError(f"scan {k}: vectors must be (N, d), got shape {v.shape}")
        if v.shape[0] != scans[0].shape[0]:
            raise SimilarityError(
                f"scan {k} has {v.shape[0]} images, scan 0 has {scans[0].shape[0]}; "
                "all scans must describe the same images in the same order"
            )
        if not np.isfinite(v).all():
            raise SimilarityError(f"scan {k}: vectors contain non-finite values")
    return scans


def write_similarity(
    vectors_per_scan: Sequence[np.ndarray],
    out_dir: str | Path,
    block_rows: int = 1024,
    dtype: type | str = np.float16,
    device: str | torch.device | None = None,
    progress: bool = True,
    metadata: dict | None = None,
) -> "SimilarityStore":
    """Write the scan-averaged cosine similarity matrix as row blocks.

    Parameters
    ----------
    vectors_per_scan : list of K arrays (N, d_k), unit-length rows (see :func:`population_vectors`),
        the same N images in the same order in every scan.
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
    scans = _check_scans(vectors_per_scan)
    dtype_name = np.dtype(dtype).name
    if dtype_name not in _DTYPES:
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
            np.save(out_dir / _block_name(b), host[: hi - lo].astype(_DTYPES[dtype_name], copy=False))

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
) -> "SimilarityStore":
    """Similarity store of the raw single-trial control.

    Parameters
    ----------
    scans : per scan a pair ``(responses (n_trials, n_units), trial_image_ids (n_trials,))``.
    image_ids : (N,) images of the matrix, in row order; every scan must have a trial of each.
    unit_scales : per scan a (n_units,) weight or None; None for no scaling anywhere.
    mode, seed : see :func:`single_trial_vectors`; scan ``k`` draws its trials with seed
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


def lowpass(images: np.ndarray, sigma: float) -> np.ndarray:
    """(N, H, W) images blurred by a Gaussian of ``sigma`` pixels (reflecting edges); ``sigma`` 0: as is."""
    images = np.asarray(images, dtype=np.float64)
    if sigma == 0:
        return images
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(images, sigma=(0, sigma, sigma), mode="reflect")


def pixel_vectors(images: np.ndarray, lowpass_sigma: float = 0.0) -> np.ndarray:
    """(N, H * W) centred, unit-norm pixel vectors of (optionally low-pass filtered) images."""
    images = np.asarray(images)
    if images.ndim != 3:
        raise SimilarityError(f"images must be (N, H, W), got shape {images.shape}")
    if lowpass_sigma < 0:
        raise SimilarityError(f"lowpass_sigma must be >= 0, got {lowpass_sigma}")
    return population_vectors(lowpass(images, lowpass_sigma).reshape(len(images), -1))


def pixel_similarity(
    images: np.ndarray, out_dir: str | Path, lowpass_sigma: float = 0.0, **write_kwargs
) -> "SimilarityStore":
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


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------


def _block_name(b: int) -> str:
    return f"block_{b:05d}.npy"


def random_permutation(n: int, seed: int) -> np.ndarray:
    """(n,) int64 permutation for :meth:`SimilarityStore.shuffled`, reproducible from ``seed``."""
    return np.random.default_rng(seed).permutation(n).astype(np.int64)


class SimilarityStore:
    """Read access to a similarity matrix written by :func:`write_similarity`.

    ``store[i, j]`` semantics are exposed through :meth:`rows`, :meth:`submatrix` and
    :meth:`pairs` (also ``store(i, j)``).  With a ``permutation`` p (see :meth:`shuffled`) every read
    returns the entries of the permuted matrix ``S'[i, j] = S[p[i], p[j]]``: the same values with
    image identities reassigned; no new matrix is written.

    Parameters
    ----------
    path : folder containing ``manifest.json`` and the row blocks.
    permutation : (N,) int permutation applied on read, or None.
    """

    def __init__(self, path: str | Path, permutation: np.ndarray | None = None):
        self.path = Path(path)
        manifest_path = self.path / MANIFEST
        if not manifest_path.is_file():
            raise SimilarityError(f"{self.path} has no {MANIFEST}: not a (finished) similarity store")
        self.manifest = json.loads(manifest_path.read_text())
        if self.manifest.get("format_version") != FORMAT_VERSION:
            raise SimilarityError(f"{self.path}: unsupported format_version {self.manifest.get('format_version')}")
        self.n = int(self.manifest["n"])
        self.block_rows = int(self.manifest["block_rows"])
        self.n_blocks = int(self.manifest["n_blocks"])
        self.dtype = np.dtype(self.manifest["dtype"])
        self.n_scans = int(self.manifest["n_scans"])
        self.permutation = None
        if permutation is not None:
            perm = np.asarray(permutation)
            if perm.shape != (self.n,) or not np.array_equal(np.sort(perm), np.arange(self.n)):
                raise SimilarityError(f"permutation must be a permutation of range({self.n})")
            self.permutation = perm.astype(np.int64)
        self._blocks: dict[int, np.ndarray] = {}

    def __repr__(self) -> str:
        shuffled = ", shuffled" if self.permutation is not None else ""
        return f"SimilarityStore({str(self.path)!r}, n={self.n}, scans={self.n_scans}, {self.dtype}{shuffled})"

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n, self.n)

    def shuffled(self, permutation: np.ndarray) -> "SimilarityStore":
        """The shuffled control: a view of the same files with image identities permuted.

        Composes with an existing permutation (``S''[i, j] = S'[q[i], q[j]]``).
        """
        perm = np.asarray(permutation, dtype=np.int64)
        if self.permutation is not None:
            if perm.shape != (self.n,):
                raise SimilarityError(f"permutation must have shape ({self.n},), got {perm.shape}")
            perm = self.permutation[perm]
        return SimilarityStore(self.path, permutation=perm)

    # -- raw (unpermuted) access -------------------------------------------------------------------

    def _raw_block(self, b: int) -> np.ndarray:
        if b not in self._blocks:
            path = self.path / _block_name(b)
            if not path.is_file():
                raise SimilarityError(f"{self.path}: block file {path.name} is missing")
            block = np.load(path, mmap_mode="r")
            expected = (min(self.block_rows, self.n - b * self.block_rows), self.n)
            if block.shape != expected:
                raise SimilarityError(f"{path}: shape {block.shape}, expected {expected}")
            self._blocks[b] = block
        return self._blocks[b]

    def _raw_rows(self, rows: np.ndarray, cols: np.ndarray | slice) -> np.ndarray:
        """(len(rows), ncols) float32 of the stored matrix, reading only the blocks of ``rows``."""
        out_cols = self.n if isinstance(cols, slice) else len(cols)
        out = np.empty((len(rows), out_cols), dtype=np.float32)
        blocks = rows // self.block_rows
        for b in np.unique(blocks):
            sel = np.flatnonzero(blocks == b)
            local = rows[sel] - b * self.block_rows
            out[sel] = self._raw_block(int(b))[local][:, cols]
        return out

    # -- public reads ------------------------------------------------------------------------------

    def _check_indices(self, indices) -> np.ndarray:
        idx = np.asarray(indices)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise SimilarityError(f"indices must be a 1-d integer array, got {idx.dtype} shape {idx.shape}")
        if idx.size and (idx.min() < 0 or idx.max() >= self.n):
            raise SimilarityError(f"indices out of range [0, {self.n})")
        return idx.astype(np.int64)

    def _map(self, idx: np.ndarray) -> np.ndarray:
        return idx if self.permutation is None else self.permutation[idx]

    def rows(self, indices: Iterable[int]) -> np.ndarray:
        """(k, N) float32: full rows ``S[indices, :]``."""
        idx = self._map(self._check_indices(indices))
        cols = slice(None) if self.permutation is None else self.permutation
        return self._raw_rows(idx, cols)

    def block(self, i: int) -> np.ndarray:
        """(rows, N) float32: rows ``i * block_rows`` up to ``(i + 1) * block_rows`` of the matrix."""
        if not 0 <= i < self.n_blocks:
            raise SimilarityError(f"block index {i} out of range [0, {self.n_blocks})")
        if self.permutation is None:
            return np.asarray(self._raw_block(i), dtype=np.float32)
        return self.rows(np.arange(i * self.block_rows, min((i + 1) * self.block_rows, self.n)))

    def submatrix(self, indices: Iterable[int]) -> np.ndarray:
        """(k, k) float32: ``S[indices][:, indices]``, loading only the needed rows."""
        idx = self._map(self._check_indices(indices))
        return self._raw_rows(idx, idx)

    def pairs(self, i: Iterable[int], j: Iterable[int]) -> np.ndarray:
        """(P,) float32: ``S[i[m], j[m]]`` for each pair m."""
        i = self._map(self._check_indices(i))
        j = self._map(self._check_indices(j))
        if i.shape != j.shape:
            raise SimilarityError(f"pair index arrays differ in length: {i.shape} vs {j.shape}")
        out = np.empty(len(i), dtype=np.float32)
        blocks = i // self.block_rows
        for b in np.unique(blocks):
            sel = np.flatnonzero(blocks == b)
            out[sel] = self._raw_block(int(b))[i[sel] - b * self.block_rows, j[sel]]
        return out

    __call__ = pairs

    def to_array(self, max_n: int = 20_000) -> np.ndarray:
        """(N, N) float32 dense matrix; refuses N > ``max_n`` (that would be N*N*4 bytes)."""
        if self.n > max_n:
            raise SimilarityError(f"refusing to load a {self.n} x {self.n} matrix; raise max_n if intended")
        return self.rows(np.arange(self.n))


# --------------------------------------------------------------------------------------------------
# Agreement checks
# --------------------------------------------------------------------------------------------------


def upper_triangle_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of the strictly-upper-triangle entries (pairs i < j) of two (n, n) matrices."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape != b.shape:
        raise SimilarityError(f"need two square matrices of equal shape, got {a.shape} and {b.shape}")
    if a.shape[0] < 3:
        raise SimilarityError("need at least 3 images (3 pairs) for a correlation")
    iu = np.triu_indices(a.shape[0], k=1)
    return float(np.corrcoef(a[iu], b[iu])[0, 1])


def dense_similarity(vectors_per_scan: Sequence[np.ndarray]) -> np.ndarray:
    """(N, N) float64 scan-averaged cosine matrix, in memory; for small N (e.g. oracle images)."""
    scans = _check_scans(vectors_per_scan)
    return sum(v.astype(np.float64) @ v.T.astype(np.float64) for v in scans) / len(scans)


def oracle_similarity_agreement(
    candidate_responses: Sequence[np.ndarray],
    reference_responses: Sequence[np.ndarray],
    unit_scales: Sequence[np.ndarray | None] | None = None,
) -> float:
    """Correlation over image pairs between two similarity matrices of the oracle images.

    The paper's check: similarity from model predictions (candidate) vs from repeat-averaged
    responses (reference) gave r = 0.73; single-trial responses as candidate gave r = 0.39.  For the
    single-trial candidate, use a trial left out of the reference average to avoid shared noise.

    Parameters
    ----------
    candidate_responses, reference_responses : per scan (n_oracle, n_units) responses, same oracle
        images in the same order in both lists.
    unit_scales : per scan (n_units,) weight applied to both, or None.

    Returns
    -------
    Pearson r over pairs i < j of the two scan-averaged cosine matrices.
    """
    if len(candidate_responses) != len(reference_responses):
        raise SimilarityError(
            f"{len(candidate_responses)} candidate scans vs {len(reference_responses)} reference scans"
        )
    scales = list(unit_scales) if unit_scales is not None else [None] * len(candidate_responses)
    if len(scales) != len(candidate_responses):
        raise SimilarityError(f"{len(scales)} unit_scales for {len(candidate_responses)} scans")
    for k, (c, r) in enumerate(zip(candidate_responses, reference_responses)):
        if np.shape(c) != np.shape(r):
            raise SimilarityError(f"scan {k}: candidate {np.shape(c)} and reference {np.shape(r)} differ")
    cand = dense_similarity([population_vectors(c, s) for c, s in zip(candidate_responses, scales)])
    ref = dense_similarity([population_vectors(r, s) for r, s in zip(reference_responses, scales)])
    return upper_triangle_correlation(cand, ref)


def repeat_split(
    responses: np.ndarray, image_rows: np.ndarray, n_images: int, min_repeats: int = 3
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The repeated images' trials split into one held-out trial and the mean of the other repeats.

    The inputs of :func:`oracle_similarity_agreement` for one scan: the single trial is left out of
    the reference average so that the two share no trial noise.

    Parameters
    ----------
    responses : (n_trials, n_units) responses of one scan.
    image_rows : (n_trials,) each trial's image, as a row index in [0, n_images).
    min_repeats : images shown at least this often count as repeated.

    Returns
    -------
    ``repeated`` (n_repeated,) image rows in increasing order, ``single`` (n_repeated, n_units) the
    first trial of each, ``reference`` (n_repeated, n_units) the mean of its other trials; None when
    fewer than 3 images are repeated (no pair correlation to speak of).
    """
    image_rows = np.asarray(image_rows)
    repeated = np.flatnonzero(np.bincount(image_rows, minlength=n_images) >= min_repeats)
    if len(repeated) < 3:
        return None
    trials = [np.flatnonzero(image_rows == r) for r in repeated]
    single = np.stack([responses[t[0]] for t in trials])
    reference = np.stack([responses[t[1:]].mean(axis=0) for t in trials])
    return repeated, single, reference
