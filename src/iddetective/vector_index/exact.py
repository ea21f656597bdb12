"""Exact nearest-neighbour search with numpy (BLAS): the reference implementation."""

from __future__ import annotations

import os
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

from ..matching import distances
from .base import IndexMismatch, Neighbours, checked_addition, checked_queries, nearest, within

__all__ = ["ExactIndex"]

# Queries are compared with the gallery in blocks, bounding temporary memory.
_BLOCK = 65536


class ExactIndex:
    """Brute force over a float32 matrix; exact distances, no approximation."""

    #: Appended to the index's path in a data directory.
    suffix = ".npz"

    def __init__(self, dimension: int) -> None:
        self.dimension = dimension
        self._ids = np.zeros(0, dtype=np.int64)
        self._vectors = np.zeros((0, dimension), dtype=np.float32)

    def __len__(self) -> int:
        return len(self._ids)

    # -- contents --------------------------------------------------------------------------------
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids, vectors = checked_addition(ids, vectors, self.dimension, self._ids)
        self._ids = np.concatenate([self._ids, ids])
        self._vectors = np.concatenate([self._vectors, vectors])

    def remove(self, ids: np.ndarray) -> int:
        keep = ~np.isin(self._ids, np.asarray(ids, dtype=np.int64))
        removed = int(len(self._ids) - keep.sum())
        self._ids, self._vectors = self._ids[keep], self._vectors[keep]
        return removed

    def ids(self) -> np.ndarray:
        """The ids held, in insertion order."""
        return self._ids.copy()

    # -- search ----------------------------------------------------------------------------------
    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> list[Neighbours]:
        checked_queries(queries, self.dimension, k)
        return [nearest(ids, dist, k) for ids, dist in self._distance_rows(queries, allowed)]

    def range_search(
        self, queries: np.ndarray, radius: float, allowed: np.ndarray | None = None
    ) -> list[Neighbours]:
        return [within(ids, dist, radius) for ids, dist in self._distance_rows(queries, allowed)]

    def _distance_rows(
        self, queries: np.ndarray, allowed: np.ndarray | None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        queries = checked_queries(queries, self.dimension)
        ids, vectors = self._ids, self._vectors
        if allowed is not None:
            mask = np.isin(ids, np.asarray(allowed, dtype=np.int64))
            ids, vectors = ids[mask], vectors[mask]
        rows = [np.empty(0, np.float32) for _ in range(len(queries))]
        if len(ids):
            blocks = [
                distances.euclidean_many(queries, vectors[start : start + _BLOCK])
                for start in range(0, len(ids), _BLOCK)
            ]
            matrix = np.concatenate(blocks, axis=1)
            rows = list(matrix)
        return [(ids, row) for row in rows]

    # -- persistence -----------------------------------------------------------------------------
    def save(self, path: Path, epoch: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(handle, "wb") as out:
                np.savez(out, ids=self._ids, vectors=self._vectors, epoch=np.int64(epoch))
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    @classmethod
    def remove_abandoned(cls, path: Path, older_than: float) -> int:
        """Delete partly written files of killed saves of `path` over `older_than` seconds
        old; returns how many."""
        removed = 0
        for partial in path.parent.glob(f"{path.name}*.tmp"):
            if partial.is_file() and time.time() - partial.stat().st_mtime > older_than:
                partial.unlink(missing_ok=True)
                removed += 1
        return removed

    @classmethod
    def load(cls, path: Path) -> tuple[ExactIndex, int]:
        """The index saved at `path` and its epoch; raises IndexMismatch if unreadable."""
        try:
            with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as data:
                ids, vectors, epoch = data["ids"], data["vectors"], int(data["epoch"])
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            raise IndexMismatch(f"cannot read the index file {path}: {error}") from None
        if vectors.ndim != 2 or len(ids) != len(vectors):
            raise IndexMismatch(f"the index file {path} is inconsistent")
        index = cls(vectors.shape[1])
        index._ids, index._vectors = ids.astype(np.int64), vectors.astype(np.float32)
        return index, epoch
