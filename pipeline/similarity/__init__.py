"""Representational similarity of neural populations (Li et al., NeurIPS 2019).

Modules: ``vectors`` (population vectors of one scan, and of the single-trial and pixel controls),
``compute`` (the scan-averaged cosine matrix, written blockwise), ``pairs`` (the row-block store
and its reads), ``agreement`` (how two similarity matrices agree over image pairs).
"""

from pipeline.similarity.agreement import (
    dense_similarity,
    oracle_similarity_agreement,
    repeat_split,
    upper_triangle_correlation,
)
from pipeline.similarity.compute import pixel_similarity, single_trial_similarity, write_similarity
from pipeline.similarity.pairs import FORMAT_VERSION, MANIFEST, SimilarityStore, random_permutation
from pipeline.similarity.vectors import (
    SimilarityError,
    lowpass,
    pixel_vectors,
    population_vectors,
    single_trial_vectors,
)

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST",
    "SimilarityError",
    "SimilarityStore",
    "dense_similarity",
    "lowpass",
    "oracle_similarity_agreement",
    "pixel_similarity",
    "pixel_vectors",
    "population_vectors",
    "random_permutation",
    "repeat_split",
    "single_trial_similarity",
    "single_trial_vectors",
    "upper_triangle_correlation",
    "write_similarity",
]
