"""Vector indexes behind the `VectorIndex` seam."""

from __future__ import annotations

from .base import IndexDamaged, IndexMismatch, IndexOutdated, Neighbours, VectorIndex

__all__ = ["IndexDamaged", "IndexMismatch", "IndexOutdated", "Neighbours", "VectorIndex"]
