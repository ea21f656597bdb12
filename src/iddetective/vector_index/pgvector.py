"""Face search inside PostgreSQL: pgvector's HNSW index, for catalogues on the server store.

Two ways to have one:

- `PgvectorIndex.of_catalogue(url, model, dimension)` searches the model's rows of the
  catalogue's own `face` table, through the model's own HNSW index: partial (`WHERE model =
  '…'`) over `embedding::vector(d)`, since the column is untyped so that models of any
  dimension fit (store/postgres_sql.py's `index_model`, made with the model's first face).
  Its queries use that very expression and condition, so the planner answers them with it.
  Nothing is copied, built or caught up: a face is searchable once the transaction saving it
  commits, on every server at once. Faces come and go with the photos, so this index is
  read-only.
- `PgvectorIndex(dimension, url=…)` keeps a table of its own (`id`, `embedding vector(d)`
  with an HNSW index) and is a complete `VectorIndex` (add, remove, save, load); it is what
  the contract suite and the benchmark exercise, with the same search code.

HNSW is approximate. Small collections (up to `exact_max` rows, by the planner's estimate),
small filters (up to `exact_filter_max` allowed ids) and vectors longer than HNSW takes
(2,000 dimensions) are scanned exactly instead, as `IvfIndex` does; above, `hnsw.ef_search`
(default 200 here, pgvector's is 40) sets the recall. A range search asks HNSW for more and
more neighbours until one lies beyond the radius. Distances are pgvector's `<->` (Euclidean,
float32 arithmetic).
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql

from ..files import write_atomically
from ..store.postgres_sql import (
    HNSW_MAX_DIMENSIONS,
    configured,
    connect_patiently,
    embedding_expression,
    model_condition,
    once_more_if_lost,
)
from ..urls import without_password
from .base import IndexMismatch, Neighbours, checked_addition, checked_queries, nearest, within

__all__ = ["PgvectorIndex"]

FORMAT = "iddetective-pgvector-1"
#: pgvector returns at most `hnsw.ef_search` rows per index scan, and takes at most 1000.
EF_SEARCH_MAX = 1000
#: First number of neighbours a range search asks HNSW for; doubled while all are within.
RANGE_FIRST = 64
#: With pgvector 0.8's iterative scans, the most neighbours one HNSW scan is asked for (it
#: may visit 4x as many rows) before a search or range search scans exactly instead.
ITERATIVE_MAX = 16_384
#: Seconds the planner's estimate of the table's size is used before it is asked again.
ESTIMATE_SECONDS = 10.0

T = TypeVar("T")

_TABLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,50}")


class PgvectorIndex:
    """A `VectorIndex` in a PostgreSQL table searched with pgvector's HNSW index."""

    #: Appended to the index's path in a data directory: a small JSON file naming the table.
    suffix = ".pgvector.json"

    def __init__(
        self,
        dimension: int,
        *,
        url: str | None = None,
        table: str | None = None,
        ef_search: int = 200,
        exact_max: int = 40_000,
        exact_filter_max: int = 50_000,
    ) -> None:
        if not url:
            raise IndexMismatch(
                "the pgvector index needs a PostgreSQL database: pass url= or set "
                "IDDETECTIVE_DB for the command that opens it"
            )
        self.dimension = dimension
        self.ef_search = min(ef_search, EF_SEARCH_MAX)
        self.exact_max = exact_max
        self.exact_filter_max = exact_filter_max
        self.table = table or f"iddetective_vectors_{secrets.token_hex(6)}"
        if not _TABLE_NAME.fullmatch(self.table):
            raise IndexMismatch(f"bad table name {self.table!r}: lower-case letters, digits, _")
        #: Rows of another table this index reads (`of_catalogue`): then it is read-only.
        self._model: str | None = None
        #: The vectors as its HNSW index holds them: the typed column of its own table, the
        #: catalogue's untyped one cast to the model's length (`_use_catalogue`).
        self._embedding: sql.Composable = sql.SQL("embedding")
        self._url = url
        #: Whether the server's pgvector (0.8+) scans HNSW iteratively: past ef_search rows,
        #: and on past rows a filter removed (set for each connection, `_configure`).
        self._iterative = False
        self._db = _connect(url, self._configure)
        #: hnsw.ef_search as set in the connection's session; the table's size estimate.
        self._session_ef_search: int | None = None
        self._reading = threading.RLock()
        self._estimate: tuple[float, float] | None = None
        if table is None:
            self._create_table()

    @classmethod
    def of_catalogue(cls, url: str, model: str, dimension: int, **knobs: Any) -> PgvectorIndex:
        """The faces of `model` in the catalogue at `url`, searched where they are stored;
        IndexMismatch when the catalogue records another dimension for that model."""
        index = cls(dimension, url=url, table="face", **knobs)
        try:
            index._use_catalogue(model)
        except psycopg.Error as error:
            index.close()
            raise IndexMismatch(
                f"cannot read the models of the catalogue at {without_password(url)}: {error}"
            ) from None
        except BaseException:
            index.close()
            raise
        return index

    def _use_catalogue(self, model: str) -> None:
        """Read the faces of `model` in the catalogue's `face` table (then read-only): its
        untyped `embedding` cast to the model's length and its rows only, as the model's
        HNSW index holds them (store/postgres_sql.py's `index_model`)."""
        recorded = self._read(
            lambda: self._db.execute(
                "SELECT dimension FROM model WHERE name = %s", (model,)
            ).fetchone()
        )
        if recorded is not None and recorded[0] != self.dimension:
            raise IndexMismatch(
                f"the catalogue records the model {model!r}'s vectors as {recorded[0]}-"
                f"dimensional, not {self.dimension}-dimensional"
            )
        self._model = model
        self._embedding = embedding_expression(self.dimension)

    @property
    def read_only(self) -> bool:
        """Whether this index reads the catalogue's faces (they change only with photos)."""
        return self._model is not None

    def close(self) -> None:
        """Close the connection (the table stays)."""
        self._db.close()

    def drop(self) -> None:
        """Delete this index's own table (never the catalogue's)."""
        self._writable("drop")
        self._db.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self._name))

    # -- contents --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._rows("count(*)")[0][0])

    def ids(self) -> np.ndarray:
        """The ids held, ascending."""
        rows = self._rows("id", "ORDER BY id")
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self._writable("add to")
        ids, vectors = checked_addition(ids, vectors, self.dimension, np.zeros(0, np.int64))
        if not len(ids):
            return
        held = self._db.execute(
            sql.SQL("SELECT id FROM {} WHERE id = ANY(%s) LIMIT 5").format(self._name),
            (ids.tolist(),),
        ).fetchall()
        if held:
            raise IndexMismatch(f"ids already in the index: {[r[0] for r in held]}")
        copy = sql.SQL("COPY {} (id, embedding) FROM STDIN (FORMAT BINARY)").format(self._name)
        with self._db.transaction(), self._db.cursor() as cursor, cursor.copy(copy) as out:
            out.set_types(["int8", "vector"])
            for face_id, vector in zip(ids.tolist(), vectors, strict=True):
                out.write_row((face_id, vector))

    def remove(self, ids: np.ndarray) -> int:
        self._writable("remove from")
        wanted = np.asarray(ids, dtype=np.int64).reshape(-1).tolist()
        cursor = self._db.execute(
            sql.SQL("DELETE FROM {} WHERE id = ANY(%s)").format(self._name), (wanted,)
        )
        return cursor.rowcount

    # -- search ----------------------------------------------------------------------------------
    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> list[Neighbours]:
        queries = checked_queries(queries, self.dimension, k)
        allowed_ids = _listed(allowed)
        if self._exact(allowed_ids) or k > self._hnsw_max:
            return [nearest(*self._scan(q, allowed_ids), k) for q in queries]
        return [self._hnsw_nearest(q, k, allowed_ids) for q in queries]

    def range_search(
        self, queries: np.ndarray, radius: float, allowed: np.ndarray | None = None
    ) -> list[Neighbours]:
        queries = checked_queries(queries, self.dimension)
        allowed_ids = _listed(allowed)
        if self._exact(allowed_ids):
            return [within(*self._scan(q, allowed_ids), radius) for q in queries]
        return [self._hnsw_within(q, radius, allowed_ids) for q in queries]

    def _exact(self, allowed: list[int] | None) -> bool:
        if allowed is not None and len(allowed) <= self.exact_filter_max:
            return True
        if self.dimension > HNSW_MAX_DIMENSIONS:
            return True  # no HNSW index takes vectors this long
        return self._estimated_rows() <= self.exact_max

    def _estimated_rows(self) -> float:
        """The planner's row count of the table (from its size when never analysed), asked
        again every ESTIMATE_SECONDS: a query saves a round trip to the server."""
        now = time.monotonic()
        if self._estimate is None or now - self._estimate[0] > ESTIMATE_SECONDS:
            self._estimate = (now, self._ask_estimated_rows())
        return self._estimate[1]

    def _ask_estimated_rows(self) -> float:
        if self._model is not None:
            return self._ask_planned_rows()
        row = self._read(
            lambda: self._db.execute(
                "SELECT reltuples, pg_relation_size(oid) FROM pg_class WHERE oid = %s::regclass",
                (self.table,),
            ).fetchone()
        )
        if row is None:
            return 0.0
        reltuples, size = row
        # A row of a d-dimensional vector and an id takes ~4 d + 40 bytes on disk.
        return float(reltuples) if reltuples >= 0 else size / (4 * self.dimension + 40)

    def _ask_planned_rows(self) -> float:
        """The planner's estimate of the model's rows in the catalogue's table (from its
        statistics of `face.model`; the table holds the faces of every model)."""
        where, params = self._where(None)
        statement = sql.SQL("EXPLAIN (FORMAT JSON) SELECT 1 FROM {} WHERE {}").format(
            self._name, where
        )
        row = self._read(lambda: self._db.execute(statement, params).fetchone())
        plan = row[0] if row else None
        if isinstance(plan, str):
            plan = json.loads(plan)
        return float(plan[0]["Plan"]["Plan Rows"]) if plan else 0.0

    def _scan(self, query: np.ndarray, allowed: list[int] | None) -> tuple[np.ndarray, np.ndarray]:
        """Every (allowed) id and its exact distance to `query` (OFFSET 0 keeps the planner
        from answering the ORDER BY with the approximate HNSW index)."""
        where, params = self._where(allowed)
        statement = sql.SQL("SELECT id, {} <-> %s AS d FROM {} WHERE {} OFFSET 0").format(
            self._embedding, self._name, where
        )
        rows = self._read(lambda: self._db.execute(statement, (query, *params)).fetchall())
        return _columns(rows)

    def _hnsw_nearest(self, query: np.ndarray, k: int, allowed: list[int] | None) -> Neighbours:
        ids, dist = self._hnsw(query, k, allowed)
        if allowed is not None and len(ids) < k:
            # HNSW filters after its scan: too few allowed faces among them, scan them exactly.
            return nearest(*self._scan(query, allowed), k)
        return Neighbours(ids, dist)

    def _hnsw_within(
        self, query: np.ndarray, radius: float, allowed: list[int] | None
    ) -> Neighbours:
        count = RANGE_FIRST
        while count <= self._hnsw_max:
            ids, dist = self._hnsw(query, count, allowed)
            if len(ids) < count or dist[-1] > radius:
                return within(ids, dist, radius)
            count *= 2
        return within(*self._scan(query, allowed), radius)  # more within than HNSW returns

    def _hnsw(
        self, query: np.ndarray, count: int, allowed: list[int] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        statement, params = self.nearest_statement(query, count, allowed)
        ef_search = max(self.ef_search, min(count, EF_SEARCH_MAX))

        def run() -> list[tuple[Any, ...]]:
            self._use_ef_search(ef_search)
            return self._db.execute(statement, params).fetchall()

        return _columns(self._read(run))

    def nearest_statement(
        self, query: np.ndarray, count: int, allowed: list[int] | None = None
    ) -> tuple[sql.Composed, list[Any]]:
        """The statement (and its parameters) that asks HNSW for the `count` nearest faces to
        `query`: the vectors by the expression, and the rows by the condition, of the index
        (the model's, in a catalogue), or the planner would not answer it with the index."""
        where, params = self._where(allowed)
        statement = sql.SQL(
            "SELECT id, {embedding} <-> %s AS d FROM {table} WHERE {where} "
            "ORDER BY {embedding} <-> %s LIMIT %s"
        ).format(embedding=self._embedding, table=self._name, where=where)
        return statement, [query, *params, query, count]

    def _use_ef_search(self, value: int) -> None:
        """Set `hnsw.ef_search` for this connection's session when it is not set to `value`
        (one statement per change, not a transaction per query)."""
        if self._session_ef_search != value:
            self._db.execute("SELECT set_config('hnsw.ef_search', %s, false)", (str(value),))
            self._session_ef_search = value

    def _where(self, allowed: list[int] | None) -> tuple[sql.Composable, list[Any]]:
        parts: list[sql.Composable] = [sql.SQL("true")]
        params: list[Any] = []
        if self._model is not None:
            parts.append(model_condition(self._model))
        if allowed is not None:
            parts.append(sql.SQL("id = ANY(%s)"))
            params.append(allowed)
        return sql.SQL(" AND ").join(parts), params

    # -- persistence -----------------------------------------------------------------------------
    def save(self, path: Path, epoch: int) -> None:
        """Record which table holds the index (and the epoch): the vectors stay in the
        database. The URL is written without its password (libpq's PGPASSWORD, ~/.pgpass or
        `load`'s url supply it)."""
        meta = {
            "format": FORMAT,
            "url": without_password(self._url),
            "table": self.table,
            "model": self._model,
            "dimension": self.dimension,
            "epoch": epoch,
            "count": len(self),
            "knobs": {
                "ef_search": self.ef_search,
                "exact_max": self.exact_max,
                "exact_filter_max": self.exact_filter_max,
            },
        }
        write_atomically(path, json.dumps(meta, indent=1).encode())

    @classmethod
    def load(cls, path: Path, *, url: str | None = None) -> tuple[PgvectorIndex, int]:
        """The index the file at `path` names, and its epoch; IndexMismatch if unusable.

        `url` is the database with its password (the file keeps none): used when it names
        the database the file names."""
        try:
            meta = json.loads(path.read_text())
            if meta.get("format") != FORMAT:
                raise ValueError(f"unknown format {meta.get('format')!r}")
            url = _with_known_password(meta["url"], url)
            index = cls(int(meta["dimension"]), url=url, table=meta["table"], **meta["knobs"])
        except (OSError, ValueError, KeyError, TypeError, IndexMismatch) as error:
            raise IndexMismatch(f"cannot read the index file {path}: {error}") from None
        try:
            if meta.get("model") is not None:
                index._use_catalogue(str(meta["model"]))
            else:
                index._check_table_dimension()
            count = len(index)
        except (psycopg.Error, IndexMismatch) as error:
            index.close()
            raise IndexMismatch(f"cannot read the index {path} names: {error}") from None
        if count != meta["count"]:
            index.close()
            raise IndexMismatch(
                f"the index at {path} is inconsistent: {count} rows, {meta['count']} saved"
            )
        return index, int(meta["epoch"])

    # -- connection ------------------------------------------------------------------------------
    @property
    def _name(self) -> sql.Identifier:
        return sql.Identifier(self.table)

    def _rows(self, what: str, tail: str = "") -> list[tuple[Any, ...]]:
        """`SELECT what` over the index's rows (then `tail`)."""
        where, params = self._where(None)
        statement = sql.SQL("SELECT {} FROM {} WHERE {} {}").format(
            sql.SQL(what), self._name, where, sql.SQL(tail)
        )
        return self._read(lambda: self._db.execute(statement, params).fetchall())

    def _create_table(self) -> None:
        columns = "id bigint PRIMARY KEY, embedding vector({}) NOT NULL"
        self._db.execute(
            sql.SQL("CREATE TABLE IF NOT EXISTS {} (" + columns + ")").format(
                self._name, sql.Literal(self.dimension)
            )
        )
        hnsw = "CREATE INDEX IF NOT EXISTS {} ON {} USING hnsw (embedding vector_l2_ops)"
        self._db.execute(sql.SQL(hnsw).format(sql.Identifier(f"{self.table}_hnsw"), self._name))

    def _check_table_dimension(self) -> None:
        """IndexMismatch unless the own table's column holds vectors of `dimension`."""
        row = self._read(
            lambda: self._db.execute(
                "SELECT atttypmod FROM pg_attribute WHERE attrelid = %s::regclass "
                "AND attname = 'embedding'",
                (self.table,),
            ).fetchone()
        )
        if row is None or row[0] != self.dimension:
            held = "no vectors" if row is None else f"vectors of dimension {row[0]}"
            raise IndexMismatch(
                f"the table {self.table} holds {held}, not of dimension {self.dimension}"
            )

    def _writable(self, action: str) -> None:
        if self.read_only:
            raise IndexMismatch(
                f"cannot {action} the catalogue's faces through its index: they change when "
                "photos are saved or erased"
            )

    def _read(self, work: Callable[[], T]) -> T:
        """Run a read, once more on a new connection if the server dropped this one (it
        restarted: reads wait for it as the store's do, store/postgres_sql.py).

        Threads share the index (the web server's): one read at a time on its connection,
        so one search's session `hnsw.ef_search` is never another's."""
        with self._reading:
            return once_more_if_lost(self._db, work, self._reconnect)

    def _reconnect(self) -> None:
        db = connect_patiently(self._url, without_password(self._url), self._configure)
        self._db.close()
        self._db, self._session_ef_search = db, None

    def _configure(self, db: psycopg.Connection[Any]) -> None:
        """Set up a new connection: numpy arrays as `vector`, and iterative HNSW scans in
        strict distance order where pgvector has them (0.8+; users may run 0.7)."""
        register_vector(db)
        row = db.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
        version = tuple(int(part) for part in row[0].split(".")[:2]) if row else (0, 0)
        self._iterative = version >= (0, 8)
        if self._iterative:
            db.execute("SET hnsw.iterative_scan = strict_order")
            db.execute(f"SET hnsw.max_scan_tuples = {4 * ITERATIVE_MAX}")

    @property
    def _hnsw_max(self) -> int:
        """The most neighbours one HNSW scan returns."""
        return ITERATIVE_MAX if self._iterative else EF_SEARCH_MAX


def _connect(
    url: str, configure: Callable[[psycopg.Connection[Any]], None]
) -> psycopg.Connection[Any]:
    try:
        db = psycopg.connect(url, autocommit=True)
    except psycopg.Error as error:
        raise IndexMismatch(f"cannot connect to {without_password(url)}: {error}") from None
    return configured(db, configure)


def _listed(allowed: np.ndarray | None) -> list[int] | None:
    if allowed is None:
        return None
    return np.unique(np.asarray(allowed, dtype=np.int64)).tolist()


def _columns(rows: Sequence[tuple[Any, ...]]) -> tuple[np.ndarray, np.ndarray]:
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    dist = np.fromiter((r[1] for r in rows), dtype=np.float32, count=len(rows))
    return ids, dist


def _with_known_password(saved: str, current: str | None) -> str:
    """`saved`, or `current` when that names the same database with its password."""
    if current and without_password(current) == saved:
        return current
    return saved
