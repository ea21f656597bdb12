"""Ingestion outcomes built by hand: photos with chosen faces and embeddings."""

from __future__ import annotations

import hashlib

import numpy as np

from iddetective.entities import (
    Box,
    FaceAnalysis,
    FileStat,
    IndexedPhoto,
    PhotoAnalysis,
    Provenance,
)
from iddetective.matching import distances

__all__ = ["MODEL", "photo", "vector"]


MODEL = "m"


# -- making outcomes and people -----------------------------------------------------------------


def vector(seed: int, dimension: int = 128) -> np.ndarray:
    """A unit embedding, the same for the same seed (and dimension)."""
    return distances.prepare(np.random.default_rng(seed).normal(size=dimension))


def photo(
    name: str,
    faces: int = 1,
    label: str | None = None,
    seeds: list[int] | None = None,
    provenance: Provenance | None = None,
    content: str | None = None,
    model: str = MODEL,
    dimension: int = 128,
) -> IndexedPhoto:
    """A photo at /photos/`name` with `faces` faces side by side; its bytes are `content`
    (default: the name), its embeddings those of `seeds` (default: from the name's length),
    made by `model` with `dimension` numbers each."""
    seeds = seeds if seeds is not None else [len(name) * 100 + i for i in range(faces)]
    analysed = tuple(
        FaceAnalysis(
            Box(10 + 100 * i, 10, 90 + 100 * i, 90),
            1.0,
            ((0, 0),) * 5,
            vector(seed, dimension),
            0.5,
        )
        for i, seed in enumerate(seeds)
    )
    sha = hashlib.sha256((content or name).encode()).hexdigest()
    return IndexedPhoto(
        FileStat(f"/photos/{name}", 100, 1),
        sha,
        PhotoAnalysis(400, 100, analysed, model),
        label,
        provenance,
    )
