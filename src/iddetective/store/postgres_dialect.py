"""The SQL primitives of store/dialect.py over the PostgreSQL store's connection: shared
statements, written in SQLite's form, are turned into PostgreSQL's (`to_postgres`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .dialect import Dialect, Row
from .postgres_sql import NOCASE, PostgresBase, iso, vectors_of

__all__ = ["PostgresDialect", "to_postgres"]


class PostgresDialect(PostgresBase, Dialect):
    """The SQL primitives of the store-neutral mixins, over the PostgreSQL store's connection.
    Reads connect again after a server restart (`_all`); other statements never run twice."""

    FOR_UPDATE = " FOR UPDATE"

    # Text columns are COLLATE "C" (postgres_migrations.py): lower() of them folds ASCII
    # letters and no others, as NOCASE does, and sorts by code point, as SQLite does.
    def _nocase(self, column: str) -> str:
        return f"lower({column})"

    def _nocase_equals(self, column: str) -> str:
        return f"lower({column}) = {NOCASE.replace('%s', '?')}"

    def _vector(self, embedding: np.ndarray) -> Any:
        return np.asarray(embedding, dtype=np.float32)  # register_vector binds it as `vector`

    def _time(self, value: Any) -> str:
        return iso(value)

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

    def _vector_rows_in(
        self, sql: str, values: Iterable[Any], column: int
    ) -> tuple[list[Row], np.ndarray]:
        rows = self._binary(to_postgres(sql), (list(values),))
        return rows, vectors_of(rows, column)

    def _execute_in(self, sql: str, values: Iterable[Any], before: Sequence[Any] = ()) -> int:
        return self._db.execute(to_postgres(sql), (*before, list(values))).rowcount

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
