"""Face search benchmark: the seed's SQL scan, numpy scans and the product's `IvfIndex`.

One Markdown table per (gallery size, distractor flavour), every row measured in the same run
on the same gallery and the same queries (data, queries and ground truth come from
`bench/ann_study.py`: real dlib embeddings of the labelled sets plus "face-like" Gaussian or
uniform unit-vector distractors; each query is a real face whose own vector is in the gallery
and is left out of the truth and of every answer).

Rows:

1. seed's way: Euclidean distance computed by SQLite in one `SELECT ... ORDER BY d LIMIT 10`
   over a table of 128 REAL columns (as the seed did in MySQL), on `SQL_ROWS` rows, timed per
   face and extrapolated linearly to the gallery's size (build = inserts, extrapolated too);
2. face_distance-style: `np.linalg.norm(gallery - q, axis=1)` on a float64 gallery;
3. float32 BLAS exact scan: `ExactIndex` (`distances.euclidean_many`);
4. ours: `IvfIndex` from src, built by `add()`ing the whole gallery with ids, saved and
   loaded back (`IvfIndex.load` memory-maps the float32 vectors), at nprobe 192 (the
   default), 256 and 128.

Columns: build seconds; resident bytes per face (for `IvfIndex`: anonymous RSS growth of a
fresh process that loads the index and runs a few searches, i.e. the faiss IVF-SQ8 structure
and the ids; the memory-mapped float32 vectors, 512 B/face, are given separately as the
file-backed RSS those searches touched); single-query p50/p99 (all faces within 0.383, one
thread: `faiss.omp_set_num_threads(1)`, OPENBLAS_NUM_THREADS=1 set before numpy loads);
throughput with 256 queries per call (also one thread); match recall, first-match agreement
(`search(q, 1)`) and recall@10 against the exact scan at 0.303, 0.383 and 0.42.

Below each table: search restricted to ~1,000 people (`IvfIndex.search(..., allowed=...)`)
against the exact filtered scan, and 300 near-duplicates of one real face planted with
`add()` and looked up with `range_search` at 0.383.

    python bench/search.py --quick                    # 20k (IvfIndex trains from 10k)
    python bench/search.py --sizes 100000
    python bench/search.py --sizes 1000000 --flavours face-like

Built indexes are cached under bench/.cache/search/ (git-ignored).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy: one-thread numpy figures

import argparse
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ann_study as study

from iddetective.matching import distances
from iddetective.matching.calibration import calibration_for
from iddetective.vector_index.exact import ExactIndex
from iddetective.vector_index.ivf import IvfIndex

#: dlib's shipped thresholds (matching/calibration/dlib-resnet-v1.json).
DLIB = calibration_for("dlib-resnet-v1").thresholds

THRESHOLDS = (0.303, DLIB.match, 0.42)
LATENCY_T = DLIB.match
SEARCH_CACHE = study.CACHE / "search"
SQL_ROWS = 10_000
SQL_QUERIES = 5
LATENCY_QUERIES = 200
BATCH = 256
THROUGHPUT_QUERIES = 512
EXACT_RECALL_QUERIES = 256
NPROBES: tuple[int, ...] = (192, 256, 128)
PLANTED = 300
PLANT_RADIUS = 0.2

Answer = tuple[np.ndarray, np.ndarray]


@dataclass
class Row:
    name: str
    build: str
    ram: str
    p50: float = float("nan")
    p99: float = float("nan")
    qps: str = ""
    recall: dict[float, float] = field(default_factory=dict)
    first: dict[float, float] = field(default_factory=dict)
    recall10: float = float("nan")
    note: str = ""


@dataclass
class Data:
    gallery: np.ndarray
    queries: np.ndarray
    rows: np.ndarray
    truth: study.Truth


def sub_truth(truth: study.Truth, count: int) -> study.Truth:
    return study.Truth(
        truth.within_ids[:count],
        truth.within_dist[:count],
        truth.top10[:count],
        truth.best_id[:count],
        truth.best_dist[:count],
    )


def without_own(ids: np.ndarray, dist: np.ndarray, own: int) -> Answer:
    keep = ids != own
    return ids[keep], dist[keep]


def timed(call: Callable[[int], object], count: int, warm: int = 5) -> np.ndarray:
    """Milliseconds of `call(i)` for i in range(count), after `warm` untimed calls."""
    for i in range(min(warm, count)):
        call(i)
    out = np.empty(count)
    for i in range(count):
        started = time.perf_counter()
        call(i)
        out[i] = (time.perf_counter() - started) * 1e3
    return out


def fill_scores(
    row: Row,
    range_answers: Callable[[float], list[Answer]],
    top_answers: list[Answer],
    truth: study.Truth,
) -> None:
    """Match recall per threshold from range answers; first match and R@10 from top-k."""
    for t in THRESHOLDS:
        row.recall[t] = study.score(range_answers(t), truth, t)[0]
        row.first[t] = study.score([(i[:1], d[:1]) for i, d in top_answers], truth, t)[1]
    found = sum(
        int(np.isin(truth.top10[i], ids[:10]).sum()) for i, (ids, _) in enumerate(top_answers)
    )
    row.recall10 = found / truth.top10.size


# -- 1. the seed's way: SQL -------------------------------------------------------------------


def sql_row(data: Data, size: int) -> Row:
    count = min(SQL_ROWS, size)
    db = sqlite3.connect(":memory:")
    cols = ", ".join(f"e{j} REAL" for j in range(study.DIM))
    db.execute(f"CREATE TABLE faces (id INTEGER PRIMARY KEY, {cols})")
    marks = ", ".join("?" * (study.DIM + 1))
    started = time.perf_counter()
    db.executemany(
        f"INSERT INTO faces VALUES ({marks})",
        ([i, *map(float, v)] for i, v in enumerate(data.gallery[:count])),
    )
    db.commit()
    insert = time.perf_counter() - started
    pages = (
        db.execute("PRAGMA page_count").fetchone()[0] * db.execute("PRAGMA page_size").fetchone()[0]
    )
    terms = " + ".join(f"(e{j} - ?{j + 1}) * (e{j} - ?{j + 1})" for j in range(study.DIM))
    sql = f"SELECT id, sqrt({terms}) AS d FROM faces ORDER BY d LIMIT 10"
    sub = data.gallery[:count]

    def one(i: int) -> list[tuple[int, float]]:
        return db.execute(sql, [float(x) for x in data.queries[i]]).fetchall()

    times = timed(one, SQL_QUERIES, warm=1)
    for i in range(SQL_QUERIES):  # sanity: same nearest face as numpy on the same rows
        best = int(np.argmin(np.linalg.norm(sub.astype(np.float64) - data.queries[i], axis=1)))
        assert one(i)[0][0] == best, "SQL scan disagrees with numpy"
    per_face = times / count
    db.close()
    return Row(
        f"seed's way: SQLite SQL distance ({count:,} rows, extrapolated)",
        f"{insert * size / count:.1f} (ext.)",
        f"{pages / count:.0f} (table)",
        float(np.percentile(per_face, 50)) * size,
        float(np.percentile(per_face, 99)) * size,
        f"{1e3 / (float(np.mean(per_face)) * size):.2g} (1/call)",
        note=f"{float(np.median(per_face)) * 1e3:.1f} µs/face",
    )


# -- 2. face_distance ------------------------------------------------------------------------


def face_distance_row(data: Data, size: int) -> Row:
    started = time.perf_counter()
    gallery64 = data.gallery.astype(np.float64)
    build = time.perf_counter() - started
    count = int(min(50, max(5, 5_000_000 // size)))

    def one(i: int) -> Answer:
        dist = np.linalg.norm(gallery64 - data.queries[i], axis=1)
        hits = np.flatnonzero(dist <= LATENCY_T)
        return hits, dist[hits]

    times = timed(one, count, warm=2)
    answers = []
    for i in range(count):
        dist = np.linalg.norm(gallery64 - data.queries[i], axis=1)
        dist[data.rows[i]] = np.inf
        order = np.argsort(dist, kind="stable")
        answers.append((order, dist[order]))
    truth = sub_truth(data.truth, count)
    row = Row(
        "face_distance: numpy float64 norm(gallery - q)",
        f"{build:.1f}",
        "1024",
        float(np.percentile(times, 50)),
        float(np.percentile(times, 99)),
        f"{1e3 / float(np.mean(times)):.2g} (1/call)",
        note=f"recalls on {count} queries",
    )
    fill_scores(row, lambda t: [(i[d <= t], d[d <= t]) for i, d in answers], answers, truth)
    return row


# -- 3. float32 BLAS exact -------------------------------------------------------------------


def exact_row(data: Data, size: int) -> Row:
    started = time.perf_counter()
    index = ExactIndex(study.DIM)
    index.add(np.arange(size), data.gallery)
    build = time.perf_counter() - started
    q = data.queries
    count = int(min(LATENCY_QUERIES, max(20, 20_000_000 // size)))
    times = timed(lambda i: index.range_search(q[i : i + 1], LATENCY_T), count)
    batch = q[:BATCH]
    started = time.perf_counter()
    index.range_search(batch, LATENCY_T)
    qps = len(batch) / (time.perf_counter() - started)
    n = EXACT_RECALL_QUERIES
    wide = [
        without_own(r.ids, r.distances, own)
        for r, own in zip(index.range_search(q[:n], max(THRESHOLDS)), data.rows[:n], strict=True)
    ]
    top = [
        without_own(r.ids, r.distances, own)
        for r, own in zip(index.search(q[:n], 11), data.rows[:n], strict=True)
    ]
    row = Row(
        "float32 BLAS exact: ExactIndex",
        f"{build:.1f}",
        "520",
        float(np.percentile(times, 50)),
        float(np.percentile(times, 99)),
        f"{qps:.0f}",
        note=f"recalls on {n} queries",
    )
    fill_scores(
        row, lambda t: [(i[d <= t], d[d <= t]) for i, d in wide], top, sub_truth(data.truth, n)
    )
    return row


# -- 4. ours: IvfIndex -----------------------------------------------------------------------


def ivf_path(key: str) -> Path:
    return SEARCH_CACHE / f"ivf-{key}" / "index"


def load_or_build_ivf(data: Data, key: str, train_min: int | None) -> tuple[IvfIndex, float]:
    path = ivf_path(key)
    meta = path.parent / "build.json"
    if path.is_file() and meta.is_file():
        seconds = json.loads(meta.read_text())["build_seconds"]
    else:
        faiss.omp_set_num_threads(2)
        index = (
            IvfIndex(study.DIM) if train_min is None else IvfIndex(study.DIM, train_min=train_min)
        )
        started = time.perf_counter()
        index.add(np.arange(len(data.gallery)), data.gallery)
        seconds = time.perf_counter() - started
        index.save(path, 1)
        meta.write_text(json.dumps({"build_seconds": seconds}))
        del index
    index, _ = IvfIndex.load(path)
    return index, seconds


def status_kib(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0


def measure_rss(path: str) -> None:
    """Child-process mode: RSS growth (anonymous, file-backed) of loading + 20 searches."""
    faiss.omp_set_num_threads(1)
    anon, files = status_kib("RssAnon"), status_kib("RssFile")
    index, _ = IvfIndex.load(Path(path))
    vectors = np.asarray(index._vectors[:: max(1, len(index) // 20)][:20])
    for v in vectors:
        index.range_search(v, LATENCY_T)
    print((status_kib("RssAnon") - anon) * 1024, (status_kib("RssFile") - files) * 1024)


def ivf_rss(key: str) -> tuple[int, int]:
    out = subprocess.run(
        [sys.executable, __file__, "--measure-rss", str(ivf_path(key))],
        check=True,
        capture_output=True,
        text=True,
    )
    anon, files = out.stdout.split()[-2:]
    return int(anon), int(files)


def ivf_rows(index: IvfIndex, seconds: float, data: Data, key: str, size: int) -> list[Row]:
    anon, files = ivf_rss(key)
    q, own = data.queries, data.rows
    out = []
    for nprobe in NPROBES:
        index.nprobe = nprobe
        faiss.omp_set_num_threads(1)
        times = timed(lambda i: index.range_search(q[i : i + 1], LATENCY_T), LATENCY_QUERIES, 20)
        started = time.perf_counter()
        for start in range(0, THROUGHPUT_QUERIES, BATCH):
            index.range_search(q[start : start + BATCH], LATENCY_T)
        qps = THROUGHPUT_QUERIES / (time.perf_counter() - started)
        top1 = timed(lambda i: index.search(q[i : i + 1], 1), LATENCY_QUERIES, 20)
        tight = timed(
            lambda i: index.range_search(q[i : i + 1], THRESHOLDS[0]), LATENCY_QUERIES, 20
        )
        faiss.omp_set_num_threads(2)  # accuracy passes are not timed
        top = [
            without_own(r.ids, r.distances, o)
            for r, o in zip(index.search(q, 11), own, strict=True)
        ]

        def ranged(t: float, index: IvfIndex = index) -> list[Answer]:
            found = index.range_search(q, t)
            return [without_own(r.ids, r.distances, o) for r, o in zip(found, own, strict=True)]

        row = Row(
            f"ours: IvfIndex (nprobe={nprobe}, {index.lists} lists)",
            f"{seconds:.1f}",
            f"{anon / size:.0f} (+{files / size:.0f} file-backed RSS touched; f32 file 512)",
            float(np.percentile(times, 50)),
            float(np.percentile(times, 99)),
            f"{qps:.0f}",
            note=f"search(q, 1) p50 {np.median(top1):.2f} ms; range at 0.303 p50 "
            f"{np.median(tight):.2f} / p99 {np.percentile(tight, 99):.2f} ms",
        )
        fill_scores(row, ranged, top, data.truth)
        out.append(row)
        print(table_line(row), flush=True)
    index.nprobe = NPROBES[0]
    return out


def filtered_lines(index: IvfIndex, data: Data, real: study.RealFaces, size: int) -> list[str]:
    cases = study.filter_cases(real, size, data.rows)
    exact = ExactIndex(study.DIM)
    exact._ids, exact._vectors = np.arange(size, dtype=np.int64), data.gallery
    faiss.omp_set_num_threads(1)
    lines = []
    for name, method in (
        ("IvfIndex.search(q, 10, allowed=...)", index.search),
        ("ExactIndex.search(q, 10, allowed=...)", exact.search),
    ):
        times, equal = [], 0
        for case in cases:
            query = data.queries[case.query_index]
            started = time.perf_counter()
            got = method(query, 10, allowed=case.allowed)[0]
            times.append((time.perf_counter() - started) * 1e3)
            want, _ = study.exact_filtered(data.gallery, query, case.allowed, 10)
            equal += bool(np.array_equal(got.ids, want))
        allowed = np.mean([len(c.allowed) for c in cases])
        lines.append(
            f"| {name} | {allowed:.0f} | {np.median(times):.2f} | {np.percentile(times, 99):.2f} "
            f"| {equal}/{len(cases)} |"
        )
    return lines


def planted_line(index: IvfIndex, real: study.RealFaces, size: int) -> str:
    rng = np.random.default_rng(study.SEED + 300)
    face = real.vectors[0]
    dupes: list[np.ndarray] = []
    while len(dupes) < PLANTED:
        v = distances.prepare(face + rng.normal(0, rng.uniform(0.002, 0.017), study.DIM))
        if np.linalg.norm(v - face) <= PLANT_RADIUS:
            dupes.append(v)
    vectors = np.stack(dupes)
    ids = np.arange(size, size + PLANTED)
    spread = np.linalg.norm(vectors - face, axis=1)
    started = time.perf_counter()
    index.add(ids, vectors)
    add_s = time.perf_counter() - started
    faiss.omp_set_num_threads(1)
    parts = []
    for nprobe in NPROBES:
        index.nprobe = nprobe
        found = index.range_search(face, LATENCY_T)[0]
        parts.append(f"nprobe {nprobe}: {int(np.isin(ids, found.ids).sum())}/{PLANTED}")
    index.nprobe = NPROBES[0]
    index.remove(ids)
    return (
        f"Planted {PLANTED} near-duplicates of real face 0 (distance {spread.min():.3f}-"
        f"{spread.max():.3f}) with one `add()` ({add_s:.2f} s); `range_search(face, 0.383)` "
        f"returned: {', '.join(parts)}."
    )


# -- report ----------------------------------------------------------------------------------

HEADER = (
    "| method | build s | RAM B/face | p50 ms @0.383 | p99 ms @0.383 | q/s (256/call) "
    "| match recall 0.303 / 0.383 / 0.42 | first match 0.303 / 0.383 / 0.42 | R@10 | note |\n"
    "|---|---:|---|---:|---:|---:|---|---|---:|---|"
)


def triple(values: dict[float, float]) -> str:
    return " / ".join(f"{values[t]:.4f}" for t in THRESHOLDS) if values else "n/a"


def table_line(row: Row) -> str:
    r10 = "n/a" if np.isnan(row.recall10) else f"{row.recall10:.3f}"
    return (
        f"| {row.name} | {row.build} | {row.ram} | {row.p50:.2f} | {row.p99:.2f} | {row.qps} "
        f"| {triple(row.recall)} | {triple(row.first)} | {r10} | {row.note} |"
    )


def run(real: study.RealFaces, size: int, flavour: str, train_min: int | None) -> str:
    key = f"{flavour}-{size}"
    gallery = np.concatenate(
        [real.vectors, study.make_distractors(real.vectors, flavour, size - len(real.vectors))]
    )
    rows = real.query_rows()
    data = Data(
        gallery,
        gallery[rows],
        rows,
        study.cached_truth(gallery, gallery[rows], rows, f"{key}-{study.SEED}"),
    )
    within = [np.mean([(d <= t).sum() for d in data.truth.within_dist]) for t in THRESHOLDS]
    title = (
        f"#### {size:,} faces, {flavour} distractors ({len(rows)} queries; exact matches per "
        f"query at 0.303 / 0.383 / 0.42: {' / '.join(f'{w:.1f}' for w in within)})"
    )
    print(title, flush=True)
    table: list[Row] = []
    for make in (sql_row, face_distance_row, exact_row):
        table.append(make(data, size))
        print(table_line(table[-1]), flush=True)
    index, seconds = load_or_build_ivf(data, key, train_min)
    table += ivf_rows(index, seconds, data, key, size)
    filt = filtered_lines(index, data, real, size)
    plant = planted_line(index, real, size)
    report = "\n".join(
        [
            title,
            "",
            HEADER,
            *map(table_line, table),
            "",
            f"Filtered to {study.FILTER_PEOPLE:,} people ({min(study.FILTER_QUERIES, len(rows))} "
            "queries, top 10; equal = same ids in the same order as the exact filtered scan):",
            "",
            "| method | allowed faces (mean) | p50 ms | p99 ms | equal to exact |",
            "|---|---:|---:|---:|---:|",
            *filt,
            "",
            plant,
            "",
        ]
    )
    print("\n" + report, flush=True)
    return report


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument(
        "--flavours", nargs="+", default=list(study.FLAVOURS), choices=study.FLAVOURS
    )
    parser.add_argument("--quick", action="store_true", help="20k faces, for development")
    parser.add_argument("--faces-root", type=Path, default=study.FACES_ROOT)
    parser.add_argument("--measure-rss", metavar="PATH", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure_rss:
        measure_rss(args.measure_rss)
        return
    study.ANN_CACHE.mkdir(parents=True, exist_ok=True)
    SEARCH_CACHE.mkdir(parents=True, exist_ok=True)
    real = study.load_real(args.faces_root)
    sizes = [20_000] if args.quick else args.sizes
    print(f"real faces: {len(real.vectors)}, faiss {faiss.__version__}, thresholds {THRESHOLDS}")
    reports = [
        run(real, size, flavour, 10_000 if args.quick else None)
        for size in sizes
        for flavour in args.flavours
    ]
    out = SEARCH_CACHE / f"report-{'-'.join(map(str, sizes))}-{'-'.join(args.flavours)}.md"
    out.write_text("\n".join(reports))


if __name__ == "__main__":
    main()
