"""The one module that owns distances and thresholds. Nobody else hard-codes a threshold.

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
    "DEFAULT_THRESHOLD",
    "ERASE_UNNAMED_THRESHOLD",
    "OPTOUT_THRESHOLD",
    "RAW_NORM",
    "euclidean_many",
    "is_match",
    "prepare",
    "raw_equivalent",
    "verdict",
]

#: Default match threshold: at most 1 in 1,000 impostor comparisons match at this distance on
#: `lfw_dev` (3,741 photos with a face, 7.0 million impostor pairs: measured 0.97e-3, with
#: 92.5 % of genuine pairs accepted). Derived by `bench/threshold.py`. The folklore raw 0.6
#: (ours: ~0.42) lets 1 in ~150 impostor comparisons match on the same data.
DEFAULT_THRESHOLD = 0.383

#: An opted-out face blocks every face at most this far from it (docs/privacy.md). Looser than
#: the match threshold on purpose: on `lfw_dev` 98.6 % of genuine pairs fall within it (FMR
#: 1e-2), so other photos of the person are blocked too, at the cost of blocking about 1 in 100
#: unrelated faces per opted-out person (raw scale ~0.61, the folklore 0.6).
OPTOUT_THRESHOLD = 0.430

#: Erasing a person also erases the unnamed faces at most this far from one of theirs
#: (docs/privacy.md). Stricter than the match threshold on purpose, since strangers' faces go
#: too: on `lfw_dev` (bench/erasure.py, each person with 2+ photos erased in turn, half their
#: photos named) it takes 91.4 % of their unnamed faces and 0.14 strangers' faces per 1,000
#: unnamed faces in the catalogue (one erasure in seven takes one); the match threshold would
#: take 99.0 % and 2.6 per 1,000 (seven erasures in eight would take a stranger's face).
ERASE_UNNAMED_THRESHOLD = 0.330

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


def is_match(distance: float, threshold: float = DEFAULT_THRESHOLD) -> bool:
    """Whether two faces this far apart are taken to be the same person."""
    return bool(distance <= threshold)


def verdict(distance: float, threshold: float = DEFAULT_THRESHOLD) -> str:
    """`"match"` or `"no_match"`, the words the CLI and the JSON schema use."""
    return "match" if is_match(distance, threshold) else "no_match"


def raw_equivalent(distance: float) -> float:
    """Roughly the raw dlib distance that corresponds to one of ours."""
    return distance * RAW_NORM
