"""Figures of representational similarity: a similarity matrix, two similarities over the same pairs."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from pipeline.figures.common import as_array, pearson, same_shape


def similarity_matrix(matrix: np.ndarray, title: str = "Representational similarity") -> Figure:
    """A (n, n) similarity matrix (cosines in [-1, 1]) as an image; rows and columns are images."""
    matrix = as_array("matrix", matrix, ndim=2)
    if matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"similarity_matrix: expected a square matrix, got {matrix.shape}")
    fig, ax = plt.subplots(figsize=(5.5, 4.5), layout="constrained")
    image = ax.imshow(matrix, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    ax.set_xlabel("stimulus image")
    ax.set_ylabel("stimulus image")
    ax.set_title(f"{title} ({matrix.shape[0]} images)")
    fig.colorbar(image, ax=ax, label="similarity (cosine)")
    return fig


def similarity_scatter(x: np.ndarray, y: np.ndarray, xlabel: str, ylabel: str, hexbin_above: int = 2000) -> Figure:
    """Pairwise similarities of two sources over the same image pairs (e.g. S_model vs S_neural).

    x, y : (n_pairs,) cosines.  More than ``hexbin_above`` pairs are drawn as a hexbin density.
    The Pearson correlation is printed in the title.
    """
    x, y = same_shape("similarity_scatter", xlabel, x, ylabel, y)
    fig, ax = plt.subplots(figsize=(5, 5), layout="constrained")
    if len(x) > hexbin_above:
        image = ax.hexbin(x, y, gridsize=50, bins="log", cmap="viridis", mincnt=1)
        fig.colorbar(image, ax=ax, label="image pairs")
    else:
        ax.scatter(x, y, s=6, alpha=0.5)
    ax.set_xlabel(f"{xlabel} (cosine)")
    ax.set_ylabel(f"{ylabel} (cosine)")
    ax.set_title(f"r = {pearson(x, y):.2f} over {len(x)} image pairs")
    return fig
