"""Vector indexes behind the `VectorIndex` seam; `keeper.py` keeps one up to date."""

from __future__ import annotations

from .base import (
    CatalogueIndex,
    IndexDamaged,
    IndexMismatch,
    IndexOutdated,
    Neighbours,
    PersistentIndex,
    VectorIndex,
)

__all__ = [
    "CatalogueIndex",
    "IndexDamaged",
    "IndexMismatch",
    "IndexOutdated",
    "Neighbours",
    "PersistentIndex",
    "VectorIndex",
]
