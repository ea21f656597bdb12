"""The `VectorIndex` seam: nearest-neighbour search over face embeddings keyed by face id.

Distances are those of `iddetective.matching.distances` (Euclidean on the stored embeddings).
A search may be restricted to an `allowed` set of face ids: that is how a search over a set
of people is asked for (the store turns people into their face ids). `range_search` returns
every face within a radius, which is how "all of this person's photos within the threshold"
is asked for, however many there are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = [
    "CatalogueIndex",
    "IndexDamaged",
    "IndexMismatch",
    "IndexOutdated",
    "Neighbours",
    "PersistentIndex",
    "VectorIndex",
    "checked_addition",
    "checked_queries",
    "checked_vectors",
    "nearest",
    "within",
]


@dataclass(frozen=True)
class Neighbours:
    """Face ids (int64) and their distances (float32) to one query, nearest first."""

    ids: np.ndarray
    distances: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


class IndexMismatch(ValueError):
    """Bad input to an index: wrong dimension, duplicate ids, unknown ids; or an index file
    that cannot be used (the catalogue then rebuilds the index)."""


class IndexOutdated(IndexMismatch):
    """An index file an earlier version wrote, in a form this one no longer reads: rebuilt
    from the catalogue at its next use, nothing is wrong."""


class IndexDamaged(IndexMismatch):
    """An index file whose bytes are not the ones saved, or an index whose answers disagree
    with the catalogue's own embeddings: it must be rebuilt, never trusted."""


@runtime_checkable
class VectorIndex(Protocol):
    """An index of embeddings. Implementations must pass tests/test_vector_index_contract.py."""

    dimension: int

    def __len__(self) -> int:
        """Number of embeddings held."""
        ...

    def ids(self) -> np.ndarray:
        """The ids held (int64), in no particular order."""
        ...

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add embeddings; an id already present or a wrong dimension raises IndexMismatch."""
        ...

    def remove(self, ids: np.ndarray) -> int:
        """Remove these ids (absent ones are ignored); returns how many were removed."""
        ...

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> list[Neighbours]:
        """The k nearest faces to each query (fewer if the index holds fewer)."""
        ...

    def range_search(
        self, queries: np.ndarray, radius: float, allowed: np.ndarray | None = None
    ) -> list[Neighbours]:
        """Every face within `radius` (inclusive) of each query."""
        ...

    def save(self, path: Path, epoch: int) -> None:
        """Write the index to `path` atomically, recording the catalogue epoch it reflects."""
        ...


@runtime_checkable
class PersistentIndex(Protocol):
    """The class of an index kept in a file beside the catalogue, a cache rebuilt from it
    (`exact`, `ivf`): what `vector_index/keeper.py` needs to find, load and tidy the file."""

    #: Appended to the index's path in the data directory.
    suffix: str

    def __call__(self, dimension: int) -> VectorIndex:
        """A new, empty index."""
        ...

    def load(self, path: Path) -> tuple[VectorIndex, int]:
        """The index saved at `path` and its epoch; IndexMismatch (IndexOutdated,
        IndexDamaged) for a file that cannot be used or is missing."""
        ...

    def remove_abandoned(self, path: Path, older_than: float) -> int:
        """Delete what killed saves to `path` left (over `older_than` seconds old); returns
        the files or directories deleted."""
        ...


@runtime_checkable
class CatalogueIndex(Protocol):
    """The class of an index that searches the catalogue's own face table (`pgvector`):
    always up to date, nothing saved beside the catalogue."""

    def of_catalogue(self, url: str, model: str, dimension: int) -> VectorIndex:
        """The index over the faces of `model` in the catalogue at `url`; IndexMismatch
        when that catalogue cannot hold it."""
        ...


def checked_vectors(vectors: np.ndarray, dimension: int, count: int | None) -> np.ndarray:
    """`vectors` as a contiguous float32 matrix, or IndexMismatch saying what is wrong."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim == 1:
        vectors = vectors.reshape(1, -1)
    if vectors.ndim != 2 or vectors.shape[1] != dimension:
        raise IndexMismatch(f"expected vectors of dimension {dimension}, got shape {vectors.shape}")
    if count is not None and len(vectors) != count:
        raise IndexMismatch(f"{count} ids but {len(vectors)} vectors")
    return vectors


def checked_queries(queries: np.ndarray, dimension: int, k: int | None = None) -> np.ndarray:
    """The queries of a search as a contiguous float32 matrix, or IndexMismatch: a wrong
    dimension, or `k` (the neighbours asked for, if any) below 1."""
    if k is not None and k < 1:
        raise IndexMismatch(f"k must be at least 1, not {k}")
    return checked_vectors(queries, dimension, None)


def checked_addition(
    ids: np.ndarray, vectors: np.ndarray, dimension: int, held: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Ids and vectors about to be added, or IndexMismatch: duplicates, ids in `held`, shape."""
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    vectors = checked_vectors(vectors, dimension, len(ids))
    if len(np.unique(ids)) != len(ids):
        raise IndexMismatch("duplicate ids in one add() call")
    clash = np.intersect1d(ids, held)
    if len(clash):
        raise IndexMismatch(f"ids already in the index: {clash[:5].tolist()}")
    return ids, vectors


def nearest(ids: np.ndarray, dist: np.ndarray, k: int) -> Neighbours:
    """The k smallest distances of one query, nearest first."""
    if len(ids) > k:
        keep = np.argpartition(dist, k - 1)[:k]
        ids, dist = ids[keep], dist[keep]
    order = np.argsort(dist, kind="stable")
    return Neighbours(ids[order], dist[order].astype(np.float32))


def within(ids: np.ndarray, dist: np.ndarray, radius: float) -> Neighbours:
    """Every distance of one query up to `radius` (inclusive), nearest first."""
    hit = dist <= radius
    return nearest(ids[hit], dist[hit], max(1, int(hit.sum())))
