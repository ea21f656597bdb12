"""Vector indexes behind the `VectorIndex` seam."""

from __future__ import annotations

from .base import IndexDamaged, IndexMismatch, Neighbours, VectorIndex

__all__ = ["IndexDamaged", "IndexMismatch", "Neighbours", "VectorIndex"]
