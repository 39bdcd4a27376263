"""Storage of a similarity matrix as row blocks, read by pairs, rows or submatrices.

A store (:class:`SimilarityStore`) is a folder with ``manifest.json`` and row blocks
``block_00000.npy, ...`` of shape (block_rows, N) (the last one may be shorter).  Blocks are opened
memory-mapped, so reading a few pairs or a small submatrix touches only those rows.  The manifest is
written last: a folder without it is an unfinished write.  :meth:`SimilarityStore.shuffled` is the
shuffled control: the same matrix with image identities permuted, applied on read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import numpy as np

from pipeline.similarity.vectors import SimilarityError

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
DTYPES = {"float16": np.float16, "float32": np.float32}  # storage dtypes by name


def block_name(b: int) -> str:
    """File name of row block ``b`` of a store."""
    return f"block_{b:05d}.npy"


def random_permutation(n: int, seed: int) -> np.ndarray:
    """(n,) int64 permutation for :meth:`SimilarityStore.shuffled`, reproducible from ``seed``."""
    return np.random.default_rng(seed).permutation(n).astype(np.int64)


class SimilarityStore:
    """Read access to a similarity matrix written by :func:`~pipeline.similarity.compute.write_similarity`.

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
            path = self.path / block_name(b)
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
