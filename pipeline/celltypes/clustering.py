"""Functional cell types from the readout weights of a rotation-equivariant model (Ecker et al. 2019).

Readout feature vectors have ``R * F`` entries in rotation-major order: entry ``c = r * F + f``
is feature ``f`` rotated by ``2 * pi * r / R``.  A neuron's *type* is the feature carrying most of
its weight regardless of rotation; the rotation carrying that weight is its *orientation*.

The argmax sums each feature over rotations, so it cannot tell a feature read at one orientation
from the same feature read at two opposite ones, nor one feature from another that the core makes
anti-correlated.  :func:`cluster_types` groups whole readout vectors instead, compared at their best
rotation (Ustyuzhaninov et al. 2020), and :func:`consensus_types` combines the clusterings of
several models.

Orientation convention: rotation ``r`` turns a filter by ``2 * pi * r / R``, i.e. the R rotations
span 360 degrees.  For the static images used here orientation is 180-degree periodic (a filter
turned by 180 degrees has the same orientation, possibly opposite polarity), so angles are reported
modulo ``period = pi``.  They are relative to each feature's own reference orientation (unknown to
the model), so orientations are comparable between neurons of one type only; use
:func:`align_orientations` to compare with a known truth per type.  ``rotation_direction=-1``
reports angles for a core that rotates clockwise.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
from sklearn.cluster import AgglomerativeClustering, KMeans
from sklearn.metrics import adjusted_rand_score, silhouette_score


def unit_length(feature_weights: np.ndarray, rotations: int) -> np.ndarray:
    """(n_units, R, F) unit-length weights; refuses arrays that are not (n_units, R*F) or hold a unit
    with all-zero weights."""
    w = np.asarray(feature_weights, dtype=np.float64)
    if w.ndim != 2:
        raise ValueError(f"feature_weights: expected (n_units, R*F), got shape {w.shape}")
    if rotations < 1 or w.shape[1] % rotations:
        raise ValueError(f"feature_weights: {w.shape[1]} channels are not a multiple of {rotations} rotations")
    norm = np.linalg.norm(w, axis=1, keepdims=True)
    if not (norm > 0).all():
        raise ValueError(f"feature_weights: {int((norm == 0).sum())} unit(s) with all-zero weights")
    return (w / norm).reshape(len(w), rotations, -1)


def functional_types(
    feature_weights: np.ndarray, rotations: int, period: float = np.pi, rotation_direction: int = 1
) -> dict[str, np.ndarray]:
    """Type and orientation of each unit from its readout vector.

    Parameters
    ----------
    feature_weights : (n_units, R*F) readout feature vectors, rotation-major.
    rotations : R.
    period : periodicity of orientation in radians (pi; 2*pi for direction-like features).
    rotation_direction : +1 if rotation r turns filters counter-clockwise by 2*pi*r/R, -1 otherwise.

    Returns
    -------
    dict of per-unit arrays:
    cell_type : (n_units,) int, argmax over features of the squared unit-length weights summed over rotations.
    main_share : (n_units,) share of the squared weight on that feature (in (0, 1]).
    clean : (n_units,) bool, main_share > 0.5.
    n_features_over_5pct : (n_units,) int, features with > 5% of the squared weight.
    feature_share : (n_units, F) share of every feature.
    main_rotation : (n_units,) int, rotation carrying most of the main feature's weight.
    preferred_orientation : (n_units,) radians in [0, period): circular mean over rotations of the
        main feature's angles ``rotation_direction * 2*pi*r/R`` (mod period), weighted by squared weight.
    orientation_selectivity : (n_units,) length of that weighted circular mean, in [0, 1].
    """
    w2 = unit_length(feature_weights, rotations) ** 2
    n_units = len(w2)
    share = w2.sum(axis=1)  # (n, F), rows sum to 1
    cell_type = share.argmax(axis=1)
    main = w2[np.arange(n_units), :, cell_type]  # (n, R)
    angles = rotation_direction * 2 * np.pi * np.arange(rotations) / rotations
    # Map the period onto the circle so that angles a period apart coincide.
    phasor = (main * np.exp(1j * angles * 2 * np.pi / period)).sum(axis=1) / main.sum(axis=1)
    orientation = np.mod(np.angle(phasor) * period / (2 * np.pi), period)
    main_share = share[np.arange(n_units), cell_type]
    return dict(
        cell_type=cell_type,
        main_share=main_share,
        clean=main_share > 0.5,
        n_features_over_5pct=(share > 0.05).sum(axis=1),
        feature_share=share,
        main_rotation=main.argmax(axis=1),
        preferred_orientation=orientation,
        orientation_selectivity=np.abs(phasor),
    )


def rotation_spectra(vectors: np.ndarray, rotations: int) -> np.ndarray:
    """(n, R*F) rotation-major vectors -> (n, R//2 + 1, F) Fourier coefficients over rotations."""
    return np.fft.rfft(vectors.reshape(len(vectors), rotations, -1), axis=1)


def rotated(spectra: np.ndarray, shifts: np.ndarray, rotations: int) -> np.ndarray:
    """(n, R*F) vectors turned back by ``shifts`` (n,) rotation steps, fractional steps by band-limited
    (Fourier) interpolation of each feature's rotation profile."""
    k = np.arange(spectra.shape[1])
    phase = np.exp(2j * np.pi * k[None, :] * shifts[:, None] / rotations)[:, :, None]
    return np.fft.irfft(spectra * phase, n=rotations, axis=1).reshape(len(spectra), -1)


def strongest_rotation_first(vectors: np.ndarray, spectra: np.ndarray, rotations: int) -> np.ndarray:
    """(n, R*F) vectors each turned so that its strongest rotation block comes first: a start for
    aligning vectors whose orientations are unknown.  ``spectra`` are their :func:`rotation_spectra`."""
    strongest = (vectors.reshape(len(vectors), rotations, -1) ** 2).sum(axis=2).argmax(axis=1)
    return rotated(spectra, strongest.astype(float), rotations)


def aligned_distances(
    spectra: np.ndarray, squared: np.ndarray, centres: np.ndarray, rotations: int, steps: int, pairs: bool = False
) -> np.ndarray:
    """Squared distances between vectors and centres, with each vector turned back by every shift on a
    grid of ``steps`` shifts per rotation step.

    spectra : (n, R//2 + 1, F) :func:`rotation_spectra` of the vectors; squared : (n,) their squared norms.
    centres : (c, R*F) rotation-major centres, or with ``pairs`` (n, R*F), one centre per vector.
    Returns (n, c, R * steps), or (n, R * steps) with ``pairs``; index ``s`` is a shift of ``s / steps``
    rotation steps.
    """
    # <x turned back by s, c> for all s on the fine grid, via the cross-power spectrum.
    cross = np.einsum(
        "nkf,nkf->nk" if pairs else "nkf,jkf->njk", spectra, np.conj(rotation_spectra(centres, rotations))
    )
    if rotations % 2 == 0:
        cross[..., -1] *= 0.5  # the R-point Nyquist term counts once, not as a +-k pair
    samples = rotations * steps
    overlap = np.fft.irfft(cross, n=samples, axis=-1) * samples / rotations
    centre_norm = (centres**2).sum(axis=1)
    if pairs:
        return squared[:, None] + centre_norm[:, None] - 2 * overlap
    return squared[:, None, None] + centre_norm[None, :, None] - 2 * overlap


def rotation_invariant_kmeans(
    vectors: np.ndarray,
    rotations: int,
    n_clusters: int,
    steps: int = 8,
    n_init: int = 5,
    seed: int = 0,
    max_iter: int = 100,
) -> tuple[np.ndarray, np.ndarray]:
    """k-means whose distance is the minimum over rotations (Ustyuzhaninov et al. 2020).

    vectors : (n, R*F) rotation-major vectors (e.g. unit-length readouts).
    steps : rotation shifts tried per rotation step (8: the R rotations are searched in steps of
        1/8, i.e. 5.6 degrees for R = 8); a unit whose orientation lies between two rotations of the
        core is aligned by interpolation instead of being split between neighbouring shifts.

    Returns ``labels`` (n,) and ``shifts`` (n,), the rotation (in rotation steps, [0, R)) that
    aligns each unit with its cluster centre.  Restarts ``n_init`` times, keeps the lowest inertia.
    """
    x = np.asarray(vectors, dtype=np.float64)
    n = len(x)
    if not 1 <= n_clusters <= n:
        raise ValueError(f"rotation_invariant_kmeans: n_clusters must be in [1, {n}], got {n_clusters}")
    spectra = rotation_spectra(x, rotations)
    squared = (x**2).sum(axis=1)
    samples = rotations * steps
    start_aligned = strongest_rotation_first(x, spectra, rotations)
    if n_init < 1 or max_iter < 1:
        raise ValueError(f"rotation_invariant_kmeans: n_init and max_iter must be >= 1, got {n_init}, {max_iter}")
    best: tuple[float, np.ndarray, np.ndarray] | None = None  # (inertia, labels, shifts)
    for restart in range(n_init):
        kmeans = KMeans(n_clusters=n_clusters, n_init=1, random_state=seed + restart)
        centres = kmeans.fit(start_aligned).cluster_centers_
        labels = None
        for _ in range(max_iter):
            distance = aligned_distances(spectra, squared, centres, rotations, steps)
            flat = distance.reshape(n, -1).argmin(axis=1)
            new_labels, shifts = flat // samples, (flat % samples) / steps
            aligned = rotated(spectra, shifts, rotations)
            if labels is not None and np.array_equal(new_labels, labels):
                break
            labels = new_labels
            centres = np.stack(
                [aligned[labels == j].mean(axis=0) if (labels == j).any() else centres[j] for j in range(n_clusters)]
            )
        assert labels is not None  # max_iter >= 1
        inertia = float(((aligned - centres[labels]) ** 2).sum())
        if best is None or inertia < best[0]:
            best = (inertia, labels, shifts)
    assert best is not None  # n_init >= 1
    return best[1], best[2]


def cluster_types(
    feature_weights: np.ndarray, rotations: int, n_clusters: int, seed: int = 0, harmonics: int | None = None
) -> np.ndarray:
    """(n_units,) labels of :func:`rotation_invariant_kmeans` on the unit-length readout vectors.

    The vectors keep their sign: a unit driven by the negative of a feature (opposite polarity)
    clusters apart from one driven by the feature itself, unlike :func:`functional_types`.
    harmonics : None clusters whole readouts (``CellTypes``); an integer their :func:`band_limited`
        versions, as the ensemble consensus compares them.
    """
    vectors = band_limited(
        unit_length(feature_weights, rotations).reshape(len(feature_weights), -1), rotations, harmonics
    )
    return rotation_invariant_kmeans(vectors, rotations, n_clusters, seed=seed)[0]


def consensus_types(labelings: list[np.ndarray], n_clusters: int) -> tuple[np.ndarray, np.ndarray]:
    """Consensus of several clusterings of the same units (e.g. one per model of an ensemble).

    Two units are as similar as the fraction of labelings that put them together (co-association);
    the consensus is the average-linkage clustering of that similarity into ``n_clusters`` groups.
    Models trained from different seeds split the types differently; what they agree on is kept.

    Returns ``labels`` (n_units,) and ``agreement`` (n_units,) in (0, 1], the mean co-association
    of each unit with the members of its consensus cluster (itself included).
    """
    labelings = [np.asarray(labels) for labels in labelings]
    if not labelings or len({len(labels) for labels in labelings}) != 1:
        raise ValueError(f"consensus_types: expected labelings of equal length, got {[len(x) for x in labelings]}")
    n = len(labelings[0])
    if not 1 <= n_clusters <= n:
        raise ValueError(f"consensus_types: n_clusters must be in [1, {n}], got {n_clusters}")
    together = co_association(labelings)
    if n_clusters == 1:
        labels = np.zeros(n, dtype=int)
    else:
        clustering = AgglomerativeClustering(n_clusters=n_clusters, metric="precomputed", linkage="average")
        labels = clustering.fit_predict(1.0 - together)
    return labels, agreement_with(together, labels)


def co_association(labelings: list[np.ndarray]) -> np.ndarray:
    """(n, n) fraction of ``labelings`` (each (n,)) that put two units in one cluster."""
    return np.mean([labels[:, None] == labels[None, :] for labels in labelings], axis=0)


def agreement_with(together: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(n,) mean :func:`co_association` ``together`` (n, n) of each unit with the members of its cluster in
    ``labels`` (n,), itself included: in (0, 1]."""
    same = labels[:, None] == labels[None, :]
    return (together * same).sum(axis=1) / same.sum(axis=1)


def check_harmonics(harmonics: int | None, rotations: int) -> None:
    """Refuses a number of rotation harmonics that is not None or an integer in [1, R // 2]."""
    if harmonics is None:
        return
    if (
        isinstance(harmonics, bool)
        or not isinstance(harmonics, (int, np.integer))
        or not 1 <= harmonics <= rotations // 2
    ):
        raise ValueError(f"harmonics: expected None or an integer in [1, {rotations // 2}], got {harmonics!r}")


def band_limited(vectors: np.ndarray, rotations: int, harmonics: int | None) -> np.ndarray:
    """(n, R*F) rotation-major vectors keeping only rotation harmonics 0..``harmonics`` of every feature
    (amplitudes and phases), each scaled back to unit length; None keeps every harmonic (a copy).

    Why: a unit whose orientation falls between two of the core's R rotations is read through both, and
    its rotation profile differs from an on-grid unit's mostly in the high harmonics (aliasing of a tuning
    sharper than the grid step).  The low harmonics carry the feature, its orientation (the phase of
    harmonic 1) and its symmetry (harmonic 2: one orientation against two opposite ones), and turn
    with the unit.  Refuses a vector with nothing left in the kept band.
    """
    check_harmonics(harmonics, rotations)
    x = np.asarray(vectors, dtype=np.float64)
    if harmonics is None:
        return x.copy()
    spectra = rotation_spectra(x, rotations)
    spectra[:, harmonics + 1 :] = 0
    kept = np.fft.irfft(spectra, n=rotations, axis=1).reshape(len(x), -1)
    norm = np.linalg.norm(kept, axis=1, keepdims=True)
    if not (norm > 1e-12).all():
        raise ValueError(
            f"band_limited: {int((norm <= 1e-12).sum())} unit(s) with no weight in harmonics <= {harmonics}"
        )
    return kept / norm


def rotation_invariant_distances(
    feature_weights: np.ndarray, rotations: int, steps: int = 8, chunk: int = 256, harmonics: int | None = None
) -> np.ndarray:
    """(n_units, n_units) squared distances between unit-length readouts, each pair at its best relative
    rotation (the distance of :func:`rotation_invariant_kmeans`), in [0, 4].

    feature_weights : (n_units, R*F) rotation-major readouts of one model.  The distance does not
    depend on the order or sign convention of the model's features, so matrices of independently
    trained models can be averaged.  Memory: ``chunk * n_units * R * steps`` floats at a time.
    harmonics : None compares whole readouts; an integer compares their :func:`band_limited` versions
        (rotation harmonics up to that one, with their phases): a distance that does not split one type
        by where its units' orientations fall between the core's rotations.
    """
    vectors = unit_length(feature_weights, rotations).reshape(len(feature_weights), -1)
    vectors = band_limited(vectors, rotations, harmonics)
    spectra = rotation_spectra(vectors, rotations)
    squared = (vectors**2).sum(axis=1)
    out = np.empty((len(vectors), len(vectors)))
    for start in range(0, len(vectors), chunk):
        rows = slice(start, start + chunk)
        out[rows] = aligned_distances(spectra[rows], squared[rows], vectors, rotations, steps).min(axis=2)
    # The shift grid makes d(i, j) and d(j, i) differ by interpolation error only.
    return np.clip((out + out.T) / 2, 0.0, 4.0)


def averaged_distances(readouts: list[np.ndarray], rotations: int, harmonics: int | None = None) -> np.ndarray:
    """(n_units, n_units) mean over models of :func:`rotation_invariant_distances` (``harmonics`` as there).

    readouts : one (n_units, R*F) array per model, the same units in the same order.  Each model's
    distances estimate how differently two units read the core; their mean is a less noisy estimate.
    """
    if not readouts or len({np.shape(w) for w in readouts}) != 1:
        raise ValueError(f"averaged_distances: expected readouts of one shape, got {[np.shape(w) for w in readouts]}")
    return np.mean([rotation_invariant_distances(w, rotations, harmonics=harmonics) for w in readouts], axis=0)


def distance_consensus(distances: np.ndarray, n_clusters: int, seed: int = 0, n_init: int = 10) -> np.ndarray:
    """(n_units,) consensus types of several models from their :func:`averaged_distances` (n_units, n_units).

    The units are placed by classical multidimensional scaling of the averaged distances (every
    dimension with a positive eigenvalue, so the embedding keeps them) and clustered by k-means.
    Unlike :func:`consensus_types` it uses how far apart units are in every model, not only whether
    each model's k-means put them together.
    """
    if not 1 <= n_clusters <= len(distances):
        raise ValueError(f"distance_consensus: n_clusters must be in [1, {len(distances)}], got {n_clusters}")
    return KMeans(n_clusters=n_clusters, n_init=n_init, random_state=seed).fit_predict(classical_scaling(distances))


def classical_scaling(squared_distances: np.ndarray) -> np.ndarray:
    """(n, d) coordinates whose squared Euclidean distances approximate ``squared_distances`` (n, n):
    classical (Torgerson) multidimensional scaling on every dimension with a positive eigenvalue."""
    n = len(squared_distances)
    centring = np.eye(n) - 1.0 / n
    eigenvalues, vectors = np.linalg.eigh(-0.5 * centring @ squared_distances @ centring)
    keep = eigenvalues > 1e-9 * max(eigenvalues.max(), 1e-300)
    return vectors[:, keep] * np.sqrt(eigenvalues[keep])


def consensus_by_ensemble_size(
    labelings: list[np.ndarray], n_clusters: int, truth: np.ndarray, max_subsets: int = 50, seed: int = 0
) -> list[dict]:
    """How the agreement of :func:`consensus_types` with a ground truth grows with the number of models.

    For every ensemble size m in [1, len(labelings)], up to ``max_subsets`` distinct subsets of m
    labelings (all of them when there are fewer, drawn at random otherwise) are combined, and each
    consensus is scored by :func:`adjusted_rand_index` against ``truth`` (n_units,).

    Returns one dict per size: ``models``, ``subsets``, ``mean``, ``sd``, ``min``, ``max`` of the ARI
    and ``ari`` (the values, one per subset).
    """
    labelings = [np.asarray(labels) for labels in labelings]
    truth = np.asarray(truth)
    if not labelings or any(labels.shape != truth.shape for labels in labelings):
        raise ValueError(
            f"consensus_by_ensemble_size: expected labelings shaped like truth {truth.shape}, "
            f"got {[labels.shape for labels in labelings]}"
        )
    n = len(labelings)
    rng = np.random.default_rng(seed)
    rows = []
    for size in range(1, n + 1):
        if math.comb(n, size) <= max_subsets:
            subsets = [list(c) for c in itertools.combinations(range(n), size)]
        else:
            drawn: set[tuple[int, ...]] = set()
            while len(drawn) < max_subsets:
                drawn.add(tuple(sorted(rng.choice(n, size, replace=False).tolist())))
            subsets = [list(c) for c in sorted(drawn)]
        ari = np.array(
            [adjusted_rand_index(truth, consensus_types([labelings[i] for i in s], n_clusters)[0]) for s in subsets]
        )
        rows.append(
            dict(
                models=size,
                subsets=len(subsets),
                mean=float(ari.mean()),
                sd=float(ari.std()),
                min=float(ari.min()),
                max=float(ari.max()),
                ari=ari.tolist(),
            )
        )
    return rows


def adjusted_rand_index(labels_true: np.ndarray, labels_pred: np.ndarray) -> float:
    """Adjusted Rand index of two labelings (1 = identical up to renaming, ~0 = chance)."""
    return float(adjusted_rand_score(np.asarray(labels_true), np.asarray(labels_pred)))


def circular_orientation_error(pred: np.ndarray, true: np.ndarray, period: float = np.pi) -> np.ndarray:
    """Absolute angular difference, wrapped into [0, period / 2]."""
    d = np.mod(np.asarray(pred, dtype=np.float64) - np.asarray(true, dtype=np.float64), period)
    return np.minimum(d, period - d)


def align_orientations(pred: np.ndarray, true: np.ndarray, groups: np.ndarray, period: float = np.pi) -> np.ndarray:
    """``pred`` plus, per group (e.g. cell type), the circular-mean offset to ``true``, mod period.

    Model orientations are relative to each feature's unknown reference orientation; this removes
    that one free offset per type before comparing with a ground truth.
    """
    pred = np.asarray(pred, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    groups = np.asarray(groups)
    if not pred.shape == true.shape == groups.shape:
        raise ValueError(f"align_orientations: shapes differ: {pred.shape}, {true.shape}, {groups.shape}")
    scale = 2 * np.pi / period
    aligned = pred.copy()
    for g in np.unique(groups):
        members = groups == g
        offset = np.angle(np.exp(1j * scale * (true[members] - pred[members])).mean()) / scale
        aligned[members] = np.mod(pred[members] + offset, period)
    return aligned


@dataclasses.dataclass
class CellTypeSummary:
    """Cell typing of one model: ``summary`` per model, ``units`` one dict per unit (readout order)."""

    summary: dict
    units: list[dict]


def choose_clusters(descriptors: np.ndarray, rotations: int, max_clusters: int = 12, seed: int = 0) -> np.ndarray:
    """:func:`rotation_invariant_kmeans` labels, k in [2, max_clusters] chosen by the silhouette score
    of the rotation-aligned descriptors."""
    n = len(descriptors)
    spectra = rotation_spectra(np.asarray(descriptors, dtype=np.float64), rotations)
    best_labels, best_score = np.zeros(n, dtype=int), -np.inf
    for k in range(2, min(max_clusters, n - 1) + 1):
        labels, shifts = rotation_invariant_kmeans(descriptors, rotations, k, seed=seed)
        if len(np.unique(labels)) < 2:
            continue
        value = silhouette_score(rotated(spectra, shifts, rotations), labels, random_state=seed)
        if value > best_score:
            best_labels, best_score = labels, value
    return best_labels


def summarize(
    feature_weights: np.ndarray,
    rotations: int,
    truth: dict | None = None,
    seed: int = 0,
    max_clusters: int = 12,
    n_clusters: int | None = None,
) -> CellTypeSummary:
    """Types, clusters and orientations of every unit, with agreement to a ground truth if given.

    feature_weights : (n_units, R*F) rotation-major readout vectors.
    truth : optional ``unit_type`` (n_units,) names and ``orientation`` (n_units,) radians (NaN for
        orientation-free units), e.g. from the simulator.
    n_clusters : number of clusters; None chooses it in [2, max_clusters] by silhouette score.
    The orientation error is the median circular error in degrees after removing one offset per
    true type (each learned feature has its own reference orientation).
    """
    types = functional_types(feature_weights, rotations)
    if n_clusters is None:
        vectors = unit_length(feature_weights, rotations).reshape(len(feature_weights), -1)
        clusters = choose_clusters(vectors, rotations, max_clusters, seed)
    else:
        clusters = cluster_types(feature_weights, rotations, n_clusters, seed)
    n_features = feature_weights.shape[1] // rotations
    summary = dict(
        n_types=int(len(np.unique(types["cell_type"]))),
        n_clusters=int(len(np.unique(clusters))),
        clean_fraction=float(types["clean"].mean()),
        type_counts=np.bincount(types["cell_type"], minlength=n_features),
        ari_types=None,
        ari_clusters=None,
        orientation_error=None,
    )
    if truth is not None:
        true_types = np.asarray(truth["unit_type"]).astype(str)
        summary["ari_types"] = adjusted_rand_index(true_types, types["cell_type"])
        summary["ari_clusters"] = adjusted_rand_index(true_types, clusters)
        true_orientation = np.asarray(truth["orientation"], dtype=np.float64)
        oriented = np.isfinite(true_orientation)
        if oriented.sum() >= 2:
            aligned = align_orientations(
                types["preferred_orientation"][oriented], true_orientation[oriented], true_types[oriented]
            )
            error = circular_orientation_error(aligned, true_orientation[oriented])
            summary["orientation_error"] = float(np.degrees(np.median(error)))
    units = [
        dict(
            cell_type=int(t),
            cluster=int(c),
            preferred_orientation=float(o),
            main_share=float(m),
            clean=bool(k),
        )
        for t, c, o, m, k in zip(
            types["cell_type"], clusters, types["preferred_orientation"], types["main_share"], types["clean"]
        )
    ]
    return CellTypeSummary(summary=summary, units=units)
