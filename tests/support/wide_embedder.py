"""Embedders of another dimension than dlib's 128, made from dlib's: a stand-in for a 512-d
model, none of which this machine has (a fake where the real thing cannot run, and it says so).

`WideEmbedder` maps dlib's descriptor into 512 dimensions by a fixed matrix with orthonormal
columns, which keeps every length and every distance: its catalogue must give the answers a
catalogue of dlib's own vectors gives, through every store and vector index, at 512
dimensions. `MisdeclaredEmbedder` has its name and makes dlib's 128-d vectors, as a model
whose vectors changed length under one name would.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from iddetective.entities import Box
from iddetective.registry import resolve_class

__all__ = ["WIDE_MODEL", "MisdeclaredEmbedder", "WideEmbedder"]

WIDE_MODEL = "test-resnet-512"


class WideEmbedder:
    """dlib's ResNet descriptor, in 512 dimensions (the same distances)."""

    name = WIDE_MODEL
    dimension = 512

    @functools.cached_property
    def _dlib(self) -> Any:
        return resolve_class("embedder", "dlib-resnet-v1")()

    def embed(
        self, image: np.ndarray, boxes: Sequence[Box], jitters: int
    ) -> tuple[np.ndarray, list[Any]]:
        vectors, landmarks = self._dlib.embed(image, boxes, jitters)
        return (np.asarray(vectors, np.float32) @ _basis(self._dlib.dimension).T), landmarks


class MisdeclaredEmbedder(WideEmbedder):
    """dlib's 128-d descriptor under the wide model's name."""

    dimension = 128

    def embed(
        self, image: np.ndarray, boxes: Sequence[Box], jitters: int
    ) -> tuple[np.ndarray, list[Any]]:
        vectors, landmarks = self._dlib.embed(image, boxes, jitters)
        return np.asarray(vectors, np.float32), landmarks


@functools.cache
def _basis(narrow: int) -> np.ndarray:
    """512 x `narrow` with orthonormal columns, the same in every process."""
    columns, _ = np.linalg.qr(np.random.default_rng(512).normal(size=(512, narrow)))
    return columns.astype(np.float32)
