"""The SQL primitives of store/dialect.py over the SQLite store's connections
(sqlite_connections.py): a statement runs on this thread's reader, or on the writer inside
`write`. Write transactions are BEGIN IMMEDIATE ... COMMIT; statements deferred to the next
one (`defer`: the server's audit entries another writer held up) run first thing in it."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import StoreBusy
from .dialect import Lock, Row, Sql, vector_length
from .sqlite_connections import SqliteConnections

__all__ = ["BUSY_TIMEOUT_SECONDS", "SqliteSql", "blob_vectors", "chunks", "select_in"]

#: How long a statement waits for another writer (another process) to let go of the file.
BUSY_TIMEOUT_SECONDS = 60.0
#: Values bound per statement: SQLite builds before 3.32 allow 999 variables in all.
_CHUNK = 900


class SqliteSql(Sql):
    """The SQL primitives over one SQLite catalogue file's connections."""

    def __init__(self, connections: SqliteConnections, path: Path) -> None:
        self.connections = connections
        self.path = path
        #: Statements waiting for the next write transaction (`defer`).
        self._deferred: list[tuple[str, Row]] = []
        self._deferred_lock = threading.Lock()

    @property
    def db(self) -> sqlite3.Connection:
        """The connection this thread's statements run on: the writer inside `write`, its
        own reader elsewhere."""
        return self.connections.current()

    # -- transactions ----------------------------------------------------------------------
    @contextmanager
    def write(self, lock: Lock = "exclusive") -> Iterator[sqlite3.Connection]:
        """One write transaction on the writer connection: SQLite has one write lock,
        whatever `lock` asks for."""
        with self.connections.writing() as db, self._transaction(db):
            yield db

    @contextmanager
    def _transaction(self, db: sqlite3.Connection) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT on the writer, the deferred statements run first."""
        db.execute("BEGIN IMMEDIATE")
        with self._deferred_lock:
            deferred, self._deferred = self._deferred, []
        try:
            for statement, params in deferred:
                db.execute(statement, params)
            yield
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # SQLite rolls back by itself on a full disk
                db.execute("ROLLBACK")
            with self._deferred_lock:
                self._deferred[:0] = deferred
            raise

    def writing_here(self) -> bool:
        """Whether this thread is inside `write`."""
        return self.connections.writing_here()

    def defer(self, statement: str, params: Row) -> None:
        """Run `statement` first thing in the next write transaction, whichever thread's."""
        with self._deferred_lock:
            self._deferred.append((statement, params))

    def withdraw(self, params: Row) -> None:
        """Forget the deferred statement whose parameters are `params` (this very tuple)."""
        with self._deferred_lock:
            self._deferred = [d for d in self._deferred if d[1] is not params]

    def deferring(self) -> bool:
        """Whether a deferred statement waits."""
        return bool(self._deferred)

    def flush(self, wait: float) -> bool:
        """Run the deferred statements now, if the writer and SQLite's lock come within `wait`
        seconds; whether they did (other errors, a full disk say, are raised)."""
        try:
            with self.connections.writing(wait) as db:
                db.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")
                try:
                    with self._transaction(db):
                        pass
                finally:
                    db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
        except (TimeoutError, StoreBusy):
            return False
        return True

    # -- expressions and values ------------------------------------------------------------
    def nocase(self, column: str) -> str:
        return f"{column} COLLATE NOCASE"

    def nocase_equals(self, column: str) -> str:
        return f"{column} = ? COLLATE NOCASE"

    def vector_length(self, column: str) -> str:
        return f"(length({column}) / 4)"  # little-endian float32s

    def vector(self, embedding: np.ndarray) -> Any:
        return np.asarray(embedding, dtype="<f4").tobytes()

    def time(self, value: Any) -> str:
        return str(value)  # recorded as ISO 8601 text already

    # -- statements ------------------------------------------------------------------------
    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return [tuple(r) for r in self.db.execute(sql, params)]

    def rows_in(self, sql: str, values: Iterable[Any], before: Sequence[Any] = ()) -> list[Row]:
        return [tuple(r) for r in select_in(self.db, sql, values, before)]

    def dict_rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute(sql, params)]

    def vector_rows(
        self, sql: str, params: Sequence[Any], column: int, dimension: int | None = None
    ) -> tuple[list[Row], np.ndarray]:
        rows = self.rows(sql, params)
        return rows, blob_vectors([r[column] for r in rows], dimension)

    def vector_rows_in(
        self,
        sql: str,
        values: Iterable[Any],
        column: int,
        dimension: int | None = None,
        before: Sequence[Any] = (),
    ) -> tuple[list[Row], np.ndarray]:
        rows = self.rows_in(sql, values, before)
        return rows, blob_vectors([r[column] for r in rows], dimension)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self.db.execute(sql, params).rowcount

    def execute_in(self, sql: str, values: Iterable[Any], before: Sequence[Any] = ()) -> int:
        changed = 0
        for chunk in chunks(sorted(set(values))):
            query = sql.format(marks=",".join("?" * len(chunk)))
            changed += self.db.execute(query, [*before, *chunk]).rowcount
        return changed

    def execute_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        return max(self.db.executemany(sql, rows).rowcount, 0)

    # -- the database itself ---------------------------------------------------------------
    def compact(self) -> None:
        # Deleted rows linger in free pages and the WAL until both are rewritten, and the
        # text index keeps deleted trigrams in old segments until they are merged.
        with self.connections.writing() as db:
            db.execute("INSERT INTO person_text (person_text) VALUES ('optimize')")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            db.execute("VACUUM")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def engine_problems(self) -> list[str]:
        pages = [row[0] for row in self.db.execute("PRAGMA integrity_check").fetchall()]
        problems = [f"{self.path}: {text}" for text in pages if text != "ok"]
        for table, rowid, parent, _ in self.db.execute("PRAGMA foreign_key_check").fetchall():
            problems.append(f"{self.path}: {table} row {rowid} refers to a missing {parent}")
        return problems

    def close(self) -> None:
        self.connections.close()


def blob_vectors(blobs: Sequence[bytes], dimension: int | None = None) -> np.ndarray:
    """Embeddings stored as little-endian float32 blobs, stacked (n x d float32; 0 x
    `dimension` when there is none, 0 x 0 when it is not given). A blob of another length
    than `dimension` floats, or blobs of different lengths, raise `StoreError`."""
    if not blobs:
        return np.zeros((0, dimension or 0), np.float32)
    width = vector_length({len(blob) // 4 for blob in blobs}, dimension)
    vectors = np.frombuffer(b"".join(blobs), dtype="<f4")
    return vectors.reshape(len(blobs), width).astype(np.float32)


def select_in(
    db: sqlite3.Connection, sql: str, values: Iterable[Any], before: Sequence[Any] = ()
) -> list[sqlite3.Row]:
    """Rows of `sql` for every one of `values` (distinct, sorted), in chunks: `sql` holds
    `{marks}` where the `IN (...)` placeholders go, after the parameters `before`."""
    rows: list[sqlite3.Row] = []
    for chunk in chunks(sorted(set(values))):
        query = sql.format(marks=",".join("?" * len(chunk)))
        rows += db.execute(query, [*before, *chunk]).fetchall()
    return rows


def chunks(values: Sequence[Any]) -> Iterator[list[Any]]:
    """`values` in pieces small enough to bind in one statement."""
    for start in range(0, len(values), _CHUNK):
        yield list(values[start : start + _CHUNK])
