"""The SQL primitives of store/dialect.py over the PostgreSQL store's connection: shared
statements, written in SQLite's form, are turned into PostgreSQL's (`to_postgres`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .dialect import Dialect, Row
from .postgres_sql import PostgresBase, vectors_of

__all__ = ["PostgresDialect", "to_postgres"]


class PostgresDialect(PostgresBase, Dialect):
    """The SQL primitives of the store-neutral mixins, over the PostgreSQL store's connection.
    Reads connect again after a server restart (`_all`); other statements never run twice."""

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self._all(to_postgres(sql), tuple(params))

    def _rows_in(self, sql: str, values: Iterable[Any], before: Sequence[Any] = ()) -> list[Row]:
        return self._all(to_postgres(sql), (*before, list(values)))

    def _dict_rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return self._dicts(to_postgres(sql), tuple(params))

    def _vector_rows(
        self, sql: str, params: Sequence[Any], column: int
    ) -> tuple[list[Row], np.ndarray]:
        rows = self._binary(to_postgres(sql), tuple(params))
        return rows, vectors_of(rows, column)

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._db.execute(to_postgres(sql), tuple(params)).rowcount

    def _execute_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        with self._db.cursor() as cursor:
            cursor.executemany(to_postgres(sql), rows)
            # psycopg adds up the rows of every statement of an executemany.
            return max(cursor.rowcount, 0)


def to_postgres(sql: str) -> str:
    """A statement in SQLite's form (`?` placeholders, `IN ({marks})` lists) in PostgreSQL's
    (`%s`, `= ANY(%s)` with the list as one array parameter)."""
    return sql.replace("%", "%%").replace("IN ({marks})", "= ANY(?)").replace("?", "%s")
