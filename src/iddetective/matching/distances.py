"""The one module that owns distances. Thresholds belong to a model: its calibration table
(matching/calibration.py) gives them, and nobody hard-codes one.

Embeddings are L2-normalised when they are made (`prepare`), and the distance everywhere is
the Euclidean distance between normalised embeddings (0 = identical, 2 = opposite). On the
labelled `lfw_dev` set, normalising raised the share of genuine pairs accepted at a 1e-3
false-match rate from 90.5 % to 92.6 % (and at 1e-4 from 67.4 % to 76.1 %) at the same pair
accuracy; it also makes the distance a function of cosine similarity, so inner-product and
cosine indexes (faiss, pgvector) give the same order. See docs/pipeline.md and
`bench/threshold.py`, which prints these figures.

dlib's raw (unnormalised) distances, the scale of the folklore 0.6, are about
`RAW_NORM` times ours, since raw embeddings have a norm of 1.42 +- 0.07.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "RAW_NORM",
    "euclidean_many",
    "is_match",
    "prepare",
    "raw_equivalent",
    "verdict",
]

#: Mean norm of raw dlib ResNet embeddings on `lfw_dev` (for converting quoted raw distances).
RAW_NORM = 1.424


def prepare(vectors: np.ndarray) -> np.ndarray:
    """Embeddings as stored and compared: float32, each scaled to unit length."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.size == 0:
        return vectors
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


#: Pairs closer than this (squared: distance 0.1) are measured again from their difference:
#: the expansion below cancels there (in float32, two copies of one unit vector can come out
#: ~5e-4 apart instead of 0), and only near-duplicates are this close.
_EXACT_BELOW_SQUARED = 1e-2


def euclidean_many(queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """Distances (len(queries) x len(gallery), float32) between two sets of embeddings.

    Uses |q - g|^2 = |q|^2 + |g|^2 - 2 q.g so the work is one BLAS matrix product; the few
    pairs closer than 0.1 are computed from q - g, so a face compared with itself is 0.
    """
    queries = np.asarray(queries, dtype=np.float32)
    gallery = np.asarray(gallery, dtype=np.float32)
    squared = (
        np.einsum("ij,ij->i", queries, queries)[:, None]
        + np.einsum("ij,ij->i", gallery, gallery)[None, :]
        - 2.0 * (queries @ gallery.T)
    )
    rows, columns = np.nonzero(squared < _EXACT_BELOW_SQUARED)
    if len(rows):
        differences = queries[rows] - gallery[columns]
        squared[rows, columns] = np.einsum("ij,ij->i", differences, differences)
    return np.sqrt(np.maximum(squared, 0.0, out=squared), out=squared).astype(np.float32)


def is_match(distance: float, threshold: float) -> bool:
    """Whether two faces this far apart are taken to be the same person."""
    return bool(distance <= threshold)


def verdict(distance: float, threshold: float) -> str:
    """`"match"` or `"no_match"`, the words the CLI and the JSON schema use."""
    return "match" if is_match(distance, threshold) else "no_match"


def raw_equivalent(distance: float) -> float:
    """Roughly the raw dlib distance that corresponds to one of ours."""
    return distance * RAW_NORM
