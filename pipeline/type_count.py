"""How many functional cell types: the number of consensus clusters, chosen from an ensemble's readouts.

The consensus of :func:`pipeline.celltypes.consensus_types` needs a number of clusters k.  Setting it
to the model's number of features assumes the answer.  Here it is chosen by *evidence accumulation*
(Fred & Jain 2005, IEEE TPAMI 27:835): every model's readouts are clustered
(:func:`pipeline.celltypes.cluster_types`) at every candidate k; two units are as similar as the
fraction of all these clusterings (models x k) that put them together; the average-linkage tree of
that co-association is cut where a partition *lives longest*, i.e. at the k with the largest gap
between the merge heights that create k and k - 1 clusters.  The curve over k (``lifetime``) is the
evidence stored with the choice.

Why this criterion:

- Single-model indices (silhouette, gap statistic, likelihood criteria) score one model's
  idiosyncrasies: a type read by two features, or two types sharing one, looks like real structure
  in that model.  On this pipeline's simulated scans silhouette picked 3-5 clusters for 6 types.
- Pooling clusterings over models and over k keeps only what recurs: a split that one model (or one
  k) makes and the others do not leaves co-associations in between, so it merges early in the tree;
  types that every model and every k >= the true number keeps apart merge last, after a long gap.
- *Consensus stability between half-ensembles* (the ensemble split at random into two halves, each
  half's consensus at k compared by the adjusted Rand index, as in Lange et al. 2004) is computed as
  well and stored (``stability``): it says how reproducible the consensus at each k is over training
  seeds.  It is not the criterion: it favours coarse splits that every model makes, and on the demo
  scan's readouts k = 2 had stability 1.0 while the six types' partition had 0.65.

Ties go to the larger k.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from pipeline import celltypes

DEFAULT_RANGE = (2, 12)


@dataclasses.dataclass
class TypeCount:
    """Outcome of :func:`choose_type_count`.

    k : the chosen number of types.
    candidates : (n_k,) the k tried, ascending.
    lifetime : (n_k,) the criterion: for each k, the range of co-association distance over which the
        average-linkage tree of the pooled clusterings has k clusters (larger: a clearer partition).
    stability : (n_k,) mean ARI between two random halves' consensus partitions at k.
    spread : (n_k,) standard deviation of that ARI over the random splits.
    splits : number of random half-ensemble splits per candidate.
    labelings : k -> list of (n_units,) cluster labels, one per model (for the consensus at k).
    """

    k: int
    candidates: np.ndarray
    lifetime: np.ndarray
    stability: np.ndarray
    spread: np.ndarray
    splits: int
    labelings: dict[int, list[np.ndarray]]

    def curve(self) -> list[dict]:
        """The evidence as plain rows: ``k``, ``lifetime`` (the criterion), ``stability`` (mean ARI of
        half-ensembles), ``sd`` (of that ARI), ``chosen``."""
        return [
            dict(k=int(k), lifetime=float(t), stability=float(s), sd=float(d), chosen=bool(k == self.k))
            for k, t, s, d in zip(self.candidates, self.lifetime, self.stability, self.spread)
        ]


def candidate_range(
    n_units: int, k_range: tuple[int, int] = DEFAULT_RANGE, min_units_per_type: int = 3
) -> tuple[int, int]:
    """``k_range`` capped so that every type could hold ``min_units_per_type`` units on average.

    Raises ValueError when nothing is left (fewer than ``2 * min_units_per_type`` units, or an
    empty or sub-2 range)."""
    low, high = int(k_range[0]), int(k_range[1])
    if low < 2 or high < low:
        raise ValueError(f"k range: expected 2 <= low <= high, got {k_range}")
    cap = n_units // min_units_per_type
    if cap < low:
        raise ValueError(
            f"k range {k_range}: {n_units} units allow at most {cap} types of {min_units_per_type} units each"
        )
    return low, min(high, cap)


def _check_readouts(readouts: Sequence[np.ndarray], rotations: int) -> list[np.ndarray]:
    readouts = [np.asarray(w, dtype=np.float64) for w in readouts]
    if len(readouts) < 2:
        raise ValueError(
            f"choose_type_count: needs the readouts of at least 2 models (two halves), got {len(readouts)}"
        )
    shapes = {w.shape for w in readouts}
    if len(shapes) != 1:
        raise ValueError(f"choose_type_count: models' readouts differ in shape: {sorted(shapes)}")
    n_units = readouts[0].shape[0] if readouts[0].ndim == 2 else 0
    for m, w in enumerate(readouts):
        if not np.isfinite(w).all():
            raise ValueError(f"choose_type_count: model {m}'s readouts are not all finite")
        unit_length = celltypes._weights(w, rotations).reshape(n_units, -1)  # also checks shape and zeros
        # Vectors equal up to rotation leave nothing to cluster: compare each unit's rotation
        # power spectrum (invariant to rotation) with the population's.
        power = np.abs(celltypes._spectra(unit_length, rotations)) ** 2
        if np.allclose(power, power[:1], atol=1e-10):
            raise ValueError(
                f"choose_type_count: model {m}'s readouts are the same vector (up to rotation) "
                "for every unit; there are no types to count"
            )
    return readouts


def choose_type_count(
    readouts: Sequence[np.ndarray],
    rotations: int,
    k_range: tuple[int, int] = DEFAULT_RANGE,
    splits: int = 20,
    seed: int = 0,
) -> TypeCount:
    """Number of functional types by evidence accumulation over models and k (module docstring).

    Parameters
    ----------
    readouts : one (n_units, R*F) array of rotation-major readout feature vectors per model, the
        same units in the same order (at least 2 models; 6-10 give a clearer tree).
    rotations : R.
    k_range : (low, high) inclusive candidates, capped by :func:`candidate_range`.
    splits : random splits into two disjoint halves of ``len(readouts) // 2`` models each for the
        stability curve (all distinct splits when there are fewer).
    seed : seeds the clusterings and the splits.

    Raises ValueError for fewer than 2 models, readouts of unequal shape, non-finite or all-zero
    readouts, readouts that are one vector for every unit, or an impossible k range.
    """
    readouts = _check_readouts(readouts, rotations)
    n_models, n_units = len(readouts), readouts[0].shape[0]
    low, high = candidate_range(n_units, k_range)
    candidates = np.arange(low, high + 1)
    labelings = {
        int(k): [celltypes.cluster_types(w, rotations, int(k), seed=seed + m) for m, w in enumerate(readouts)]
        for k in candidates
    }
    lifetime = _lifetimes([labels for k in candidates for labels in labelings[int(k)]], candidates)
    halves = _half_splits(n_models, splits, np.random.default_rng(seed))
    stability, spread = [], []
    for k in candidates:
        agreement = [
            celltypes.adjusted_rand_index(
                celltypes.consensus_types([labelings[int(k)][i] for i in first], int(k))[0],
                celltypes.consensus_types([labelings[int(k)][i] for i in second], int(k))[0],
            )
            for first, second in halves
        ]
        stability.append(np.mean(agreement))
        spread.append(np.std(agreement))
    chosen = int(candidates[np.flatnonzero(lifetime == lifetime.max())[-1]])
    return TypeCount(
        k=chosen,
        candidates=candidates,
        lifetime=lifetime,
        stability=np.array(stability),
        spread=np.array(spread),
        splits=len(halves),
        labelings=labelings,
    )


def _lifetimes(labelings: list[np.ndarray], candidates: np.ndarray) -> np.ndarray:
    """(len(candidates),) for each k, the co-association distance over which the average-linkage
    tree of ``labelings`` (pooled) has exactly k clusters."""
    from scipy.cluster.hierarchy import linkage
    from scipy.spatial.distance import squareform

    together = np.mean([labels[:, None] == labels[None, :] for labels in labelings], axis=0)
    heights = linkage(squareform(1.0 - together, checks=False), method="average")[:, 2]  # ascending, n - 1
    n = len(together)
    # k clusters exist from the (n - k)-th merge (height index n - k - 1) until the next one.
    return np.array([heights[n - k] - heights[n - k - 1] for k in candidates])


def _half_splits(n_models: int, splits: int, rng: np.random.Generator) -> list[tuple[list[int], list[int]]]:
    """Up to ``splits`` distinct unordered pairs of disjoint halves of ``n_models // 2`` models."""
    half = n_models // 2
    seen, out = set(), []
    for _ in range(50 * splits):
        order = rng.permutation(n_models)
        first, second = sorted(order[:half].tolist()), sorted(order[half : 2 * half].tolist())
        pair = tuple(sorted((tuple(first), tuple(second))))
        if pair not in seen:
            seen.add(pair)
            out.append((first, second))
        if len(out) == splits:
            break
    return out
