"""Approximate nearest-neighbour study for the embedded store's `VectorIndex`.

What it measures
----------------
Galleries are all real, normalised dlib embeddings of the labelled development sets
(`bench/.cache/<set>-*.npz`, written by `bench/threshold.py`) plus synthetic distractors in two
flavours, reported in separate tables:

* ``face-like``: drawn from a Gaussian with the mean and covariance of the real embeddings,
  then L2-normalised (crowded: every real query has hundreds of them within 0.42 at 100k);
* ``uniform``: uniform random unit vectors (nothing near the real faces).

Queries are the real embeddings of people with at least two photos; each query's own vector
is in the gallery and is excluded from the ground truth and from every answer, so the true
matches are the person's other photos at realistic distances. The ground truth is an exact
float32 scan.

Every candidate design re-ranks its ANN candidates with exact float32 distances (in the
product the float32 vectors live in a memory-mapped file), so the figures are measured after
that re-rank. Range queries get their candidates either from the index's own range search
(IVF: radius = threshold + margin, squared for faiss L2) or from an adaptive top-k (graphs:
k doubles... quadruples while the k-th approximate distance is still within threshold +
margin).

Per configuration and distractor flavour, at the product threshold (0.383) and at 0.42:

* match recall: of the gallery vectors within the threshold, the share returned;
* first-match agreement: over queries whose exact best match is within the threshold, how
  often the returned best match is that vector;
* recall@10 (64 candidates re-ranked; report only);
* single-query latency p50/p99 (one thread) and batched throughput (256 queries, 2 threads);
* build time; resident bytes per face of the loaded index structure (RSS growth of a fresh
  process loading the saved index), the file size per face, and mean candidates re-ranked.

Filtered search (the faces of ~1,000 random people, a few thousand vectors) is measured for
faiss IVF with an `IDSelectorBatch`, faiss HNSW with a selector, usearch (post-filtering,
since its Python API has no predicate) and an exact scan over the gathered allowed vectors.
A last table checks add_with_ids / remove_ids / save / load.

How to run
----------
    python bench/ann_study.py --quick                       # 20k faces, a minute or two
    python bench/ann_study.py --sizes 100000                # prune the candidates
    python bench/ann_study.py --sizes 100000 1000000        # finalists at 1M (~30+ min)

Galleries, ground truth and built indexes are cached under bench/.cache/ann/ (git-ignored),
so reruns are fast; `--only SUBSTRING` restricts the configurations, `--all-at-large` runs
every configuration (including slow graph builds) at every size.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # numpy only does small re-rank products

import faiss
import numpy as np
from usearch.index import Index as UsearchIndex

from iddetective.matching import distances
from iddetective.matching.calibration import calibration_for

#: dlib's shipped thresholds (matching/calibration/dlib-resnet-v1.json).
DLIB = calibration_for("dlib-resnet-v1").thresholds

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
ANN_CACHE = CACHE / "ann"
FACES_ROOT = Path("/work/shared/faces")
SETS = ("lfw_dev", "deepface", "orl_att", "face_recognition")
DIM = 128
THRESHOLDS = (DLIB.match, 0.42)
TRUTH_RADIUS = max(THRESHOLDS)
FLAVOURS = ("face-like", "uniform")
SEED = 20240607
TRAIN_SAMPLE = 100_000
RERANK_K10 = 64  # candidates re-ranked for recall@10
LATENCY_QUERIES = 200
THROUGHPUT_QUERIES = 512
BATCH = 256
FILTER_PEOPLE = 1000
FILTER_QUERIES = 150
SYNTHETIC_PERSON_SIZE = 5  # distractor rows are grouped into "people" of this many faces
LARGE = 200_000  # sizes above this only run configurations marked `large`


# -- data ------------------------------------------------------------------------------------


@dataclass
class RealFaces:
    """Real normalised embeddings (rows with a face) and the person of each row."""

    vectors: np.ndarray
    people: list[str]

    def query_rows(self) -> np.ndarray:
        """Rows of people with at least two photos."""
        counts = Counter(self.people)
        return np.array([i for i, p in enumerate(self.people) if counts[p] >= 2], np.int64)


def load_real(faces_root: Path) -> RealFaces:
    """All cached real embeddings, in labels.csv order (see bench/threshold.py)."""
    vectors, people = [], []
    for name in SETS:
        caches = sorted(CACHE.glob(f"{name}-*.npz"), key=lambda p: p.stat().st_mtime)
        if not caches:
            sys.exit(f"no cached embeddings for {name}: run bench/threshold.py first")
        with (faces_root / name / "labels.csv").open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        with np.load(caches[-1]) as saved:
            found, normalised = saved["faces"] > 0, saved["normalised"]
        if len(rows) != len(found):
            sys.exit(f"{caches[-1]} has {len(found)} rows but labels.csv has {len(rows)}")
        vectors.append(normalised[found])
        people += [f"{name}:{row['person']}" for row, ok in zip(rows, found, strict=True) if ok]
    return RealFaces(distances.prepare(np.concatenate(vectors)), people)


def make_distractors(real: np.ndarray, flavour: str, count: int) -> np.ndarray:
    """`count` unit vectors, face-like (real mean/covariance) or uniform, deterministic."""
    path = ANN_CACHE / f"distractors-{flavour}-{count}-{SEED}.npy"
    if path.is_file():
        return np.load(path)
    rng = np.random.default_rng([SEED, FLAVOURS.index(flavour)])
    out = np.empty((count, DIM), np.float32)
    mean, chol = real.mean(axis=0), np.linalg.cholesky(np.cov(real.T))
    for start in range(0, count, 100_000):
        block = rng.standard_normal((min(100_000, count - start), DIM))
        if flavour == "face-like":
            block = block @ chol.T + mean
        out[start : start + len(block)] = distances.prepare(block)
    ANN_CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, out)
    return out


@dataclass
class Truth:
    """Exact answers per query (own vector excluded): matches within TRUTH_RADIUS, top 10."""

    within_ids: list[np.ndarray]
    within_dist: list[np.ndarray]
    top10: np.ndarray
    best_id: np.ndarray
    best_dist: np.ndarray


def exact_distances(gallery: np.ndarray, query: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Exact float32 Euclidean distances from one query to gallery rows `ids` (the re-rank)."""
    diff = gallery[ids] - query
    return np.sqrt(np.einsum("ij,ij->i", diff, diff))


def compute_truth(gallery: np.ndarray, queries: np.ndarray, rows: np.ndarray) -> Truth:
    """Exact scan (faiss IndexFlatL2, float32), then exact re-computation of the hits."""
    flat = faiss.IndexFlatL2(DIM)
    flat.add(gallery)
    faiss.omp_set_num_threads(2)
    lims, _, found = flat.range_search(queries, (TRUTH_RADIUS + 1e-3) ** 2)
    _, top = flat.search(queries, 12)
    within_ids, within_dist = [], []
    top10 = np.empty((len(queries), 10), np.int64)
    best_id, best_dist = np.empty(len(queries), np.int64), np.empty(len(queries), np.float32)
    for i, (query, own) in enumerate(zip(queries, rows, strict=True)):
        ids = found[lims[i] : lims[i + 1]]
        ids = ids[ids != own]
        dist = exact_distances(gallery, query, ids)
        keep = dist <= TRUTH_RADIUS
        order = np.argsort(dist[keep], kind="stable")
        within_ids.append(ids[keep][order])
        within_dist.append(dist[keep][order])
        near = top[i][top[i] != own]
        near_dist = exact_distances(gallery, query, near)
        order = np.argsort(near_dist, kind="stable")
        top10[i] = near[order][:10]
        best_id[i], best_dist[i] = near[order][0], near_dist[order][0]
    return Truth(within_ids, within_dist, top10, best_id, best_dist)


def cached_truth(gallery: np.ndarray, queries: np.ndarray, rows: np.ndarray, key: str) -> Truth:
    path = ANN_CACHE / f"truth-{key}.npz"
    if path.is_file():
        with np.load(path) as saved:
            lims = saved["lims"]
            split = [slice(lims[i], lims[i + 1]) for i in range(len(lims) - 1)]
            ids, dist = saved["ids"], saved["dist"]
            return Truth(
                [ids[s] for s in split],
                [dist[s] for s in split],
                saved["top10"],
                saved["best_id"],
                saved["best_dist"],
            )
    truth = compute_truth(gallery, queries, rows)
    lims = np.cumsum([0] + [len(x) for x in truth.within_ids])
    np.savez(
        path,
        lims=lims,
        ids=np.concatenate(truth.within_ids),
        dist=np.concatenate(truth.within_dist),
        top10=truth.top10,
        best_id=truth.best_id,
        best_dist=truth.best_dist,
    )
    return truth


# -- indexes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Build:
    """One index to build. kind: 'ivf' (faiss index_factory), 'hnsw' (faiss) or 'usearch'."""

    name: str
    kind: str
    spec: dict[str, Any]
    searches: tuple[dict[str, Any], ...]
    large: bool = False  # also run at sizes above LARGE


def ivf_nlist(factor: float, size: int) -> int:
    return round(factor * np.sqrt(size))


def build_faiss(build: Build, gallery: np.ndarray) -> faiss.Index:
    """Train on a sample (at most TRAIN_SAMPLE vectors) and add the gallery (ids = rows)."""
    faiss.omp_set_num_threads(2)
    spec = build.spec
    metric = faiss.METRIC_INNER_PRODUCT if spec.get("metric") == "ip" else faiss.METRIC_L2
    if build.kind == "ivf":
        nlist = ivf_nlist(spec["nlist_factor"], len(gallery))
        index = faiss.index_factory(DIM, f"IVF{nlist},{spec['codec']}", metric)
        if metric == faiss.METRIC_INNER_PRODUCT:
            faiss.extract_index_ivf(index).cp.spherical = True
    else:
        index = faiss.index_factory(DIM, f"HNSW{spec['M']},{spec['codec']}", metric)
        assert isinstance(index, faiss.IndexHNSW)  # index_factory hands back the concrete class
        index.hnsw.efConstruction = spec.get("efConstruction", 40)
    if "PQ" in spec["codec"]:  # index_factory turns on (slow) polysemous training for PQ
        codes = index.storage if isinstance(index, faiss.IndexHNSW) else index
        # faiss's stub lacks IndexPQ's and IndexIVFPQ's do_polysemous_training
        faiss.downcast_index(codes).do_polysemous_training = False  # type: ignore[attr-defined]
    rng = np.random.default_rng(SEED)
    sample = gallery[np.sort(rng.choice(len(gallery), min(len(gallery), TRAIN_SAMPLE), False))]
    index.train(sample)
    ids = np.arange(len(gallery), dtype=np.int64)
    for start in range(0, len(gallery), 200_000):
        chunk = slice(start, start + 200_000)
        if build.kind == "ivf":
            index.add_with_ids(gallery[chunk], ids[chunk])
        else:
            index.add(gallery[chunk])  # HNSW: sequential ids (it has no add_with_ids)
    return index


def build_usearch(build: Build, gallery: np.ndarray) -> UsearchIndex:
    spec = build.spec
    index = UsearchIndex(
        ndim=DIM,
        metric=spec["metric"],
        dtype=spec["dtype"],
        connectivity=spec["connectivity"],
        expansion_add=spec.get("expansion_add", 128),
    )
    index.add(np.arange(len(gallery), dtype=np.uint64), gallery, threads=2)
    return index


def index_path(build: Build, key: str) -> Path:
    suffix = "usearch" if build.kind == "usearch" else "faiss"
    return ANN_CACHE / f"index-{key}-{build.name}.{suffix}"


def load_or_build(build: Build, gallery: np.ndarray, key: str) -> tuple[Any, float]:
    """The index (from the cache if built before) and its build time in seconds."""
    path = index_path(build, key)
    meta = path.with_suffix(path.suffix + ".json")
    if path.is_file() and meta.is_file():
        seconds = json.loads(meta.read_text())["build_seconds"]
        if build.kind == "usearch":
            return UsearchIndex.restore(str(path)), seconds
        return faiss.read_index(str(path)), seconds
    started = time.perf_counter()
    index: Any
    if build.kind == "usearch":
        index = build_usearch(build, gallery)
        seconds = time.perf_counter() - started
        index.save(str(path))
    else:
        index = build_faiss(build, gallery)
        seconds = time.perf_counter() - started
        faiss.write_index(index, str(path))
    meta.write_text(json.dumps({"build_seconds": seconds}))
    return index, seconds


def resident_bytes(build: Build, key: str) -> int:
    """RSS growth of a fresh process that loads the saved index (allocator-reuse free)."""
    kind = "usearch" if build.kind == "usearch" else "faiss"
    out = subprocess.run(
        [sys.executable, __file__, "--measure-rss", kind, str(index_path(build, key))],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(out.stdout.split()[-1])


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure_rss(kind: str, path: str) -> None:
    """Child-process mode: print the RSS growth caused by loading one index."""
    before = rss_bytes()
    index = UsearchIndex.restore(path) if kind == "usearch" else faiss.read_index(path)
    print(rss_bytes() - before)
    del index


# -- searching -------------------------------------------------------------------------------


class Searcher:
    """Uniform access to a built index: top-k / range candidates and filtered search.

    Distances handed back are approximate Euclidean distances on our scale (not squared,
    not similarities); rows are padded with id -1.
    """

    def __init__(self, build: Build, index: Any) -> None:
        self.build, self.index = build, index
        self.params: dict[str, Any] = {}
        self.ip = build.spec.get("metric") == "ip"

    def configure(self, params: dict[str, Any]) -> None:
        self.params = params
        if self.build.kind == "ivf":
            faiss.extract_index_ivf(self.index).nprobe = params["nprobe"]
        elif self.build.kind == "hnsw":
            self.index.hnsw.efSearch = params["ef"]
        else:
            self.index.expansion_search = params["ef"]

    def topk(self, queries: np.ndarray, k: int, threads: int) -> tuple[np.ndarray, np.ndarray]:
        if self.build.kind == "usearch":
            found = self.index.search(queries, k, threads=threads)
            keys = np.asarray(found.keys, dtype=np.int64).reshape(len(queries), -1)
            dist = np.asarray(found.distances, dtype=np.float32).reshape(len(queries), -1)
            counts = np.asarray(getattr(found, "counts", [keys.shape[1]])).reshape(-1)
            valid = np.arange(keys.shape[1])[None, :] < counts[:, None]
            keys[~valid], dist[~valid] = -1, np.inf
            if self.build.spec["metric"] == "cos":  # 1 - cos  ->  |a - b| for unit vectors
                return keys, np.sqrt(np.maximum(2.0 * dist, 0.0))
            return keys, np.sqrt(np.maximum(dist, 0.0))
        faiss.omp_set_num_threads(threads)
        dist, ids = self.index.search(queries, k)
        return ids, self._to_euclidean(dist)

    def _to_euclidean(self, dist: np.ndarray) -> np.ndarray:
        if self.ip:  # similarity -> distance; padding (-3.4e38) becomes +inf
            return np.sqrt(np.maximum(2.0 - 2.0 * dist, 0.0))
        return np.sqrt(np.maximum(dist, 0.0))

    def range(self, queries: np.ndarray, radius: float, threads: int) -> list[np.ndarray]:
        """faiss range search; radius is ours, so L2 gets radius^2 and IP 1 - radius^2/2."""
        faiss.omp_set_num_threads(threads)
        bound = 1.0 - radius * radius / 2.0 if self.ip else radius * radius
        lims, _, ids = self.index.range_search(queries, bound)
        return [ids[lims[i] : lims[i + 1]] for i in range(len(queries))]

    def filtered_topk(self, query: np.ndarray, k: int, allowed: np.ndarray) -> np.ndarray:
        """Candidates among `allowed` only (one query, one thread)."""
        if self.build.kind == "usearch":  # no predicate in the Python API: over-fetch, filter
            count = min(len(self.index), int(np.ceil(40 * len(self.index) / len(allowed))))
            found = self.index.search(query, max(count, k), threads=1)
            keys = np.asarray(found.keys, dtype=np.int64)
            return keys[np.isin(keys, allowed)][:k]
        faiss.omp_set_num_threads(1)
        selector = faiss.IDSelectorBatch(allowed)  # must outlive the search call
        params: faiss.SearchParameters
        if self.build.kind == "ivf":
            params = faiss.SearchParametersIVF()
            params.sel, params.nprobe = selector, self.params["nprobe"]
        else:  # faiss's stub lacks SearchParametersHNSW
            hnsw_params = faiss.SearchParametersHNSW  # type: ignore[attr-defined]
            params = hnsw_params(sel=selector, efSearch=self.params["ef"])
        _, ids = self.index.search(query.reshape(1, -1), k, params=params)
        del selector
        return ids[0][ids[0] >= 0]


Answer = tuple[np.ndarray, np.ndarray]  # ids, exact distances (sorted)


def rerank(gallery: np.ndarray, query: np.ndarray, ids: np.ndarray, own: int, t: float) -> Answer:
    """Exact float32 distances for the candidates; keep those within t, nearest first."""
    ids = ids[(ids >= 0) & (ids != own)]
    dist = exact_distances(gallery, query, ids)
    keep = dist <= t
    ids, dist = ids[keep], dist[keep]
    order = np.argsort(dist, kind="stable")
    return ids[order], dist[order]


def range_pipeline(
    searcher: Searcher,
    gallery: np.ndarray,
    queries: np.ndarray,
    rows: np.ndarray,
    t: float,
    threads: int,
) -> tuple[list[Answer], int]:
    """Every face within t of each query, and the number of candidates re-ranked."""
    margin = searcher.params["margin"]
    if searcher.params["strategy"] == "range":
        candidates = searcher.range(queries, t + margin, threads)
    else:
        candidates = adaptive_candidates(searcher, queries, t + margin, threads)
    answers = [
        rerank(gallery, q, c, own, t) for q, c, own in zip(queries, candidates, rows, strict=True)
    ]
    return answers, sum(len(c) for c in candidates)


def adaptive_candidates(
    searcher: Searcher, queries: np.ndarray, bound: float, threads: int
) -> list[np.ndarray]:
    """Top-k candidates, k x4 while the k-th approximate distance is still within bound."""
    k, kmax = searcher.params["k0"], searcher.params.get("kmax", 16384)
    out: list[np.ndarray] = [np.empty(0, np.int64)] * len(queries)
    pending = np.arange(len(queries))
    while len(pending):
        ids, dist = searcher.topk(queries[pending], k, threads)
        again = []
        for row, qi in enumerate(pending):
            out[qi] = ids[row][dist[row] <= bound]
            if dist[row, -1] <= bound and k < kmax:
                again.append(qi)
        pending, k = np.array(again, np.int64), k * 4
    return out


# -- evaluation ------------------------------------------------------------------------------


@dataclass
class Row:
    """One configuration's figures on one gallery."""

    name: str
    build_s: float = 0.0
    resident: float = 0.0
    file: float = 0.0
    recall: dict[float, float] = field(default_factory=dict)
    first: dict[float, float] = field(default_factory=dict)
    missed: dict[float, int] = field(default_factory=dict)
    recall10: float = 0.0
    p50: float = 0.0
    p99: float = 0.0
    p50_wide: float = 0.0
    qps: float = 0.0
    candidates: float = 0.0


def score(answers: Sequence[Answer], truth: Truth, t: float) -> tuple[float, float, int]:
    """Match recall, first-match agreement and the number of queries that missed a match."""
    hits = total = agree = eligible = missed = 0
    for i, (ids, dist) in enumerate(answers):
        expected = truth.within_ids[i][truth.within_dist[i] <= t]
        got = int(np.isin(expected, ids).sum())
        hits, total, missed = hits + got, total + len(expected), missed + (got < len(expected))
        if truth.best_dist[i] <= t:
            eligible += 1
            agree += bool(len(ids)) and (
                ids[0] == truth.best_id[i] or abs(dist[0] - truth.best_dist[i]) < 1e-6
            )
    return hits / max(total, 1), agree / max(eligible, 1), missed


def recall_at_10(
    searcher: Searcher, gallery: np.ndarray, queries: np.ndarray, rows: np.ndarray, truth: Truth
) -> float:
    ids, _ = searcher.topk(queries, RERANK_K10, threads=2)
    found = 0
    for i, (q, own) in enumerate(zip(queries, rows, strict=True)):
        top, _ = rerank(gallery, q, ids[i], own, np.inf)
        found += int(np.isin(truth.top10[i], top[:10]).sum())
    return found / truth.top10.size


def latencies(
    searcher: Searcher, gallery: np.ndarray, queries: np.ndarray, rows: np.ndarray, t: float
) -> np.ndarray:
    """Milliseconds per single query, one thread, full pipeline (ANN + re-rank)."""
    count = min(LATENCY_QUERIES, len(queries))
    for i in range(min(20, count)):  # warm up
        range_pipeline(searcher, gallery, queries[i : i + 1], rows[i : i + 1], t, 1)
    out = np.empty(count)
    for i in range(count):
        started = time.perf_counter()
        range_pipeline(searcher, gallery, queries[i : i + 1], rows[i : i + 1], t, 1)
        out[i] = (time.perf_counter() - started) * 1e3
    return out


def throughput(
    searcher: Searcher, gallery: np.ndarray, queries: np.ndarray, rows: np.ndarray, t: float
) -> float:
    """Queries per second with batches of BATCH on 2 threads (full pipeline)."""
    count = min(THROUGHPUT_QUERIES, len(queries))
    started = time.perf_counter()
    for start in range(0, count, BATCH):
        part = slice(start, min(start + BATCH, count))
        range_pipeline(searcher, gallery, queries[part], rows[part], t, 2)
    return count / (time.perf_counter() - started)


def evaluate(
    searcher: Searcher,
    gallery: np.ndarray,
    queries: np.ndarray,
    rows: np.ndarray,
    truth: Truth,
    row: Row,
) -> Row:
    for t in THRESHOLDS:
        answers, candidates = range_pipeline(searcher, gallery, queries, rows, t, 2)
        row.recall[t], row.first[t], row.missed[t] = score(answers, truth, t)
        row.candidates = candidates / len(queries)  # at the last (widest) threshold
    row.recall10 = recall_at_10(searcher, gallery, queries, rows, truth)
    times = latencies(searcher, gallery, queries, rows, THRESHOLDS[0])
    row.p50, row.p99 = float(np.percentile(times, 50)), float(np.percentile(times, 99))
    wide = latencies(searcher, gallery, queries[:100], rows[:100], THRESHOLDS[1])
    row.p50_wide = float(np.median(wide))
    row.qps = throughput(searcher, gallery, queries, rows, THRESHOLDS[0])
    return row


def describe(params: dict[str, Any]) -> str:
    knob = f"nprobe={params['nprobe']}" if "nprobe" in params else f"ef={params['ef']}"
    how = "range" if params["strategy"] == "range" else f"top-k from {params['k0']}"
    return f"{knob}, {how} +{params['margin']}"


# -- filtered search -------------------------------------------------------------------------


@dataclass
class FilterCase:
    query_index: int
    allowed: np.ndarray


def filter_cases(real: RealFaces, size: int, rows: np.ndarray) -> list[FilterCase]:
    """Per query: its own person's faces + 999 random other people (real or synthetic)."""
    rng = np.random.default_rng(SEED + 7)
    by_person: dict[str, list[int]] = {}
    for i, person in enumerate(real.people):
        by_person.setdefault(person, []).append(i)
    real_people = list(by_person.values())
    n_real, n_synthetic = len(real.people), -(-(size - len(real.people)) // SYNTHETIC_PERSON_SIZE)
    pool = len(real_people) + n_synthetic
    cases = []
    for qi in rng.choice(len(rows), min(FILTER_QUERIES, len(rows)), replace=False):
        own = by_person[real.people[rows[qi]]]
        chosen = [np.array(own, np.int64)]
        for p in rng.choice(pool, FILTER_PEOPLE - 1, replace=False):
            if p < len(real_people):
                chosen.append(np.array(real_people[p], np.int64))
            else:
                start = n_real + (p - len(real_people)) * SYNTHETIC_PERSON_SIZE
                chosen.append(np.arange(start, min(start + SYNTHETIC_PERSON_SIZE, size)))
        allowed = np.unique(np.concatenate(chosen))
        cases.append(FilterCase(int(qi), allowed[allowed != rows[qi]]))
    return cases


def exact_filtered(gallery: np.ndarray, query: np.ndarray, allowed: np.ndarray, k: int) -> Answer:
    """Exact scan over the allowed vectors gathered from the float32 array."""
    vectors = gallery[allowed]
    dist = np.sqrt(np.maximum(2.0 - 2.0 * (vectors @ query), 0.0))  # unit vectors
    part = np.argpartition(dist, k)[:k] if len(dist) > k else np.arange(len(dist))
    order = part[np.argsort(dist[part])]
    return allowed[order], dist[order]


@dataclass
class FilterRow:
    name: str
    allowed: float
    p50: float
    recall10: float
    first: float


def evaluate_filtered(
    method: Callable[[np.ndarray, np.ndarray, int], Answer],
    name: str,
    gallery: np.ndarray,
    queries: np.ndarray,
    rows: np.ndarray,
    cases: list[FilterCase],
) -> FilterRow:
    times, found, agree, eligible = [], 0, 0, 0
    for case in cases:
        query = queries[case.query_index]
        started = time.perf_counter()
        ids, _ = method(query, case.allowed, 10)
        times.append((time.perf_counter() - started) * 1e3)
        exact_ids, exact_dist = exact_filtered(gallery, query, case.allowed, 10)
        found += int(np.isin(exact_ids, ids).sum())
        if len(exact_dist) and exact_dist[0] <= THRESHOLDS[0]:
            eligible += 1
            agree += bool(len(ids)) and ids[0] == exact_ids[0]
    size = float(np.mean([len(c.allowed) for c in cases]))
    recall = found / (10 * len(cases))
    return FilterRow(name, size, float(np.median(times)), recall, agree / max(eligible, 1))


def ann_filtered(
    searcher: Searcher, gallery: np.ndarray
) -> Callable[[np.ndarray, np.ndarray, int], Answer]:
    """Filtered ANN top-10 with exact re-rank of 64 allowed candidates."""

    def method(query: np.ndarray, allowed: np.ndarray, k: int) -> Answer:
        ids = searcher.filtered_topk(query, RERANK_K10, allowed)
        found, dist = rerank(gallery, query, ids, -1, np.inf)
        return found[:k], dist[:k]

    return method


# -- maintenance checks ----------------------------------------------------------------------


def maintenance_checks(gallery: np.ndarray, key: str) -> list[tuple[str, str]]:
    """add_with_ids / remove_ids / save / load on a small IVF-SQ8 and a usearch index."""
    rng = np.random.default_rng(SEED + 1)
    vectors = gallery[:20_000]
    ids = rng.permutation(10**9)[: len(vectors)].astype(np.int64)  # arbitrary face ids
    gone = ids[:500]
    out = []
    ivf = faiss.index_factory(DIM, "IVF128,SQ8", faiss.METRIC_L2)
    ivf.train(vectors)
    ivf.add_with_ids(vectors, ids)
    removed = ivf.remove_ids(faiss.IDSelectorBatch(gone))
    faiss.extract_index_ivf(ivf).nprobe = 128
    _, found = ivf.search(vectors[:500], 1)
    path = ANN_CACHE / f"check-{key}.faiss"
    faiss.write_index(ivf, str(path))
    again = faiss.read_index(str(path))
    _, found2 = again.search(vectors[500:600], 1)
    out.append(
        (
            "faiss IVF add_with_ids/remove_ids",
            f"removed {removed}, ntotal {ivf.ntotal}, "
            f"removed ids returned: {int(np.isin(found, gone).sum())}",
        )
    )
    out.append(
        (
            "faiss write_index/read_index",
            f"nprobe kept: "
            f"{faiss.extract_index_ivf(again).nprobe}; self-hit after reload: "
            f"{float(np.mean(found2[:, 0] == ids[500:600])):.2f}",
        )
    )
    hnsw = faiss.index_factory(DIM, "HNSW16,SQ8")
    hnsw.train(vectors)
    hnsw.add(vectors[:1000])
    try:
        hnsw.remove_ids(faiss.IDSelectorBatch(gone))
        out.append(("faiss HNSW remove_ids", "supported"))
    except RuntimeError as error:
        out.append(("faiss HNSW remove_ids", f"RuntimeError: {str(error).splitlines()[0][:60]}"))
    index = UsearchIndex(ndim=DIM, metric="cos", dtype="i8", connectivity=16)
    index.add(ids.astype(np.uint64), vectors, threads=2)
    count = index.remove(gone.astype(np.uint64))
    found = index.search(vectors[:500], 1, threads=2).keys.reshape(-1).astype(np.int64)
    upath = ANN_CACHE / f"check-{key}.usearch"
    index.save(str(upath))
    view = UsearchIndex.restore(str(upath), view=True)
    out.append(
        (
            "usearch add/remove",
            f"removed {count}, size {len(index)}, "
            f"removed keys returned: {int(np.isin(found, gone).sum())}",
        )
    )
    assert view is not None
    out.append(("usearch save/restore(view=True)", f"size after view {len(view)}"))
    return out


# -- configurations --------------------------------------------------------------------------


def configurations() -> list[Build]:
    """The candidates; `large=True` ones also run above LARGE faces (the finalists)."""

    def ivf(
        nprobes: Sequence[int], margin: float, filter_at: int, large: Sequence[int] = ()
    ) -> tuple[dict[str, Any], ...]:
        return tuple(
            {
                "nprobe": n,
                "strategy": "range",
                "margin": margin,
                "filter": n == filter_at,
                "large": n in large,
            }
            for n in nprobes
        )

    def graph(
        efs: Sequence[int], margin: float, filter_at: int, large: Sequence[int] = ()
    ) -> tuple[dict[str, Any], ...]:
        return tuple(
            {
                "ef": e,
                "strategy": "topk",
                "k0": 64,
                "margin": margin,
                "filter": e == filter_at,
                "large": e in large,
            }
            for e in efs
        )

    sq8 = {"codec": "SQ8"}
    return [
        Build(
            "ivf-sq8-l2-4",
            "ivf",
            {"nlist_factor": 4, **sq8},
            ivf((64, 128, 256, 512), 0.02, 256, (256, 512)),
            True,
        ),
        Build(
            "ivf-sq8-l2-16",
            "ivf",
            {"nlist_factor": 16, **sq8},
            ivf((512, 1024), 0.02, 512),
        ),
        Build(
            "ivf-sq8-ip-4", "ivf", {"nlist_factor": 4, "metric": "ip", **sq8}, ivf((128,), 0.02, 0)
        ),
        Build(
            "ivf-sq8-l2-4-topk",
            "ivf",
            {"nlist_factor": 4, **sq8},
            ({"nprobe": 128, "strategy": "topk", "k0": 64, "margin": 0.02},),
        ),
        Build("ivf-pq32-4", "ivf", {"nlist_factor": 4, "codec": "PQ32"}, ivf((256,), 0.06, 256)),
        Build(
            "hnsw-sq8-16",
            "hnsw",
            {"M": 16, **sq8},
            graph((64, 128, 256), 0.02, 128, (128, 256)),
            True,
        ),
        Build("hnsw-sq8-32", "hnsw", {"M": 32, **sq8}, graph((64, 128), 0.02, 128), True),
        Build("hnsw-flat-16", "hnsw", {"M": 16, "codec": "Flat"}, graph((128,), 0.02, 0)),
        Build(
            "hnsw-sq4-16",
            "hnsw",
            {"M": 16, "codec": "SQ4"},
            graph((128, 256), 0.05, 128, (256,)),
            True,
        ),
        Build("hnsw-pq32-16", "hnsw", {"M": 16, "codec": "PQ32"}, graph((128, 256), 0.06, 128)),
        Build(
            "usearch-i8-cos-16",
            "usearch",
            {"metric": "cos", "dtype": "i8", "connectivity": 16},
            graph((64, 128, 256), 0.04, 128, (128,)),
            True,
        ),
        Build(
            "usearch-f16-l2-16",
            "usearch",
            {"metric": "l2sq", "dtype": "f16", "connectivity": 16},
            graph((128,), 0.02, 0),
        ),
    ]


# -- tables ----------------------------------------------------------------------------------


def accuracy_table(rows: Sequence[Row], size: int, flavour: str) -> str:
    t0, t1 = THRESHOLDS
    head = (
        f"\n#### {size:,} faces, {flavour} distractors\n\n"
        f"| configuration | build s | B/face RSS | B/face file | recall {t0} | first {t0} "
        f"| recall {t1} | first {t1} | queries missing a match {t0}/{t1} | R@10 "
        f"| p50 ms | p99 ms | p50 ms @{t1} | q/s (256, 2 thr) | cands @{t1} |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = [
        f"| {r.name} | {r.build_s:.1f} | {r.resident:.0f} | {r.file:.0f} | {r.recall[t0]:.4f} "
        f"| {r.first[t0]:.4f} | {r.recall[t1]:.4f} | {r.first[t1]:.4f} "
        f"| {r.missed[t0]}/{r.missed[t1]} | {r.recall10:.3f} | {r.p50:.2f} | {r.p99:.2f} "
        f"| {r.p50_wide:.2f} | {r.qps:.0f} | {r.candidates:.0f} |"
        for r in rows
    ]
    return head + "\n".join(lines)


def filter_table(rows: Sequence[FilterRow], size: int, flavour: str) -> str:
    head = (
        f"\n#### Filtered search to {FILTER_PEOPLE:,} people, {size:,} faces, {flavour}\n\n"
        "| method | allowed faces (mean) | p50 ms | R@10 in filter | first-match "
        f"{THRESHOLDS[0]} |\n|---|---:|---:|---:|---:|\n"
    )
    lines = [
        f"| {r.name} | {r.allowed:.0f} | {r.p50:.2f} | {r.recall10:.3f} | {r.first:.4f} |"
        for r in rows
    ]
    return head + "\n".join(lines)


def exact_scan_table(gallery: np.ndarray, queries: np.ndarray) -> str:
    """p50 of one exact query over n gathered vectors (the small-collection fallback)."""
    rng = np.random.default_rng(SEED + 3)
    lines = [
        "\n#### Exact scan, one query, one thread (gather + distances + top 10)\n",
        "| vectors scanned | gathered p50 ms | contiguous p50 ms |",
        "|---:|---:|---:|",
    ]
    for n in (1_000, 10_000, 100_000, 1_000_000):
        if n > len(gallery):
            break
        allowed = np.sort(rng.choice(len(gallery), n, replace=False))
        block = gallery[:n]
        gathered, contiguous = [], []
        for q in queries[:30]:
            started = time.perf_counter()
            exact_filtered(gallery, q, allowed, 10)
            gathered.append(time.perf_counter() - started)
            started = time.perf_counter()
            dist = 2.0 - 2.0 * (block @ q)
            np.argpartition(dist, 10)[:10]
            contiguous.append(time.perf_counter() - started)
        lines.append(
            f"| {n:,} | {np.median(gathered) * 1e3:.2f} | {np.median(contiguous) * 1e3:.2f} |"
        )
    return "\n".join(lines)


# -- driver ----------------------------------------------------------------------------------


def run_size(
    real: RealFaces, size: int, flavour: str, builds: list[Build], results: dict, all_rows: bool
) -> None:
    key = f"{flavour}-{size}"
    gallery = np.concatenate(
        [real.vectors, make_distractors(real.vectors, flavour, size - len(real.vectors))]
    )
    rows = real.query_rows()
    queries = gallery[rows]
    truth = cached_truth(gallery, queries, rows, f"{key}-{SEED}")
    per_query = np.array([(d <= THRESHOLDS[1]).sum() for d in truth.within_dist])
    print(
        f"\n{key}: {len(rows)} queries; exact matches within {THRESHOLDS[1]} per query: "
        f"mean {per_query.mean():.1f}, max {per_query.max()}; within {THRESHOLDS[0]}: mean "
        f"{np.mean([(d <= THRESHOLDS[0]).sum() for d in truth.within_dist]):.1f}",
        flush=True,
    )
    cases = filter_cases(real, size, rows)
    table: list[Row] = []
    filtered: list[FilterRow] = [
        evaluate_filtered(
            lambda q, a, k: exact_filtered(gallery, q, a, k),
            "exact scan of allowed vectors",
            gallery,
            queries,
            rows,
            cases,
        )
    ]
    for build in builds:
        if size > LARGE and not all_rows and not any(p.get("large") for p in build.searches):
            continue
        index, seconds = load_or_build(build, gallery, key)
        path = index_path(build, key)
        resident = resident_bytes(build, key) / size
        searcher = Searcher(build, index)
        for params in build.searches:
            if size > LARGE and not params.get("large") and not all_rows:
                continue
            searcher.configure(params)
            row = Row(
                f"{build.name} ({describe(params)})", seconds, resident, path.stat().st_size / size
            )
            table.append(evaluate(searcher, gallery, queries, rows, truth, row))
            print(accuracy_table(table[-1:], size, flavour).splitlines()[-1], flush=True)
            if params.get("filter"):
                filtered.append(
                    evaluate_filtered(
                        ann_filtered(searcher, gallery),
                        f"{build.name} ({describe(params)})",
                        gallery,
                        queries,
                        rows,
                        cases,
                    )
                )
        del index, searcher
    report = accuracy_table(table, size, flavour) + "\n" + filter_table(filtered, size, flavour)
    report += "\n" + exact_scan_table(gallery, queries)
    print(report, flush=True)
    results[key] = report


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    parser.add_argument("--quick", action="store_true", help="one 20k gallery, for development")
    parser.add_argument("--only", nargs="*", default=[], help="configuration name substrings")
    parser.add_argument("--flavours", nargs="+", default=list(FLAVOURS), choices=FLAVOURS)
    parser.add_argument("--all-at-large", action="store_true")
    parser.add_argument("--faces-root", type=Path, default=FACES_ROOT)
    parser.add_argument("--measure-rss", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure_rss:
        measure_rss(*args.measure_rss)
        return
    ANN_CACHE.mkdir(parents=True, exist_ok=True)
    real = load_real(args.faces_root)
    sizes = [20_000] if args.quick else args.sizes
    print(
        f"real faces: {len(real.vectors)}, people: {len(set(real.people))}, "
        f"faiss {faiss.__version__}, thresholds {THRESHOLDS}"
    )
    results: dict[str, str] = {}
    for size in sizes:
        builds = [
            b
            for b in configurations()
            if (not args.only or any(s in b.name for s in args.only))
            and (size <= LARGE or b.large or args.all_at_large or args.only)
        ]
        for flavour in args.flavours:
            run_size(real, size, flavour, builds, results, args.all_at_large)
    print("\n#### Maintenance API checks\n\n| operation | result |\n|---|---|")
    for what, result in maintenance_checks(_check_gallery(real), "check"):
        print(f"| {what} | {result} |")
    (ANN_CACHE / f"report-{'-'.join(map(str, sizes))}.md").write_text("\n".join(results.values()))


def _check_gallery(real: RealFaces) -> np.ndarray:
    return np.concatenate([real.vectors, make_distractors(real.vectors, "face-like", 16_000)])


if __name__ == "__main__":
    main()
