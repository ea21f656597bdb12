"""Cluster the labelled dev sets with the labels hidden, and score the clusters against them.

Every face of every photo of a set (`labels.csv`) is clustered, each with its photo's id so
that two faces of one photo are kept apart; only the labelled face of each photo (the one the
catalogue would take, `PhotoFaces.labelled`) is scored against the labels:

* pairwise precision / recall / F1 over pairs of labelled faces (a pair is predicted-same when
  both faces share a cluster; same in truth when both photos are labelled with one person);
* clusters holding 2+ labelled faces, and clusters in total (all faces), against the number
  of people (with a labelled face found; in brackets, people with 2+ such photos); seconds.

Methods, each at every threshold of THRESHOLDS (0.26 to 0.38; average linkage also at
EXTRA_THRESHOLDS, since it cuts on mean distances):

* ours, `iddetective.people.clustering.cluster_faces`: average linkage on squared distances over
  the graph of exact close pairs (cluster sums make each candidate one dot product; two
  clusters holding faces of one photo never merge), linear memory, extended one face at a
  time by `choose_cluster`;
* `CW unweighted`: Chinese whispers (dlib.chinese_whispers) over the same close pairs of
  different photos, then the faces of one photo in one cluster separated (what an earlier
  version of ours did, with weights 1 - d/t: no better);
* `dlib chinese_whispers_clustering`: dlib's classic (unweighted, O(n^2) in C++, no photo
  constraint), what face_recognition users do (dlib's example's raw 0.5 is 0.5 / RAW_NORM =
  0.35 on our normalised vectors);
* `DBSCAN`: scikit-learn, min_samples 2, eps = threshold, euclidean (noise = singletons);
* `average linkage`: agglomerative, scipy's `linkage(..., "average")` (what scikit-learn's
  AgglomerativeClustering(linkage="average") computes) cut at the threshold.

The baselines know nothing of photos. Then, on lfw_dev:

* ours and CW unweighted over ORDERS orders of the faces (dlib's Chinese whispers visits
  vertices in a seeded pseudo-random order, and ties in ours break by face order): mean,
  min and max of precision and recall;
* incremental vs full: `cluster_faces` on a random 80 % of the faces, the other 20 % added one
  at a time with `choose_cluster` (neighbours within the threshold by a brute-force numpy scan,
  no qualifying cluster = a cluster of its own); pairwise F1 of the incremental labels against
  a full clustering of everything (all faces), and both against the truth;
* the quality bar (`clusterable`: box side >= MIN_FACE_SIDE and sharpness >= MIN_SHARPNESS),
  on every set: faces dropped and precision/recall of `cluster_faces` on the faces kept. Boxes
  and sharpness are not in the embeddings cache: a detection-only pass (decode, detect,
  `face_sharpness`, as `FacePipeline.analyse_image` does, no embedding) computes them once and
  caches them in bench/.cache/ (about a minute for lfw_dev on 2 workers, on the first run);
* scale: synthetic face-like embeddings (identities = random unit centres around a common
  direction so impostors are ~0.9 apart, members = centre + Gaussian noise, genuine ~0.3,
  4 faces per identity on average, 2 faces per photo on average, random photo ids); the full
  `cluster_faces` is timed in a fresh process, with its peak RSS (ru_maxrss).

The script ends with the recommendation: the method and threshold with the highest recall on
lfw_dev among those with pairwise precision >= TARGET_PRECISION, overall, among the methods
that scale (linear memory, new faces added one at a time), and among those reaching it in every
face order.

Embeddings come from `iddetective.evaluation.evaluate.embed_photos` and its cache
(~/.cache/iddetective/eval; the first run on lfw_dev embeds for ~3 minutes on 2 workers).
Needs scikit-learn for DBSCAN and scipy (installed with it) for average linkage: `pip install
scikit-learn` in the virtualenv, for the bench only (without them those rows are skipped).

    python bench/cluster.py                 # all four sets, scale 100k (~3 min, caches warm)
    python bench/cluster.py --quick         # scale 20k, 2 orders, 1 incremental threshold
    python bench/cluster.py --sets lfw_dev --scale 0

Photo sets come from $IDDETECTIVE_FACES (default ../shared/faces beside the repository).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from iddetective.entities import Box
from iddetective.evaluation.evaluate import embed_photos, read_labelled_set
from iddetective.matching import distances
from iddetective.people import clustering
from iddetective.people.clustering import (
    CLUSTER_THRESHOLD,
    MIN_FACE_SIDE,
    MIN_SHARPNESS,
    choose_cluster,
    close_pairs,
    cluster_faces,
    clusterable,
)

REPO = Path(__file__).resolve().parent.parent
CACHE_DIR = Path(__file__).resolve().parent / ".cache"
SETS = ("lfw_dev", "deepface", "face_recognition", "orl_att")
THRESHOLDS = (0.26, 0.27, 0.28, 0.29, 0.30, 0.31, 0.32, 0.33, 0.35, 0.38)
#: Average linkage merges on the mean distance, so its useful cut is higher.
EXTRA_THRESHOLDS = (0.40, 0.42, 0.45, 0.50)
TARGET_PRECISION = 0.98
INCREMENTAL_SHARE = 0.2
INCREMENTAL_THRESHOLDS = (0.30, CLUSTER_THRESHOLD, 0.35)
#: Face orders (the set's, then shuffles) ours and CW unweighted are run on.
ORDERS = 5
SEED = 20240611
SCALE_DIM = 128
SCALE_FACES_PER_PERSON = 4
SCALE_FACES_PER_PHOTO = 2
SCALE_GENUINE = 0.30  # typical distance of two faces of one synthetic person
SCALE_IMPOSTOR = 0.90  # typical distance of two synthetic people
QUALITY_VERSION = 1
OURS = "sparse average linkage (cluster_faces, ours)"

Labels = np.ndarray
Method = Callable[["FaceSet", float], Labels]


def faces_root() -> Path:
    """`$IDDETECTIVE_FACES`, else `../shared/faces` relative to the repository root."""
    return Path(os.environ.get("IDDETECTIVE_FACES") or REPO.parent / "shared" / "faces")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- data ----------------------------------------------------------------------------------------
@dataclass
class FaceSet:
    """Every face of one set: vectors, photo of each face, and the labelled faces' people."""

    name: str
    paths: list[str]
    vectors: np.ndarray  # (faces, 128), L2-normalised
    photos: np.ndarray  # photo index of each face
    faces_per_photo: np.ndarray  # faces found in each photo
    labelled_rows: np.ndarray  # the row of each photo's labelled face (photos with a face)
    person: np.ndarray  # person id of each labelled face (aligned with labelled_rows)

    @property
    def people(self) -> int:
        return len(np.unique(self.person))

    @property
    def people_with_several(self) -> int:
        return int((np.bincount(self.person) >= 2).sum()) if len(self.person) else 0


def load_set(name: str, workers: int) -> FaceSet:
    labelled = read_labelled_set(str(faces_root() / name / "labels.csv"))
    started = time.monotonic()
    last = [0.0]

    def progress(done: int, total: int) -> None:
        if time.monotonic() - last[0] > 20 or done == total:
            last[0] = time.monotonic()
            log(f"{name}: {done}/{total} photos embedded or cached")

    run = embed_photos(labelled.paths, workers, progress=progress)
    log(
        f"{name}: {run.from_cache} photos from the cache, {run.embedded} embedded, "
        f"{time.monotonic() - started:.0f} s"
    )
    ids = {person: i for i, person in enumerate(dict.fromkeys(labelled.people))}
    vectors, photos, labelled_rows, person = [], [], [], []
    row = 0
    for number, (photo, who) in enumerate(zip(run.photos, labelled.people, strict=True)):
        vectors.append(photo.vectors)
        photos += [number] * photo.faces
        if photo.faces and photo.labelled >= 0:
            labelled_rows.append(row + photo.labelled)
            person.append(ids[who])
        row += photo.faces
    return FaceSet(
        name,
        list(labelled.paths),
        np.ascontiguousarray(np.concatenate(vectors), np.float32),
        np.array(photos, np.int64),
        np.array([photo.faces for photo in run.photos], np.int64),
        np.array(labelled_rows, np.int64),
        np.unique(np.array(person, np.int64), return_inverse=True)[1],
    )


# -- scoring -------------------------------------------------------------------------------------
def same_pairs(*labelings: np.ndarray) -> int:
    """Pairs of items that share a label in every one of `labelings`."""
    if len(labelings[0]) == 0:
        return 0
    _, counts = np.unique(np.stack(labelings, axis=1), axis=0, return_counts=True)
    return int((counts * (counts - 1) // 2).sum())


@dataclass(frozen=True)
class Pairwise:
    precision: float
    recall: float
    f1: float


def pairwise(predicted: np.ndarray, truth: np.ndarray) -> Pairwise:
    """Pairwise precision, recall and F1 of `predicted` labels against `truth` labels."""
    both = same_pairs(predicted, truth)
    said, true = same_pairs(predicted), same_pairs(truth)
    precision = both / said if said else 1.0
    recall = both / true if true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Pairwise(precision, recall, f1)


@dataclass(frozen=True)
class Row:
    method: str
    threshold: float
    score: Pairwise
    clusters_labelled: int  # clusters with 2+ labelled faces
    clusters: int  # clusters in total (all faces)
    seconds: float


def score(faces: FaceSet, method: str, threshold: float, labels: Labels, seconds: float) -> Row:
    mine = labels[faces.labelled_rows]
    _, counts = np.unique(mine, return_counts=True)
    return Row(
        method,
        threshold,
        pairwise(mine, faces.person),
        int((counts >= 2).sum()),
        len(np.unique(labels)),
        seconds,
    )


# -- methods -------------------------------------------------------------------------------------
def ours(faces: FaceSet, threshold: float) -> Labels:
    return cluster_faces(faces.vectors, faces.photos.tolist(), threshold)


def unweighted(faces: FaceSet, threshold: float) -> Labels:
    """cluster_faces with every edge of weight 1 (the separation still uses those weights)."""
    import dlib

    edges: list[tuple[int, int, float]] = []
    for rows, columns, _ in close_pairs(faces.vectors, threshold):
        keep = faces.photos[rows] != faces.photos[columns]
        pairs = zip(rows[keep].tolist(), columns[keep].tolist(), strict=True)
        edges.extend((i, j, 1.0) for i, j in pairs)
    edges.extend((i, i, 0.0) for i in range(len(faces.vectors)))
    labels = np.asarray(dlib.chinese_whispers(edges), np.int64)
    return separate_same_photo(labels, faces.photos, edges)


def separate_same_photo(
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


_DLIB_VECTORS: dict[str, list] = {}


def dlib_classic(faces: FaceSet, threshold: float) -> Labels:
    import dlib

    if faces.name not in _DLIB_VECTORS:
        _DLIB_VECTORS[faces.name] = [dlib.vector(v.astype(float).tolist()) for v in faces.vectors]
    return np.asarray(dlib.chinese_whispers_clustering(_DLIB_VECTORS[faces.name], threshold))


def singletons_for_noise(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels, np.int64).copy()
    noise = labels < 0
    labels[noise] = labels.max(initial=-1) + 1 + np.arange(int(noise.sum()))
    return labels


def dbscan(faces: FaceSet, threshold: float) -> Labels:
    from sklearn.cluster import DBSCAN

    found = DBSCAN(eps=threshold, min_samples=2, metric="euclidean").fit_predict(faces.vectors)
    return singletons_for_noise(found)


_LINKAGE: dict[str, np.ndarray] = {}


def average_linkage(faces: FaceSet, threshold: float) -> Labels:
    """Average linkage cut at `threshold` (the tree is built once per set and reused: the
    time of the first threshold includes it)."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import pdist

    if faces.name not in _LINKAGE:
        _LINKAGE[faces.name] = linkage(pdist(faces.vectors.astype(np.float64)), "average")
    return fcluster(_LINKAGE[faces.name], threshold, "distance")


def have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def methods() -> list[tuple[str, Method, Sequence[float]]]:
    found = scalable_methods()
    if have("sklearn"):
        found.append(("DBSCAN (min_samples 2)", dbscan, THRESHOLDS))
    else:
        log("scikit-learn is not installed: no DBSCAN rows (pip install scikit-learn)")
    if have("scipy"):
        found.append(("average linkage", average_linkage, THRESHOLDS + EXTRA_THRESHOLDS))
    else:
        log("scipy is not installed: no average linkage rows (pip install scikit-learn)")
    return found


def scalable_methods() -> list[tuple[str, Method, Sequence[float]]]:
    """The methods with linear memory (the close-pair graph) that new faces can extend."""
    return [
        (OURS, ours, THRESHOLDS),
        ("CW unweighted (+ same-photo separation)", unweighted, THRESHOLDS),
        ("dlib chinese_whispers_clustering", dlib_classic, THRESHOLDS),
    ]


def compare(faces: FaceSet) -> list[Row]:
    rows = []
    for name, method, thresholds in methods():
        for threshold in thresholds:
            started = time.perf_counter()
            labels = method(faces, threshold)
            rows.append(score(faces, name, threshold, labels, time.perf_counter() - started))
    _DLIB_VECTORS.clear()
    _LINKAGE.clear()
    return rows


def header(faces: FaceSet) -> str:
    no_face = int((faces.faces_per_photo == 0).sum())
    return (
        f"{len(faces.paths):,} photos ({no_face} with no face found), "
        f"{len(faces.vectors):,} faces, {len(faces.labelled_rows):,} labelled faces of "
        f"{faces.people:,} people ({faces.people_with_several:,} with 2+ photos), "
        f"{same_pairs(faces.person):,} genuine pairs of labelled faces"
    )


def comparison_table(faces: FaceSet, rows: Sequence[Row]) -> str:
    lines = [
        f"### {faces.name}: clustering with the labels hidden",
        "",
        header(faces),
        "",
        "| method | threshold | precision | recall | F1 | clusters of 2+ labelled faces "
        f"(people with 2+: {faces.people_with_several}) | clusters in total "
        f"(people: {faces.people}) | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.method} | {row.threshold:.2f} | {row.score.precision:.4f} | "
            f"{row.score.recall:.4f} | {row.score.f1:.4f} | {row.clusters_labelled:,} | "
            f"{row.clusters:,} | {row.seconds:.2f} |"
        )
    return "\n".join(lines)


# -- stability over face orders ------------------------------------------------------------------
def reordered(faces: FaceSet, order: np.ndarray) -> FaceSet:
    """The same faces in another order (row `i` of the result is row `order[i]`)."""
    position = np.empty_like(order)
    position[order] = np.arange(len(order))
    return FaceSet(
        f"{faces.name}#reordered",
        faces.paths,
        faces.vectors[order],
        faces.photos[order],
        faces.faces_per_photo,
        position[faces.labelled_rows],
        faces.person,
    )


@dataclass(frozen=True)
class Spread:
    method: str
    threshold: float
    precision: np.ndarray  # one per order
    recall: np.ndarray


def stability(faces: FaceSet, orders: int) -> list[Spread]:
    """The figures of `ours` and `unweighted` over `orders` orders of the faces (the set's,
    then shuffles): Chinese whispers visits vertices in a pseudo-random order."""
    rng = np.random.default_rng(SEED)
    shuffles = [np.arange(len(faces.vectors))]
    shuffles += [rng.permutation(len(faces.vectors)) for _ in range(orders - 1)]
    spreads = []
    for name, method, thresholds in scalable_methods()[:2]:
        for threshold in thresholds:
            scores = []
            for order in shuffles:
                moved = reordered(faces, order)
                scores.append(score(moved, name, threshold, method(moved, threshold), 0.0).score)
            spreads.append(
                Spread(
                    name,
                    threshold,
                    np.array([s.precision for s in scores]),
                    np.array([s.recall for s in scores]),
                )
            )
    return spreads


def stability_table(faces: FaceSet, spreads: Sequence[Spread]) -> str:
    lines = [
        f"### {faces.name}: over {len(spreads[0].precision)} orders of the faces",
        "",
        f"The set's order, then random shuffles (seed {SEED}): mean [min, max] of each figure.",
        "",
        "| method | threshold | precision | recall |",
        "|---|---|---|---|",
    ]
    for spread in spreads:
        p, r = spread.precision, spread.recall
        lines.append(
            f"| {spread.method} | {spread.threshold:.2f} | {p.mean():.4f} [{p.min():.4f}, "
            f"{p.max():.4f}] | {r.mean():.4f} [{r.min():.4f}, {r.max():.4f}] |"
        )
    return "\n".join(lines)


# -- incremental ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class IncrementalRow:
    threshold: float
    added: int
    agreement: Pairwise
    agreement_labelled: Pairwise
    incremental: Pairwise
    full: Pairwise
    clusters_incremental: int
    clusters_full: int
    ms_per_face: float


def incremental(faces: FaceSet, threshold: float, seed: int) -> IncrementalRow:
    count = len(faces.vectors)
    order = np.random.default_rng(seed).permutation(count)
    first = np.sort(order[: round(count * (1 - INCREMENTAL_SHARE))])
    rest = order[len(first) :]
    labels = np.full(count, -1, np.int64)
    labels[first] = cluster_faces(faces.vectors[first], faces.photos[first].tolist(), threshold)
    photos_of_cluster: dict[int, set[int]] = {}
    for face in first.tolist():
        photos_of_cluster.setdefault(int(labels[face]), set()).add(int(faces.photos[face]))
    present = np.zeros(count, bool)
    present[first] = True
    next_label = int(labels.max()) + 1
    started = time.perf_counter()
    for face in rest.tolist():
        rows = np.flatnonzero(present)
        cosines = faces.vectors[rows] @ faces.vectors[face]
        found = np.sqrt(np.maximum(2.0 - 2.0 * cosines, 0.0))
        near = found < threshold
        photo = int(faces.photos[face])
        candidates = {}
        for cluster in {int(labels[r]) for r in rows[near].tolist()}:
            members = faces.vectors[labels == cluster]
            candidates[cluster] = (members.sum(axis=0, dtype=np.float64), len(members))
        chosen = choose_cluster(
            faces.vectors[face], candidates, photo, photos_of_cluster, threshold
        )
        if chosen is None:
            chosen, next_label = next_label, next_label + 1
        labels[face] = chosen
        photos_of_cluster.setdefault(chosen, set()).add(photo)
        present[face] = True
    seconds = time.perf_counter() - started
    full = cluster_faces(faces.vectors, faces.photos.tolist(), threshold)
    mine, theirs = labels[faces.labelled_rows], full[faces.labelled_rows]
    return IncrementalRow(
        threshold,
        len(rest),
        pairwise(labels, full),
        pairwise(mine, theirs),
        pairwise(mine, faces.person),
        pairwise(theirs, faces.person),
        len(np.unique(labels)),
        len(np.unique(full)),
        1000 * seconds / max(1, len(rest)),
    )


def incremental_table(faces: FaceSet, rows: Sequence[IncrementalRow]) -> str:
    share = round(100 * INCREMENTAL_SHARE)
    lines = [
        f"### {faces.name}: incremental (`choose_cluster`) vs full (`cluster_faces`)",
        "",
        f"{100 - share} % of the {len(faces.vectors):,} faces clustered in full (random, seed "
        f"{SEED}), the other {share} % added one at a time; agreement = pairwise P/R/F1 of the "
        "incremental labels taking the full clustering of everything as the truth.",
        "",
        "| threshold | faces added | agreement, all faces (P / R / F1) | agreement, labelled "
        "faces (F1) | incremental vs truth (P / R / F1) | full vs truth (P / R / F1) | "
        "clusters incremental / full | ms per added face |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def triple(s: Pairwise) -> str:
        return f"{s.precision:.4f} / {s.recall:.4f} / {s.f1:.4f}"

    for row in rows:
        lines.append(
            f"| {row.threshold:.2f} | {row.added:,} | {triple(row.agreement)} | "
            f"{row.agreement_labelled.f1:.4f} | {triple(row.incremental)} | {triple(row.full)} | "
            f"{row.clusters_incremental:,} / {row.clusters_full:,} | {row.ms_per_face:.2f} |"
        )
    return "\n".join(lines)


# -- quality bar ---------------------------------------------------------------------------------
def face_quality(path: str) -> tuple[list[tuple[int, int, int, int]], list[float], str]:
    """Boxes (upright pixels) and sharpness of every face of a photo, largest first, as
    `FacePipeline.analyse_image` computes them, without embedding (runs in a worker)."""
    from iddetective.errors import BadImage
    from iddetective.faces.imaging import decode_image
    from iddetective.faces.pipeline import PipelineSettings, _clip, pipeline_for
    from iddetective.faces.quality import face_sharpness

    pipeline = pipeline_for(PipelineSettings())
    try:
        image = decode_image(Path(path).read_bytes(), path, pipeline.settings.max_side)
    except (BadImage, OSError) as error:
        return [], [], str(error)
    working = image.pixels
    boxes, _ = pipeline.detect(working)
    faces = [
        (_clip(box.scaled(image.scale), image.width, image.height), face_sharpness(working, box))
        for box in boxes
    ]
    faces.sort(key=lambda face: face[0].area, reverse=True)
    return (
        [(b.left, b.top, b.right, b.bottom) for b, _ in faces],
        [s for _, s in faces],
        "",
    )


def face_quality_crashed(path: str) -> tuple[list[tuple[int, int, int, int]], list[float], str]:
    """A photo that killed its worker process: no faces, as one that cannot be read."""
    from iddetective.ingest.indexing import CRASHED

    return [], [], CRASHED


def quality_of(faces: FaceSet, workers: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(boxes (faces, 4), sharpness per face (NaN: unknown), photos whose detection did not
    give the cached embeddings' face count), cached in bench/.cache/."""
    from iddetective.faces.pipeline import PipelineSettings
    from iddetective.processes.pool import map_in_processes

    digest = hashlib.sha256(f"v{QUALITY_VERSION} {PipelineSettings()!r}\n".encode())
    for path in faces.paths:
        digest.update(f"{path}\t{os.stat(path).st_size}\n".encode())
    cache = CACHE_DIR / f"cluster-quality-{faces.name}-{digest.hexdigest()[:16]}.npz"
    if cache.is_file():
        with np.load(cache) as saved:
            return saved["boxes"], saved["sharpness"], int(saved["mismatched"])
    started = time.monotonic()
    found: list[tuple[list[tuple[int, int, int, int]], list[float], str]] = [([], [], "")] * len(
        faces.paths
    )
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    for done, (number, result) in enumerate(
        map_in_processes(face_quality, faces.paths, workers, crashed=face_quality_crashed),
        start=1,
    ):
        found[number] = result
        if done % 500 == 0:
            log(f"{faces.name}: detected {done}/{len(faces.paths)} photos")
    boxes = np.zeros((len(faces.vectors), 4), np.int64)
    sharpness = np.full(len(faces.vectors), np.nan)
    mismatched, row = 0, 0
    for (photo_boxes, photo_sharpness, _), count in zip(found, faces.faces_per_photo, strict=True):
        if len(photo_boxes) == count:
            boxes[row : row + count] = np.array(photo_boxes, np.int64).reshape(-1, 4)
            sharpness[row : row + count] = photo_sharpness
        else:  # unknown: counted as clusterable
            mismatched += 1
            boxes[row : row + count] = (0, 0, 10**6, 10**6)
        row += count
    log(f"{faces.name}: boxes and sharpness of every face in {time.monotonic() - started:.0f} s")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    np.savez(cache, boxes=boxes, sharpness=sharpness, mismatched=mismatched)
    return boxes, sharpness, mismatched


def subset(faces: FaceSet, keep: np.ndarray) -> FaceSet:
    """The faces where `keep`; labelled faces dropped leave the scoring."""
    new_row = np.full(len(keep), -1, np.int64)
    new_row[keep] = np.arange(int(keep.sum()))
    labelled = keep[faces.labelled_rows]
    return FaceSet(
        faces.name,
        faces.paths,
        faces.vectors[keep],
        faces.photos[keep],
        faces.faces_per_photo,
        new_row[faces.labelled_rows[labelled]],
        faces.person[labelled],
    )


def quality_table(sets: Sequence[FaceSet], workers: int, thresholds: Sequence[float]) -> str:
    lines = [
        "### The quality bar (`clusterable`)",
        "",
        f"A face is clustered when its box is at least {MIN_FACE_SIDE} px on its shorter side "
        f"and its sharpness is at least {MIN_SHARPNESS:g}. `cluster_faces` on all faces vs on "
        "the faces kept (scored on the labelled faces kept); 'all labelled' counts each dropped "
        "labelled face as a cluster of its own.",
        "",
        "| set | threshold | faces (labelled) | dropped: too small | dropped: too blurred "
        "(only) | dropped labelled faces | no bar: P / R | bar, faces kept: P / R | bar, all "
        "labelled: R |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for faces in sets:
        boxes, sharpness, mismatched = quality_of(faces, workers)
        small = np.array(
            [not clusterable(Box(*map(int, b)), None) for b in boxes.tolist()], dtype=bool
        )
        keep = np.array(
            [
                clusterable(Box(*map(int, b)), None if np.isnan(s) else float(s))
                for b, s in zip(boxes.tolist(), sharpness.tolist(), strict=True)
            ],
            dtype=bool,
        )
        blurred = ~keep & ~small
        kept = subset(faces, keep)
        dropped_labelled = len(faces.labelled_rows) - len(kept.labelled_rows)
        for threshold in thresholds:
            everything = cluster_faces(faces.vectors, faces.photos.tolist(), threshold)
            bare = pairwise(everything[faces.labelled_rows], faces.person)
            labels = cluster_faces(kept.vectors, kept.photos.tolist(), threshold)
            barred = pairwise(labels[kept.labelled_rows], kept.person)
            spread = np.full(len(faces.vectors), -1, np.int64)
            spread[keep] = labels
            spread = singletons_for_noise(spread)
            overall = pairwise(spread[faces.labelled_rows], faces.person)
            note = f" ({mismatched} photos unmatched, kept)" if mismatched else ""
            lines.append(
                f"| {faces.name} | {threshold:.2f} | {len(faces.vectors):,} "
                f"({len(faces.labelled_rows):,}){note} | {int(small.sum()):,} | "
                f"{int(blurred.sum()):,} | {dropped_labelled:,} | "
                f"{bare.precision:.4f} / {bare.recall:.4f} | "
                f"{barred.precision:.4f} / {barred.recall:.4f} | {overall.recall:.4f} |"
            )
    return "\n".join(lines)


# -- scale ---------------------------------------------------------------------------------------
def synthetic(size: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vectors, photo ids, person ids) of `size` synthetic faces (see the module doc)."""
    rng = np.random.default_rng([seed, size])
    people = max(1, size // SCALE_FACES_PER_PERSON)
    common = rng.standard_normal(SCALE_DIM)
    common /= np.linalg.norm(common)
    # Two centres mu + s g1, mu + s g2 (g ~ N(0, I/D), |g| ~ 1) have cos ~ 1 / (1 + s^2).
    cos = 1.0 - SCALE_IMPOSTOR**2 / 2
    spread = np.sqrt(1.0 / cos - 1.0)
    centres = distances.prepare(
        common + spread * rng.standard_normal((people, SCALE_DIM)) / np.sqrt(SCALE_DIM)
    )
    # Two members c + n1, c + n2 (n ~ N(0, sigma^2 I/D)): d ~ sigma sqrt(2 / (1 + sigma^2)).
    sigma = SCALE_GENUINE / np.sqrt(2 - SCALE_GENUINE**2)
    noise_of_person = sigma * rng.uniform(0.6, 1.4, people)  # some people vary more
    person = rng.integers(0, people, size)
    vectors = np.empty((size, SCALE_DIM), np.float32)
    for start in range(0, size, 50_000):
        who = person[start : start + 50_000]
        noise = rng.standard_normal((len(who), SCALE_DIM)) / np.sqrt(SCALE_DIM)
        vectors[start : start + len(who)] = distances.prepare(
            centres[who] + noise_of_person[who, None] * noise
        )
    photos = rng.integers(0, max(1, size // SCALE_FACES_PER_PHOTO), size)
    return vectors, photos, person


def scale_worker(size: int) -> dict[str, float]:
    """Runs in a fresh process: time and peak RSS of cluster_faces on `size` faces."""
    vectors, photos, person = synthetic(size, SEED)
    sample = np.random.default_rng(SEED).integers(0, size, (20_000, 2))
    sample = sample[sample[:, 0] != sample[:, 1]]
    d = np.linalg.norm(vectors[sample[:, 0]] - vectors[sample[:, 1]], axis=1)
    impostor = d[person[sample[:, 0]] != person[sample[:, 1]]]
    genuine_rows = np.argsort(person, kind="stable")
    runs = person[genuine_rows]
    first, second = (
        genuine_rows[:-1][runs[:-1] == runs[1:]],
        genuine_rows[1:][runs[:-1] == runs[1:]],
    )
    genuine = np.linalg.norm(vectors[first] - vectors[second], axis=1)
    photo_list = photos.tolist()
    scan = {"seconds": 0.0, "pairs": 0}

    def timed_pairs(
        vectors: np.ndarray, threshold: float
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """close_pairs, timing the scan apart from the rest of cluster_faces."""
        blocks = close_pairs(vectors, threshold)
        while True:
            started = time.perf_counter()
            found = next(blocks, None)
            scan["seconds"] += time.perf_counter() - started
            if found is None:
                return
            scan["pairs"] += len(found[0])
            yield found

    clustering.close_pairs = timed_pairs  # this process only: cluster_faces looks it up here
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    labels = cluster_faces(vectors, photo_list, CLUSTER_THRESHOLD)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    clustering.close_pairs = close_pairs
    score = pairwise(labels, person)
    return {
        "size": size,
        "people": len(np.unique(person)),
        "genuine_median": float(np.median(genuine)),
        "genuine_over": float((genuine >= CLUSTER_THRESHOLD).mean()),
        "impostor_median": float(np.median(impostor)),
        "impostor_min": float(impostor.min()),
        "close_pairs": scan["pairs"],
        "close_pair_seconds": scan["seconds"],
        "seconds": seconds,
        "rss_before_mb": before,
        "rss_peak_mb": peak,
        "clusters": len(np.unique(labels)),
        "precision": score.precision,
        "recall": score.recall,
    }


def scale_table(sizes: Sequence[int]) -> str:
    lines = [
        f"### Scale: `cluster_faces` at {CLUSTER_THRESHOLD} on synthetic faces",
        "",
        f"Synthetic: {SCALE_FACES_PER_PERSON} faces per person and {SCALE_FACES_PER_PHOTO} per "
        f"photo on average (random), genuine ~{SCALE_GENUINE}, impostors ~{SCALE_IMPOSTOR} "
        "(measured below on samples). Each size in a fresh process; peak RSS is ru_maxrss, "
        "'before' is after making the data. The close-pair scan is the part of cluster_faces "
        "spent in `close_pairs` (the exact blockwise scan).",
        "",
        "| faces | people | genuine d median (share >= t) | impostor d median (min of "
        "sample) | close pairs | close-pair scan s | cluster_faces s | RSS before / peak MB "
        "| clusters | P / R |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size in sizes:
        log(f"scale: {size:,} synthetic faces")
        done = subprocess.run(
            [sys.executable, __file__, "--scale-worker", str(size)],
            check=True,
            capture_output=True,
            text=True,
        )
        r = json.loads(done.stdout.strip().splitlines()[-1])
        lines.append(
            f"| {r['size']:,} | {r['people']:,} | {r['genuine_median']:.3f} "
            f"({r['genuine_over']:.3f}) | {r['impostor_median']:.3f} ({r['impostor_min']:.3f}) "
            f"| {r['close_pairs']:,} | {r['close_pair_seconds']:.1f} | {r['seconds']:.1f} | "
            f"{r['rss_before_mb']:,.0f} / {r['rss_peak_mb']:,.0f} | {r['clusters']:,} | "
            f"{r['precision']:.4f} / {r['recall']:.4f} |"
        )
    return "\n".join(lines)


# -- recommendation ------------------------------------------------------------------------------
def best_of(rows: Sequence[Row]) -> Row | None:
    """The row with the highest recall among those with precision >= TARGET_PRECISION."""
    ok = [row for row in rows if row.score.precision >= TARGET_PRECISION]
    return max(ok, key=lambda r: (r.score.recall, -r.threshold)) if ok else None


def described(row: Row) -> str:
    s = row.score
    return (
        f"{row.method} at threshold {row.threshold:.2f} (precision {s.precision:.4f}, "
        f"recall {s.recall:.4f}, F1 {s.f1:.4f})"
    )


def recommendation(rows: Sequence[Row], set_name: str, spreads: Sequence[Spread]) -> str:
    lines = [
        f"### Recommendation (pairwise precision >= {TARGET_PRECISION} on {set_name}, "
        "highest recall)",
        "",
        "| method | best threshold | precision | recall | F1 | over face orders: min "
        "precision / mean recall |",
        "|---|---|---|---|---|---|",
    ]
    spread_of = {(s.method, s.threshold): s for s in spreads}
    for method in dict.fromkeys(row.method for row in rows):
        top = best_of([row for row in rows if row.method == method])
        if top is None:
            lines.append(f"| {method} | none reaches {TARGET_PRECISION} | | | | |")
            continue
        spread = spread_of.get((method, top.threshold))
        orders = f"{spread.precision.min():.4f} / {spread.recall.mean():.4f}" if spread else "n/a"
        lines.append(
            f"| {method} | {top.threshold:.2f} | {top.score.precision:.4f} | "
            f"{top.score.recall:.4f} | {top.score.f1:.4f} | {orders} |"
        )
    lines.append("")
    overall = best_of(rows)
    incremental_methods = {name for name, _, _ in scalable_methods()}
    whispers = best_of([row for row in rows if row.method in incremental_methods])
    robust = [
        s for s in spreads if s.precision.min() >= TARGET_PRECISION
    ]  # every order reaches the target
    steady = max(robust, key=lambda s: (s.recall.mean(), -s.threshold)) if robust else None
    if overall is None:
        lines.append(f"No method reaches precision {TARGET_PRECISION} on {set_name}.")
    else:
        lines.append(f"* Overall: **{described(overall)}**.")
    if whispers is not None:
        lines.append(
            "* Among the methods that scale (linear memory, new faces added one at a time): "
            f"**{described(whispers)}**."
        )
    if steady is not None:
        lines.append(
            f"* Reaching {TARGET_PRECISION} in every face order: **{steady.method} at "
            f"{steady.threshold:.2f}** (precision min {steady.precision.min():.4f}, recall "
            f"mean {steady.recall.mean():.4f})."
        )
    lines.append(
        "* scipy's average linkage needs the full distance matrix (n^2 / 2 float64: 40 GB at "
        "100k faces): the yardstick ours approximates on the close-pair graph."
    )
    return "\n".join(lines)


# -- main ----------------------------------------------------------------------------------------
def parse_args(argv: Iterable[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", nargs="+", default=list(SETS), help="labelled sets to use")
    parser.add_argument("--workers", type=int, default=2, help="embedding processes")
    parser.add_argument("--quick", action="store_true", help="scale 20k, fewer extras")
    parser.add_argument(
        "--scale", type=int, nargs="*", default=None, help="synthetic sizes (0: none)"
    )
    parser.add_argument("--scale-worker", type=int, help=argparse.SUPPRESS)
    return parser.parse_args(list(argv) if argv is not None else None)


def main(argv: Iterable[str] | None = None) -> None:
    args = parse_args(argv)
    if args.scale_worker:
        print(json.dumps(scale_worker(args.scale_worker)))
        return
    started = time.monotonic()
    sets = [load_set(name, args.workers) for name in args.sets]
    rows_of: dict[str, list[Row]] = {}
    for faces in sets:
        rows_of[faces.name] = compare(faces)
        print(comparison_table(faces, rows_of[faces.name]))
        print()
    main_set = next((faces for faces in sets if faces.name == "lfw_dev"), sets[0])
    spreads = stability(main_set, 2 if args.quick else ORDERS)
    print(stability_table(main_set, spreads))
    print()
    thresholds = (CLUSTER_THRESHOLD,) if args.quick else INCREMENTAL_THRESHOLDS
    print(incremental_table(main_set, [incremental(main_set, t, SEED) for t in thresholds]))
    print()
    ours_best = best_of([r for r in rows_of[main_set.name] if r.method == OURS])
    bars = sorted({CLUSTER_THRESHOLD, ours_best.threshold if ours_best else CLUSTER_THRESHOLD})
    print(quality_table(sets, args.workers, bars))
    print()
    sizes = args.scale if args.scale is not None else [20_000 if args.quick else 100_000]
    sizes = [size for size in sizes if size > 0]
    if sizes:
        print(scale_table(sizes))
        print()
    print(recommendation(rows_of[main_set.name], main_set.name, spreads))
    print()
    print(f"Total {time.monotonic() - started:.0f} s.")


if __name__ == "__main__":
    main()
