"""Catalogue stores behind the `Store` seam."""

from __future__ import annotations

from .base import Store

__all__ = ["Store"]
