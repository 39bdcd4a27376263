"""How many functional cell types: the number of consensus clusters, chosen from an ensemble's readouts.

The consensus of :func:`pipeline.celltypes.clustering.consensus_types` needs a number of clusters k.  Setting it
to the model's number of features assumes the answer.  Here k is chosen by how well k types *predict
held-out readouts* (:func:`template_residuals`), a cross-validated model-selection criterion:

1. every model's readouts are clustered (:func:`pipeline.celltypes.clustering.cluster_types`) at every candidate k;
2. for each model m and k, the units get types from the consensus of the *other* models' clusterings
   (so m's noise does not place the boundaries), and each unit's unit-length readout in m is compared,
   at its best rotation, with the mean readout of the *other* units of its type in m (so the unit does
   not fit its own template);
3. the residual, averaged over models and units, falls while added types separate groups of units
   that read the core differently, and flattens once a split only cuts through a group;
4. k is the smallest candidate within one standard error of the lowest residual (the one-standard-error
   rule; Hastie, Tibshirani & Friedman, *Elements of Statistical Learning*, 7.10), the standard error
   being that of the per-unit differences to the best k.

Why not the other criteria (both are computed and stored as evidence):

- *Lifetime* in the tree of pooled clusterings (evidence accumulation, Fred & Jain 2005, IEEE TPAMI
  27:835) and *consensus stability between half-ensembles* (Lange et al. 2004) find the strongest
  level of a hierarchy.  When the types come in families that every model separates (on the demo
  scan: linear units against energy-like ones), both are highest at k = 2 however clear the types are
  within the families; a held-out residual keeps falling until the types are apart.
- Single-model indices (silhouette, gap statistic) score one model's idiosyncrasies; on this
  pipeline's simulated scans silhouette picked 3-5 clusters for 6 types.

What the criterion counts is groups of distinct readouts.  Where one type's units read the core in
two distinct ways (e.g. small and large receptive fields read by two features of one scale each), it
counts two; the consensus then splits that type but keeps the others apart.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from pipeline.celltypes import clustering as celltypes

DEFAULT_RANGE = (2, 12)


@dataclasses.dataclass
class TypeCount:
    """Outcome of :func:`choose_type_count`.

    k : the chosen number of types.
    candidates : (n_k,) the k tried, ascending.
    residual : (n_k,) the criterion: mean over units of :func:`template_residuals` (lower: the k types
        predict held-out readouts better).
    residual_se : (n_k,) standard error of each k's residual minus the lowest (paired over units).
    lifetime : (n_k,) for each k, the range of co-association distance over which the average-linkage
        tree of the pooled clusterings has k clusters (larger: a clearer partition; the strongest
        level of a hierarchy of types has the longest).
    stability : (n_k,) mean ARI between two random halves' consensus partitions at k.
    sd : (n_k,) standard deviation of that ARI over the random splits.
    splits : number of random half-ensemble splits per candidate.
    labelings : k -> list of (n_units,) cluster labels, one per model (for the consensus at k); empty
        for :func:`choose_distance_type_count`, which clusters the averaged distances instead.
    consensus : k -> (n_units,) averaged-distance consensus of all models at k
        (:func:`choose_distance_type_count` only).
    """

    k: int
    candidates: np.ndarray
    residual: np.ndarray
    residual_se: np.ndarray
    lifetime: np.ndarray
    stability: np.ndarray
    sd: np.ndarray
    splits: int
    labelings: dict[int, list[np.ndarray]]
    consensus: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)

    def curve(self) -> list[dict]:
        """The evidence as plain rows: ``k``, ``residual`` (the criterion) and ``residual_se``,
        ``lifetime``, ``stability`` (mean ARI of half-ensembles), ``sd`` (of that ARI), ``chosen``."""
        columns = ("residual", "residual_se", "lifetime", "stability", "sd")
        return [
            dict(k=int(k), **{name: float(getattr(self, name)[i]) for name in columns}, chosen=bool(k == self.k))
            for i, k in enumerate(self.candidates)
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
        unit_length = celltypes.unit_length(w, rotations).reshape(n_units, -1)  # also checks shape and zeros
        # Vectors equal up to rotation leave nothing to cluster: compare each unit's rotation
        # power spectrum (invariant to rotation) with the population's.
        power = np.abs(celltypes.rotation_spectra(unit_length, rotations)) ** 2
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
    """Number of functional types: the fewest whose held-out residual is within one standard error of the
    lowest (module docstring).

    Parameters
    ----------
    readouts : one (n_units, R*F) array of rotation-major readout feature vectors per model, the
        same units in the same order (at least 2 models: each model's types come from the others).
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
    residuals = np.stack([template_residuals(readouts, labelings[int(k)], int(k), rotations) for k in candidates])
    chosen, se = one_standard_error_choice(candidates, residuals)
    lifetime = cluster_lifetimes([labels for k in candidates for labels in labelings[int(k)]], candidates)
    halves = half_splits(n_models, splits, np.random.default_rng(seed))
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
    return TypeCount(
        k=chosen,
        candidates=candidates,
        residual=residuals.mean(axis=1),
        residual_se=se,
        lifetime=lifetime,
        stability=np.array(stability),
        sd=np.array(spread),
        splits=len(halves),
        labelings=labelings,
    )


def cluster_lifetimes(labelings: list[np.ndarray], candidates: np.ndarray) -> np.ndarray:
    """(len(candidates),) for each k, the co-association distance over which the average-linkage
    tree of ``labelings`` (pooled) has exactly k clusters."""
    return tree_lifetimes(1.0 - celltypes.co_association(labelings), candidates)


def tree_lifetimes(dissimilarity: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """(len(candidates),) for each k, the range of ``dissimilarity`` (n, n) over which its average-linkage
    tree has exactly k clusters."""
    from scipy.cluster.hierarchy import linkage
    from scipy.spatial.distance import squareform

    heights = linkage(squareform(dissimilarity, checks=False), method="average")[:, 2]  # ascending, n - 1
    n = len(dissimilarity)
    # k clusters exist from the (n - k)-th merge (height index n - k - 1) until the next one.
    return np.array([heights[n - k] - heights[n - k - 1] for k in candidates])


def half_splits(n_models: int, splits: int, rng: np.random.Generator) -> list[tuple[list[int], list[int]]]:
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


def template_residuals(
    readouts: Sequence[np.ndarray], labelings: list[np.ndarray], k: int, rotations: int, steps: int = 8
) -> np.ndarray:
    """(n_units,) held-out residual of every unit's readout at k types, averaged over models.

    For each model m, the types come from the consensus at k of the *other* models' clusterings
    (``labelings``, one (n_units,) per model), so m's own noise did not place the boundaries.  A unit's
    unit-length readout in m is compared, at its best rotation, with the mean of the other units of its
    type in m (aligned to their type's mean), leaving the unit out: the squared distance is in [0, 4],
    and a unit alone in its type scores 1 (it has no template).
    """
    residual = np.zeros(len(labelings[0]))
    for m, w in enumerate(readouts):
        others = [labels for i, labels in enumerate(labelings) if i != m]
        types = celltypes.consensus_types(others, k)[0]
        residual += left_out_residual(celltypes.unit_length(w, rotations).reshape(len(w), -1), types, rotations, steps)
    return residual / len(readouts)


def left_out_residual(
    vectors: np.ndarray, types: np.ndarray, rotations: int, steps: int, rounds: int = 4
) -> np.ndarray:
    """(n,) squared distance of each vector (n, R*F) at its best rotation to the mean of the other
    members of its type, after ``rounds`` of aligning each type's members with their mean."""
    spectra = celltypes.rotation_spectra(vectors, rotations)
    squared = (vectors**2).sum(axis=1)
    index, counts = _type_index(types)
    aligned = celltypes.rotated(spectra, alignment_shifts(vectors, types, rotations, steps, rounds), rotations)
    alone = counts[index] == 1
    left_out = (_type_sums(aligned, index, len(counts))[index] - aligned) / np.maximum(counts[index] - 1, 1)[:, None]
    residual = celltypes.aligned_distances(spectra, squared, left_out, rotations, steps, pairs=True).min(axis=1)
    residual[alone] = squared[alone]
    return residual


def _type_index(types: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    _, index = np.unique(types, return_inverse=True)
    return index, np.bincount(index)


def _type_sums(aligned: np.ndarray, index: np.ndarray, n_types: int) -> np.ndarray:
    sums = np.zeros((n_types, aligned.shape[1]))
    np.add.at(sums, index, aligned)
    return sums


def alignment_shifts(
    vectors: np.ndarray, types: np.ndarray, rotations: int, steps: int = 8, rounds: int = 4
) -> np.ndarray:
    """(n,) rotation (in rotation steps, [0, R), a multiple of 1 / ``steps``) that turns each vector (n, R*F)
    back onto the mean of its type (n,), after ``rounds`` of aligning each type's members with their mean
    (started with each vector's strongest rotation first, so a type's mean sits near the rotation grid)."""
    spectra = celltypes.rotation_spectra(vectors, rotations)
    squared = (vectors**2).sum(axis=1)
    index, counts = _type_index(types)
    strongest = (vectors.reshape(len(vectors), rotations, -1) ** 2).sum(axis=2).argmax(axis=1)
    shifts = strongest.astype(float)
    for _ in range(rounds):
        aligned = celltypes.rotated(spectra, shifts, rotations)
        own_mean = (_type_sums(aligned, index, len(counts)) / counts[:, None])[index]
        fine = celltypes.aligned_distances(spectra, squared, own_mean, rotations, steps, pairs=True).argmin(axis=1)
        shifts = fine / steps
    return shifts


def one_standard_error_choice(candidates: np.ndarray, residuals: np.ndarray) -> tuple[int, np.ndarray]:
    """The smallest k whose mean residual is within one standard error of the lowest mean residual.

    residuals : (n_k, n_units).  The standard error is that of the mean over units of the paired
    differences between k and the best k.  Returns (k, (n_k,) standard errors).
    """
    best = int(residuals.mean(axis=1).argmin())
    difference = residuals - residuals[best]
    se = difference.std(axis=1, ddof=1) / np.sqrt(residuals.shape[1])
    within = np.flatnonzero(difference.mean(axis=1) <= se)
    return int(candidates[within[0]]), se


def gap_statistic(
    coordinates: np.ndarray, candidates: Sequence[int], references: int = 20, seed: int = 0
) -> tuple[int, np.ndarray, np.ndarray]:
    """The gap statistic (Tibshirani, Walther & Hastie 2001, J R Stat Soc B 63:411) of k-means clusterings.

    coordinates : (n, d) points, e.g. :func:`pipeline.celltypes.clustering.classical_scaling` of averaged readout
        distances.  candidates : ascending k.  The reference is ``references`` draws uniform in the box
    aligned with the points' principal axes (the paper's second reference).

    Returns (k, gap, se): gap (n_k,) is the mean log within-cluster sum of squares of the references
    minus the points', se (n_k,) the references' standard deviation times sqrt(1 + 1/references), and
    k the smallest candidate with gap(k) >= gap(k+1) - se(k+1) (the last candidate if none).
    """
    from sklearn.cluster import KMeans

    x = np.asarray(coordinates, dtype=np.float64)
    centred = x - x.mean(axis=0)
    axes = np.linalg.svd(centred, full_matrices=False)[2]
    projected = centred @ axes.T
    rng = np.random.default_rng(seed)
    draws = [
        rng.uniform(projected.min(axis=0), projected.max(axis=0), projected.shape) @ axes for _ in range(references)
    ]

    def log_within(points: np.ndarray, k: int, state: int, n_init: int) -> float:
        return float(np.log(KMeans(n_clusters=k, n_init=n_init, random_state=state).fit(points).inertia_))

    gap, se = [], []
    for k in candidates:
        reference = np.array([log_within(z, int(k), seed + b, 3) for b, z in enumerate(draws)])
        gap.append(reference.mean() - log_within(x, int(k), seed, 10))
        se.append(reference.std() * np.sqrt(1 + 1 / references))
    gap_, se_ = np.array(gap), np.array(se)
    chosen = next((k for i, k in enumerate(candidates[:-1]) if gap_[i] >= gap_[i + 1] - se_[i + 1]), candidates[-1])
    return int(chosen), gap_, se_


def choose_distance_type_count(
    distances: np.ndarray,
    vectors: Sequence[np.ndarray],
    rotations: int,
    k_range: tuple[int, int] = DEFAULT_RANGE,
    splits: int = 20,
    seed: int = 0,
) -> TypeCount:
    """Number of types of the averaged-distance consensus (:func:`pipeline.celltypes.clustering.distance_consensus`):
    the fewest whose held-out residual is within one standard error of the lowest, as in
    :func:`choose_type_count`, with every consensus taken from averaged distances instead of co-association.

    distances : (n_models, n_units, n_units) each model's rotation-invariant squared distances (e.g.
        band-limited, :func:`pipeline.celltypes.clustering.rotation_invariant_distances` with ``harmonics``).
    vectors : per model, the (n_units, R*F) unit-length vectors those distances compare (e.g.
        :func:`pipeline.celltypes.clustering.band_limited` readouts): the residuals are measured on them.
    For model m at k, the types are the consensus of the other models' mean distances, and each unit's
    vector in m is compared with the mean of the other units of its type (:func:`left_out_residual`).
    Lifetimes come from the average-linkage tree of the mean distances, stability from the consensus
    of the two halves' mean distances.
    """
    distances = np.asarray(distances, dtype=np.float64)
    n_models, n_units = distances.shape[0], distances.shape[1]
    if n_models < 2 or len(vectors) != n_models:
        raise ValueError(
            f"choose_distance_type_count: needs 2 or more models' distances and vectors, got "
            f"{n_models} and {len(vectors)}"
        )
    low, high = candidate_range(n_units, k_range)
    candidates = np.arange(low, high + 1)
    total = distances.sum(axis=0)
    residuals = np.zeros((len(candidates), n_units))
    for m in range(n_models):
        others = (total - distances[m]) / (n_models - 1)  # m's noise does not place the boundaries
        for i, k in enumerate(candidates):
            types = celltypes.distance_consensus(others, int(k), seed=seed)
            residuals[i] += left_out_residual(np.asarray(vectors[m]), types, rotations, steps=8)
    residuals /= n_models
    chosen, se = one_standard_error_choice(candidates, residuals)
    halves = half_splits(n_models, splits, np.random.default_rng(seed))
    agreement = np.array(
        [
            [
                celltypes.adjusted_rand_index(
                    *(celltypes.distance_consensus(distances[h].mean(axis=0), int(k), seed, n_init=3) for h in pair)
                )
                for pair in halves
            ]
            for k in candidates
        ]
    )
    mean = total / n_models
    return TypeCount(
        k=chosen,
        candidates=candidates,
        residual=residuals.mean(axis=1),
        residual_se=se,
        lifetime=tree_lifetimes(mean, candidates),
        stability=agreement.mean(axis=1),
        sd=agreement.std(axis=1),
        splits=len(halves),
        labelings={},
        consensus={int(k): celltypes.distance_consensus(mean, int(k), seed=seed) for k in candidates},
    )
