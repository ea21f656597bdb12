"""The SQL primitives that the store-neutral parts (photos.py, people.py, access.py,
clusters.py, ...) run their statements with; each store provides them for its database
(`SqliteDialect`, `PostgresDialect`), with what differs between the two: how a vector is
bound, how a recorded time reads back, case-insensitive comparison, row locks.

Shared statements are written in SQLite's form: `?` placeholders, and `IN ({marks})` where a
list of values goes (`_rows_in`); the PostgreSQL store turns them into `%s` and `= ANY(%s)`.
Otherwise they use what both databases accept: `ON CONFLICT DO NOTHING` rather than
`INSERT OR IGNORE`, `CAST(? AS bigint)` rather than `?::bigint`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np

from ..errors import StoreError

__all__ = ["REVOKE_KEY", "Dialect", "Row", "check_version", "timestamp"]

Row = tuple[Any, ...]
#: What a write transaction locks in PostgreSQL (SQLite has one write lock for all): `exclusive`
#: for changes of who is who, `shared` for saves of photos, `none` for rows nothing else
#: touches (audit, keys).
Lock = Literal["exclusive", "shared", "none"]

#: Revoke a key (parameters: the time, the key's id), unless it is the last active admin
#: key, so that nobody is left able to manage keys (the PostgreSQL store locks the active
#: admin keys first: under READ COMMITTED two revokes at once could each see the other active).
REVOKE_KEY = (
    "UPDATE api_key SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL "
    "AND (role <> 'admin' OR EXISTS (SELECT 1 FROM api_key AS other "
    "WHERE other.role = 'admin' AND other.revoked_at IS NULL AND other.id <> api_key.id))"
)


class Dialect:
    """What a store-neutral mixin needs of its store: a base each store's dialect implements."""

    #: Appended to a SELECT whose rows the transaction must hold until it ends.
    FOR_UPDATE = ""

    def _write(self, lock: Lock = "exclusive") -> AbstractContextManager[Any]:
        """One write transaction, holding the store's writer lock."""
        raise NotImplementedError

    def _nocase(self, column: str) -> str:
        """`column` sorted as SQLite's NOCASE sorts: ASCII letters folded, every other
        character by its code, whatever the database's locale."""
        raise NotImplementedError

    def _nocase_equals(self, column: str) -> str:
        """A condition: `column` equals the next parameter, as SQLite's NOCASE compares."""
        raise NotImplementedError

    def _vector(self, embedding: np.ndarray) -> Any:
        """An embedding as the `face.embedding` column takes it."""
        raise NotImplementedError

    def _time(self, value: Any) -> str:
        """A recorded time as the catalogue shows it: ISO 8601 in UTC, to the second."""
        raise NotImplementedError

    def _time_or_none(self, value: Any) -> str | None:
        """`_time` of a time that may not have been recorded."""
        return None if value is None else self._time(value)

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """The rows of a statement, as tuples."""
        raise NotImplementedError

    def _rows_in(self, sql: str, values: Iterable[Any], before: Sequence[Any] = ()) -> list[Row]:
        """The rows of a statement holding `IN ({marks})`, for every one of `values` (its
        parameters: `before`, then the values)."""
        raise NotImplementedError

    def _dict_rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """The rows of a statement, as dicts by column name."""
        raise NotImplementedError

    def _vector_rows(
        self, sql: str, params: Sequence[Any], column: int
    ) -> tuple[list[Row], np.ndarray]:
        """The rows of a statement, and the embeddings in `column` stacked (n x d float32;
        0 x 0 when there is no row)."""
        raise NotImplementedError

    def _vector_rows_in(
        self, sql: str, values: Iterable[Any], column: int
    ) -> tuple[list[Row], np.ndarray]:
        """`_vector_rows` of a statement holding `IN ({marks})`, for every one of `values`."""
        raise NotImplementedError

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; the number of rows it changed."""
        raise NotImplementedError

    def _execute_in(self, sql: str, values: Iterable[Any], before: Sequence[Any] = ()) -> int:
        """Run a statement holding `IN ({marks})` for every one of `values`; rows changed."""
        raise NotImplementedError

    def _execute_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        """Run a statement once per row of parameters; the number of rows changed in all."""
        raise NotImplementedError

    def _firsts(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """The first column of each row of a statement."""
        return [row[0] for row in self._rows(sql, params)]

    def _scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first column of the first row of a statement (None when there is no row)."""
        rows = self._rows(sql, params)
        return rows[0][0] if rows else None


def timestamp() -> str:
    """The time to record: ISO 8601 text in UTC to the second, which SQLite keeps as it is
    and PostgreSQL parses into its `timestamptz`."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def check_version(version: int, known: int, where: str) -> None:
    """Refuse a catalogue (at `where`) whose schema `version` is not the `known` one."""
    if version > known:
        raise StoreError(
            f"{where} has schema version {version}, newer than this iddetective "
            f"understands ({known}); upgrade iddetective"
        )
    if version < known:
        raise StoreError(f"{where} needs migrating; open it once for writing")
