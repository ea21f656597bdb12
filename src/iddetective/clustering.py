"""Group faces nobody has named into likely people.

The faces are the vertices of a graph; two faces closer than the clustering threshold (a
stricter one than search's: a wrong merge costs more than a missed one) are joined by an
edge weighted by how close they are, and dlib's Chinese whispers labels the graph
(docs/clustering.md has the measurements behind the method and the threshold). Two faces
of one photo are two people: after the labelling, a cluster keeps only its best-connected
face of each photo and the others start clusters of their own.

New faces join incrementally (`choose_cluster`): the cluster their close neighbours vote for,
unless that cluster already holds a face of the same photo, else a cluster of their own.
Everything here is arrays in, arrays out; the catalogue stores the labels.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .entities import Box

__all__ = [
    "CLUSTER_THRESHOLD",
    "MIN_FACE_SIDE",
    "MIN_SHARPNESS",
    "Neighbour",
    "choose_cluster",
    "close_pairs",
    "cluster_faces",
    "clusterable",
    "sharpness",
]

#: Faces closer than this are joined (L2-normalised embeddings); measured by bench/cluster.py.
CLUSTER_THRESHOLD = 0.33
#: Faces whose box is narrower or lower than this (pixels) are kept but never clustered.
MIN_FACE_SIDE = 40
#: Faces blurrier than this (`sharpness`) are kept but never clustered.
MIN_SHARPNESS = 20.0
#: Rows of the distance matrix computed at once (rows x faces float32 in memory).
BLOCK_ROWS = 2048


@dataclass(frozen=True)
class Neighbour:
    """A face near a new face: its cluster (None: none) and photo, and the distance."""

    cluster: int | None
    photo: int
    distance: float


def sharpness(grey: np.ndarray) -> float:
    """Variance of the Laplacian of a face crop (2-D, values 0..255) resized to 64 px wide:
    low for blurred or featureless faces, independent of the face's size."""
    if grey.ndim != 2 or min(grey.shape) < 3:
        return 0.0
    pixels = grey.astype(np.float32)
    laplacian = (
        pixels[:-2, 1:-1]
        + pixels[2:, 1:-1]
        + pixels[1:-1, :-2]
        + pixels[1:-1, 2:]
        - 4 * pixels[1:-1, 1:-1]
    )
    return float(laplacian.var())


def clusterable(box: Box, face_sharpness: float | None) -> bool:
    """Whether a face is good enough to be clustered (an unknown sharpness counts as good)."""
    big_enough = min(box.right - box.left, box.bottom - box.top) >= MIN_FACE_SIDE
    return big_enough and (face_sharpness is None or face_sharpness >= MIN_SHARPNESS)


def close_pairs(
    vectors: np.ndarray, threshold: float
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(rows i, rows j, distances) of every pair i < j closer than `threshold`, a block of
    rows at a time (exact; the embeddings are unit vectors, so d² = 2 - 2 cos)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    limit = 2.0 - threshold * threshold  # d < t  <=>  2 cos > 2 - t²
    for start in range(0, len(vectors), BLOCK_ROWS):
        block = vectors[start : start + BLOCK_ROWS]
        cosines = 2.0 * (block @ vectors[start:].T)
        rows, columns = np.nonzero(cosines > limit)
        keep = columns > rows  # each pair once, never a face with itself
        rows, columns = rows[keep], columns[keep]
        squared = np.maximum(2.0 - cosines[rows, columns], 0.0)
        yield rows + start, columns + start, np.sqrt(squared)


def cluster_faces(
    vectors: np.ndarray, photos: Sequence[int], threshold: float = CLUSTER_THRESHOLD
) -> np.ndarray:
    """A cluster label (0, 1, ...) for each face (row of `vectors`, from photo `photos[i]`);
    faces of one photo never share a label."""
    import dlib

    count = len(vectors)
    if count == 0:
        return np.zeros(0, np.int64)
    photo_of = np.asarray(photos)
    edges: list[tuple[int, int, float]] = []
    for rows, columns, found in close_pairs(vectors, threshold):
        other_photo = photo_of[rows] != photo_of[columns]
        weights = 1.0 - found[other_photo] / threshold
        edges.extend(
            zip(
                rows[other_photo].tolist(),
                columns[other_photo].tolist(),
                weights.tolist(),
                strict=True,
            )
        )
    # dlib labels only the vertices that appear in an edge list; a self-edge keeps every face.
    edges.extend((i, i, 0.0) for i in range(count))
    labels = np.asarray(dlib.chinese_whispers(edges), np.int64)
    return _separate_same_photo(labels, photo_of, edges)


def _separate_same_photo(
    labels: np.ndarray, photos: np.ndarray, edges: list[tuple[int, int, float]]
) -> np.ndarray:
    """Keep in each cluster the face of each photo best tied to the rest; the others leave."""
    strength = np.zeros(len(labels))
    for i, j, weight in edges:
        if i != j and labels[i] == labels[j]:
            strength[i] += weight
            strength[j] += weight
    labels = labels.copy()
    next_label = int(labels.max()) + 1 if len(labels) else 0
    order = np.lexsort((-strength, photos, labels))  # by cluster, photo, strongest first
    previous: tuple[int, int] | None = None
    for face in order.tolist():
        key = (int(labels[face]), int(photos[face]))
        if key == previous:  # a weaker face of a photo already in this cluster
            labels[face] = next_label
            next_label += 1
        else:
            previous = key
    return labels


def choose_cluster(
    neighbours: Sequence[Neighbour],
    photo: int,
    threshold: float = CLUSTER_THRESHOLD,
    photos_of_cluster: dict[int, set[int]] | None = None,
) -> int | None:
    """The cluster a new face of `photo` joins: the one its neighbours closer than
    `threshold` vote for most (by closeness), never one that holds a face of the same
    photo; None when no neighbour's cluster qualifies (the face starts its own)."""
    votes: dict[int, float] = {}
    for near in neighbours:
        if near.cluster is None or near.distance >= threshold or near.photo == photo:
            continue
        votes[near.cluster] = votes.get(near.cluster, 0.0) + 1.0 - near.distance / threshold
    holding = photos_of_cluster or {}
    eligible = [
        (vote, -cluster)
        for cluster, vote in votes.items()
        if photo not in holding.get(cluster, set())
    ]
    return -max(eligible)[1] if eligible else None
