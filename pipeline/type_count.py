"""How many functional cell types: the number of consensus clusters, chosen from an ensemble's readouts.

The consensus of :func:`pipeline.celltypes.consensus_types` needs a number of clusters k.  Setting it
to the model's number of features assumes the answer; here it is chosen by *consensus stability
between half-ensembles*: the ensemble's models are split at random into two disjoint halves, each
half's clusterings (:func:`pipeline.celltypes.cluster_types`, one per model) are combined into a
consensus at k, and the two consensus partitions are compared by the adjusted Rand index (ARI).  The
chosen k is the one whose halves agree best, averaged over random splits.

Why this criterion and not a single-model index (silhouette, gap statistic, a likelihood criterion):

- The readouts of one model are not samples of a mixture with a known noise model: what separates a
  type from its neighbour in one model is often a seed-specific split (a type read by two features,
  two types sharing one).  Single-model indices then score that model's idiosyncrasies; on this
  pipeline's simulated scans, silhouette picked 3-5 clusters for 6 types.
- What the ensemble knows is which groupings *recur* across independently trained models.  At a
  k above the number of types, each half splits types differently (by noise), and at a k below it
  each half merges different pairs of types, so the halves disagree on both sides; at the true k
  they agree.  This is stability-based model selection (Lange et al. 2004, Neural Computation
  16:1299) with the two "samples" being independently trained halves of the ensemble instead of
  subsamples of the units, so it measures reproducibility over training seeds, which is what a
  user needs from a cell typing.
- ARI is chance-corrected, so the curve does not rise with k merely because more clusters make
  chance agreement less likely (the raw Rand index and co-association measures do).

Ties (equal mean stability within ``tolerance``) go to the larger k: a merge that both halves make
is reproducible but hides a type that the data separates at the larger k with equal stability.
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
    stability : (n_k,) mean ARI between the two halves' consensus partitions, per candidate.
    spread : (n_k,) standard deviation of that ARI over the random splits.
    splits : number of random half-ensemble splits per candidate.
    labelings : k -> list of (n_units,) cluster labels, one per model (for the consensus at k).
    """

    k: int
    candidates: np.ndarray
    stability: np.ndarray
    spread: np.ndarray
    splits: int
    labelings: dict[int, list[np.ndarray]]

    def curve(self) -> list[dict]:
        """The evidence as plain rows: ``k``, ``stability`` (mean ARI), ``sd``, ``chosen``."""
        return [dict(k=int(k), stability=float(s), sd=float(d), chosen=bool(k == self.k))
                for k, s, d in zip(self.candidates, self.stability, self.spread)]


def candidate_range(n_units: int, k_range: tuple[int, int] = DEFAULT_RANGE, min_units_per_type: int = 3) -> tuple[int, int]:
    """``k_range`` capped so that every type could hold ``min_units_per_type`` units on average.

    Raises ValueError when nothing is left (fewer than ``2 * min_units_per_type`` units, or an
    empty or sub-2 range)."""
    low, high = int(k_range[0]), int(k_range[1])
    if low < 2 or high < low:
        raise ValueError(f"k range: expected 2 <= low <= high, got {k_range}")
    cap = n_units // min_units_per_type
    if cap < low:
        raise ValueError(f"k range {k_range}: {n_units} units allow at most {cap} types of "
                         f"{min_units_per_type} units each")
    return low, min(high, cap)


def _check_readouts(readouts: Sequence[np.ndarray], rotations: int) -> list[np.ndarray]:
    readouts = [np.asarray(w, dtype=np.float64) for w in readouts]
    if len(readouts) < 2:
        raise ValueError(f"choose_type_count: needs the readouts of at least 2 models (two halves), got {len(readouts)}")
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
            raise ValueError(f"choose_type_count: model {m}'s readouts are the same vector (up to rotation) "
                             "for every unit; there are no types to count")
    return readouts


def choose_type_count(
    readouts: Sequence[np.ndarray],
    rotations: int,
    k_range: tuple[int, int] = DEFAULT_RANGE,
    splits: int = 20,
    seed: int = 0,
    tolerance: float = 0.01,
) -> TypeCount:
    """Number of functional types by consensus stability between half-ensembles (module docstring).

    Parameters
    ----------
    readouts : one (n_units, R*F) array of rotation-major readout feature vectors per model, the
        same units in the same order (at least 2 models; 6-10 give a smoother curve).
    rotations : R.
    k_range : (low, high) inclusive candidates, capped by :func:`candidate_range`.
    splits : random splits into two disjoint halves of ``len(readouts) // 2`` models each (all
        distinct splits when there are fewer).
    seed : seeds the clusterings and the splits.
    tolerance : stabilities within this of the best count as tied (larger k wins).

    Raises ValueError for fewer than 2 models, readouts of unequal shape, non-finite or all-zero
    readouts, readouts that are one vector for every unit, or an impossible k range.
    """
    readouts = _check_readouts(readouts, rotations)
    n_models, n_units = len(readouts), readouts[0].shape[0]
    low, high = candidate_range(n_units, k_range)
    candidates = np.arange(low, high + 1)
    halves = _half_splits(n_models, splits, np.random.default_rng(seed))
    labelings, stability, spread = {}, [], []
    for k in candidates:
        labelings[int(k)] = [celltypes.cluster_types(w, rotations, int(k), seed=seed + m) for m, w in enumerate(readouts)]
        agreement = [
            celltypes.adjusted_rand_index(
                celltypes.consensus_types([labelings[int(k)][i] for i in first], int(k))[0],
                celltypes.consensus_types([labelings[int(k)][i] for i in second], int(k))[0])
            for first, second in halves
        ]
        stability.append(np.mean(agreement))
        spread.append(np.std(agreement))
    stability, spread = np.array(stability), np.array(spread)
    chosen = int(candidates[np.flatnonzero(stability >= stability.max() - tolerance)[-1]])
    return TypeCount(k=chosen, candidates=candidates, stability=stability, spread=spread, splits=len(halves),
                     labelings=labelings)


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
