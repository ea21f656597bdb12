"""Discovering people: cluster the faces nobody named, in full or as new faces arrive.

`cluster_all` re-clusters every unnamed face (clustering.cluster_faces) and keeps cluster
ids stable where it can: a new cluster takes the id of the old cluster most of its faces
were in. `cluster_new` places only the faces clustering has not considered yet, one at a
time in id order, next to the clusters their close neighbours in the vector index are in
(clustering.choose_cluster), which is what indexing runs after every batch. Faces below
the quality bar are recorded as considered and left out of every cluster.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..entities import UnnamedFaces
from ..store.base import Store
from ..vector_index import VectorIndex
from .clustering import CLUSTER_THRESHOLD, choose_cluster, cluster_faces, clusterable

__all__ = ["ClusterReport", "cluster_all", "cluster_new"]

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ClusterReport:
    """What a clustering run did."""

    considered: int  # unnamed faces looked at
    clustered: int  # of them, given a cluster (the rest are below the quality bar)
    joined: int  # incremental: faces that joined an existing cluster
    clusters: int  # clusters of two faces or more in the catalogue afterwards
    faces_in_clusters: int
    below_quality: int  # faces in the catalogue below the bar
    seconds: float


def cluster_all(store: Store, model: str, threshold: float = CLUSTER_THRESHOLD) -> ClusterReport:
    """Cluster every unnamed face of `model` again from scratch (ids kept where possible)."""
    started = time.monotonic()
    faces = store.unnamed_faces(model, only_new=False)
    good = _good(faces)
    labels = cluster_faces(faces.vectors[good], faces.photos[good].tolist(), threshold)
    old = store.cluster_of_faces(faces.ids[good].tolist())
    ids = _stable_ids(store, faces.ids[good], labels, {f: c for f, (c, _) in old.items()})
    assignments: list[tuple[int, int | None]] = [
        (int(face), ids[label]) for face, label in zip(faces.ids[good], labels, strict=True)
    ]
    assignments += [(int(face), None) for face in faces.ids[~good]]
    store.set_clusters(assignments, replace=True)
    return _report(store, len(faces.ids), int(good.sum()), 0, started)


def _stable_ids(
    store: Store, faces: np.ndarray, labels: np.ndarray, old: dict[int, int | None]
) -> dict[int, int]:
    """A cluster id for each label: the old id most of its faces had, unless a larger
    cluster took it first; fresh ids for the rest."""
    votes: dict[int, Counter[int]] = {}
    for face, label in zip(faces.tolist(), labels.tolist(), strict=True):
        previous = old.get(face)
        if previous is not None:
            votes.setdefault(label, Counter())[previous] += 1
    sizes = Counter(labels.tolist())
    ids: dict[int, int] = {}
    taken: set[int] = set()
    for label, _ in sizes.most_common():
        for previous, _ in votes.get(label, Counter()).most_common():
            if previous not in taken:
                ids[label] = previous
                taken.add(previous)
                break
    fresh = [label for label in sizes if label not in ids]
    first = store.new_cluster_ids(len(fresh)) if fresh else 0
    ids.update({label: first + n for n, label in enumerate(fresh)})
    return ids


def cluster_new(
    store: Store, index: VectorIndex, model: str, threshold: float = CLUSTER_THRESHOLD
) -> ClusterReport:
    """Place the unnamed faces clustering has not considered yet; the rest stay as they are."""
    started = time.monotonic()
    faces = store.unnamed_faces(model, only_new=True)
    if not len(faces.ids):
        return _report(store, 0, 0, 0, started)
    good = _good(faces).tolist()
    found = index.range_search(faces.vectors, threshold)
    near = store.cluster_of_faces(sorted({int(i) for hits in found for i in hits.ids}))
    clusters = _Clusters(store, {c for c, _ in near.values() if c is not None}, model)
    placed: dict[int, int | None] = {}
    joined, fresh = 0, list[int]()
    for row, face in enumerate(faces.ids.tolist()):
        if not good[row]:
            placed[face] = None
            continue
        vector, photo = faces.vectors[row], int(faces.photos[row])
        nearby = {placed.get(int(i), near.get(int(i), (None, 0))[0]) for i in found[row].ids}
        candidates = {c: clusters.sums[c] for c in nearby if c is not None}
        cluster = choose_cluster(vector, candidates, photo, clusters.photos, threshold)
        if cluster is None:
            cluster = -1 - len(fresh)  # a placeholder until fresh ids are reserved
            fresh.append(face)
        else:
            joined += 1
        placed[face] = cluster
        clusters.add(cluster, vector, photo)
    first = store.new_cluster_ids(len(fresh)) if fresh else 0
    real = {-1 - n: first + n for n in range(len(fresh))}
    assignments = [(face, real.get(c, c) if c is not None else None) for face, c in placed.items()]
    store.set_clusters(assignments, replace=False)
    return _report(store, len(faces.ids), sum(good), joined, started)


class _Clusters:
    """The sums of the vectors and the photos of the clusters new faces may join."""

    def __init__(self, store: Store, cluster_ids: set[int], model: str) -> None:
        members = store.cluster_members(sorted(cluster_ids))
        ids = np.array(sorted(f for faces in members.values() for f in faces), dtype=np.int64)
        found, vectors = store.embeddings_of(ids, model) if len(ids) else (ids, np.zeros((0, 0)))
        row_of = {int(face): row for row, face in enumerate(found.tolist())}
        self.sums: dict[int, tuple[np.ndarray, int]] = {}
        for cluster, faces in members.items():
            rows = [row_of[f] for f in faces if f in row_of]
            self.sums[cluster] = (vectors[rows].sum(axis=0, dtype=np.float64), len(rows))
        self.photos = store.photos_of_clusters(cluster_ids)

    def add(self, cluster: int, vector: np.ndarray, photo: int) -> None:
        total, count = self.sums.get(cluster, (np.zeros(len(vector)), 0))
        self.sums[cluster] = (total + vector, count + 1)
        self.photos.setdefault(cluster, set()).add(photo)


def _good(faces: UnnamedFaces) -> np.ndarray:
    """Which faces are above the quality bar (booleans)."""
    pairs = zip(faces.boxes, faces.sharpness, strict=True)
    return np.array([clusterable(box, sharp) for box, sharp in pairs], dtype=bool)


def _report(
    store: Store, considered: int, clustered: int, joined: int, started: float
) -> ClusterReport:
    clusters, in_clusters, poor = store.cluster_stats()
    return ClusterReport(
        considered, clustered, joined, clusters, in_clusters, poor, time.monotonic() - started
    )
