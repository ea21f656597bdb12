"""Group faces nobody has named into likely people.

Average linkage, made to scale: each face starts as a cluster of its own, and the two
clusters whose faces are closest on average merge, again and again, while that average
(of squared distances) stays under the clustering threshold, a stricter one than search's
because a wrong merge costs more than a missed one (docs/clustering.md has the measurements
behind the method and the threshold). Two clusters holding faces of one photo never merge:
two faces in one photo are two people.

New faces join incrementally (`choose_cluster`) by the same rule: the cluster of their close
neighbours whose faces are closest on average, if under the threshold and holding no face of
the same photo, else a cluster of their own. Everything here is arrays in, arrays out; the
catalogue stores the labels (people/discovery.py).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from ..entities import Box

__all__ = [
    "CLUSTER_THRESHOLD",
    "MIN_FACE_SIDE",
    "MIN_SHARPNESS",
    "choose_cluster",
    "close_pairs",
    "cluster_faces",
    "clusterable",
]

#: Clusters merge while their faces' mean squared distance is under this squared (unit
#: embeddings): pairwise precision 0.98 on lfw_dev with labels hidden (bench/cluster.py).
CLUSTER_THRESHOLD = 0.32
#: Faces whose box is narrower or lower than this (pixels) are kept but never clustered.
MIN_FACE_SIDE = 40
#: Faces blurrier than this (faces/quality.py) are kept but never clustered.
MIN_SHARPNESS = 20.0
#: Cells of the distance matrix computed at once (float32: 256 MB), in blocks of rows.
BLOCK_CELLS = 1 << 26


def clusterable(box: Box, face_sharpness: float | None) -> bool:
    """Whether a face is good enough to be clustered (an unknown sharpness counts as good)."""
    big_enough = min(box.width, box.height) >= MIN_FACE_SIDE
    return big_enough and (face_sharpness is None or face_sharpness >= MIN_SHARPNESS)


def close_pairs(
    vectors: np.ndarray, threshold: float
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(rows i, rows j, distances) of every pair i < j closer than `threshold`, a block of
    rows at a time (exact; the embeddings are unit vectors, so d² = 2 - 2 cos)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    limit = 2.0 - threshold * threshold  # d < t  <=>  2 cos > 2 - t²
    step = max(64, BLOCK_CELLS // max(1, len(vectors)))
    for start in range(0, len(vectors), step):
        block = vectors[start : start + step]
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
    faces of one photo never share a label.

    Average linkage on squared distances: the two clusters whose faces are closest on
    average (mean d² over every pair across them) merge, again and again, while that mean
    is under `threshold`²; two clusters holding faces of one photo never merge. For unit
    vectors mean d² = 2 - 2 (sum A . sum B) / (|A| |B|), so each candidate costs one dot
    product of the clusters' sums, and only clusters joined by a pair closer than the
    threshold can qualify (a mean under t² needs one d under t): the exact close pairs are
    the whole graph, memory grows with the faces, not their square.
    """
    count = len(vectors)
    if count == 0:
        return np.zeros(0, np.int64)
    photo_of = np.asarray(photos)
    merging = _Merging(np.asarray(vectors, dtype=np.float64), photo_of)
    for rows, columns, found in close_pairs(vectors, threshold):
        other_photo = photo_of[rows] != photo_of[columns]
        merging.link(rows[other_photo], columns[other_photo], found[other_photo])
    return merging.run(threshold * threshold)


class _Merging:
    """The state of the agglomeration: clusters' vector sums, sizes, photos, neighbours."""

    def __init__(self, vectors: np.ndarray, photos: np.ndarray) -> None:
        count = len(vectors)
        self.sums = vectors.copy()
        self.size = np.ones(count, np.int64)
        self.photos: list[set[int]] = [{int(photo)} for photo in photos]
        self.neighbours: list[set[int]] = [set() for _ in range(count)]
        self.owner = np.arange(count)  # cluster of each face (updated at the end)
        self.version = np.zeros(count, np.int64)
        self.heap: list[tuple[float, int, int, int, int]] = []

    def link(self, rows: np.ndarray, columns: np.ndarray, found: np.ndarray) -> None:
        for i, j, d in zip(rows.tolist(), columns.tolist(), found.tolist(), strict=True):
            self.neighbours[i].add(j)
            self.neighbours[j].add(i)
            self.heap.append((d * d, i, j, 0, 0))

    def run(self, limit: float) -> np.ndarray:
        heap = self.heap
        heapq.heapify(heap)
        alive = np.ones(len(self.size), dtype=bool)
        while heap and heap[0][0] < limit:
            _, a, b, version_a, version_b = heapq.heappop(heap)
            stale = self.version[a] != version_a or self.version[b] != version_b
            if stale or not (alive[a] and alive[b]) or self.photos[a] & self.photos[b]:
                continue
            if self.size[a] < self.size[b]:
                a, b = b, a
            self._merge(a, b)
            alive[b] = False
            for other in self.neighbours[a]:
                if not self.photos[a] & self.photos[other]:
                    score = self._mean_squared(a, other)
                    if score < limit:
                        item = (score, a, other, int(self.version[a]), int(self.version[other]))
                        heapq.heappush(heap, item)
        return self._labels()

    def _merge(self, a: int, b: int) -> None:
        self.sums[a] += self.sums[b]
        self.size[a] += self.size[b]
        self.photos[a] |= self.photos[b]
        for other in self.neighbours[b]:
            self.neighbours[other].discard(b)
            if other != a:
                self.neighbours[other].add(a)
                self.neighbours[a].add(other)
        self.neighbours[a].discard(b)
        self.neighbours[b] = set()
        self.owner[b] = a
        self.version[a] += 1

    def _mean_squared(self, a: int, b: int) -> float:
        product = float(self.sums[a] @ self.sums[b])
        return 2.0 - 2.0 * product / float(self.size[a] * self.size[b])

    def _labels(self) -> np.ndarray:
        owner = self.owner
        while True:  # follow merged clusters to the one that absorbed them
            deeper = owner[owner]
            if np.array_equal(deeper, owner):
                break
            owner = deeper
        _, labels = np.unique(owner, return_inverse=True)
        return labels.astype(np.int64)


def choose_cluster(
    vector: np.ndarray,
    candidates: Mapping[int, tuple[np.ndarray, int]],
    photo: int,
    photos_of_cluster: Mapping[int, set[int]],
    threshold: float = CLUSTER_THRESHOLD,
) -> int | None:
    """The cluster a new face (unit `vector`, of `photo`) joins, by the rule `cluster_faces`
    merges by: of the `candidates` (cluster -> (sum of its faces' vectors, their count): the
    clusters of the face's neighbours closer than `threshold`), the one whose faces are
    closest on average, if that mean d² is under threshold², never one that holds a face of
    the same photo; None when none qualifies (the face starts a cluster of its own)."""
    best: tuple[float, int] | None = None
    for cluster, (total, count) in candidates.items():
        if photo in photos_of_cluster.get(cluster, ()):
            continue
        mean_squared = 2.0 - 2.0 * float(vector @ total) / count
        if mean_squared < threshold * threshold and (
            best is None or (mean_squared, cluster) < best
        ):
            best = (mean_squared, cluster)
    return None if best is None else best[1]
