"""Vector indexes behind the `VectorIndex` seam."""

from __future__ import annotations

from .base import IndexMismatch, Neighbours, VectorIndex

__all__ = ["IndexMismatch", "Neighbours", "VectorIndex"]
