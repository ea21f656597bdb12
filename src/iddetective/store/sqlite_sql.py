"""SQL helpers shared by the SQLite store's modules, and the SQL primitives of store/dialect.py
over its connection."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from .dialect import Dialect, Row

__all__ = ["SqliteDialect", "blob_vectors", "chunks", "select_in"]

#: Values bound per statement: SQLite builds before 3.32 allow 999 variables in all.
_CHUNK = 900


class SqliteDialect(Dialect):
    """The SQL primitives of the store-neutral mixins, over the SQLite store's connection."""

    @property
    def _db(self) -> sqlite3.Connection:
        """The connection statements run on (the store's)."""
        raise NotImplementedError

    def _nocase(self, column: str) -> str:
        return f"{column} COLLATE NOCASE"

    def _nocase_equals(self, column: str) -> str:
        return f"{column} = ? COLLATE NOCASE"

    def _vector(self, embedding: np.ndarray) -> Any:
        return np.asarray(embedding, dtype="<f4").tobytes()

    def _time(self, value: Any) -> str:
        return str(value)  # recorded as ISO 8601 text already

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return [tuple(r) for r in self._db.execute(sql, params)]

    def _rows_in(self, sql: str, values: Iterable[Any], before: Sequence[Any] = ()) -> list[Row]:
        return [tuple(r) for r in select_in(self._db, sql, values, before)]

    def _dict_rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return [dict(r) for r in self._db.execute(sql, params)]

    def _vector_rows(
        self, sql: str, params: Sequence[Any], column: int
    ) -> tuple[list[Row], np.ndarray]:
        rows = self._rows(sql, params)
        return rows, blob_vectors([r[column] for r in rows])

    def _vector_rows_in(
        self, sql: str, values: Iterable[Any], column: int
    ) -> tuple[list[Row], np.ndarray]:
        rows = self._rows_in(sql, values)
        return rows, blob_vectors([r[column] for r in rows])

    def _execute_in(self, sql: str, values: Iterable[Any], before: Sequence[Any] = ()) -> int:
        changed = 0
        for chunk in chunks(sorted(set(values))):
            query = sql.format(marks=",".join("?" * len(chunk)))
            changed += self._db.execute(query, [*before, *chunk]).rowcount
        return changed

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._db.execute(sql, params).rowcount

    def _execute_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        return max(self._db.executemany(sql, rows).rowcount, 0)


def blob_vectors(blobs: Sequence[bytes]) -> np.ndarray:
    """Embeddings stored as little-endian float32 blobs, stacked (n x d float32; 0 x 0 when
    there is none)."""
    if not blobs:
        return np.zeros((0, 0), np.float32)
    vectors = np.frombuffer(b"".join(blobs), dtype="<f4")
    return vectors.reshape(len(blobs), -1).astype(np.float32)


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
