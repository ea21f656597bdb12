"""The SQL primitives the store-neutral parts (photos.py, people.py, access.py, clusters.py, ...)
run their statements with: `Sql`, an object each store holds as `store.sql` (`SqliteSql`,
`PostgresSql`), with what differs between the two databases: connections and transactions,
how a vector is bound, how a recorded time reads back, case-insensitive comparison, row locks.

Shared statements are written in SQLite's form: `?` placeholders, and `IN ({marks})` where a
list of values goes (`rows_in`); the PostgreSQL one turns them into `%s` and `= ANY(%s)`.
Otherwise they use what both databases accept: `ON CONFLICT DO NOTHING` rather than
`INSERT OR IGNORE`, `CAST(? AS bigint)` rather than `?::bigint`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import numpy as np

from ..errors import StoreError

__all__ = [
    "Row",
    "Sql",
    "check_version",
    "json_body",
    "timestamp",
    "vector_length",
]

Row = tuple[Any, ...]
#: What a write transaction locks in PostgreSQL (SQLite has one write lock for all): `exclusive`
#: for changes of who is who, `shared` for saves of photos, `none` for rows nothing else
#: touches (audit, keys).
Lock = Literal["exclusive", "shared", "none"]
T = TypeVar("T")


class Sql:
    """One database as the store-neutral parts use it: write transactions, statements, and the
    few expressions and values that each database spells its own way."""

    #: Appended to a SELECT whose rows the transaction must hold until it ends.
    FOR_UPDATE = ""

    # -- transactions ----------------------------------------------------------------------
    def write(self, lock: Lock = "exclusive") -> AbstractContextManager[Any]:
        """One write transaction, holding the store's writer lock; statements of this thread
        run in it until it ends."""
        raise NotImplementedError

    def repeatable_write(self, work: Callable[[], T], lock: Lock) -> T:
        """`work()` in one write transaction. Work that is safe to repeat (a save) may be run
        again whole: PostgreSQL does when it lost a deadlock or its connection."""
        with self.write(lock):
            return work()

    def lock_keys(self, keys: Iterable[str]) -> None:
        """Inside a write: writers of any of these keys (paths, SHA-256s) take turns from here
        on. SQLite's one write lock holds every key already."""

    # -- expressions and values ------------------------------------------------------------
    def nocase(self, column: str) -> str:
        """`column` sorted as SQLite's NOCASE sorts: ASCII letters folded, every other
        character by its code, whatever the database's locale."""
        raise NotImplementedError

    def nocase_equals(self, column: str) -> str:
        """A condition: `column` equals the next parameter, as SQLite's NOCASE compares."""
        raise NotImplementedError

    def vector_length(self, column: str) -> str:
        """An expression: the number of dimensions of the stored vector in `column`."""
        raise NotImplementedError

    def vector(self, embedding: np.ndarray) -> Any:
        """An embedding as the `face.embedding` column takes it."""
        raise NotImplementedError

    def time(self, value: Any) -> str:
        """A recorded time as the catalogue shows it: ISO 8601 in UTC, to the second."""
        raise NotImplementedError

    def index_model(self, model_id: int, model: str, dimension: int) -> None:
        """Inside a write: make whatever the database keeps to search the vectors of a model
        whose first vector this transaction stores (`model_id` its row in `model`). SQLite
        keeps none: its vector index is a file beside the catalogue (vector_index/)."""

    def time_or_none(self, value: Any) -> str | None:
        """`time` of a time that may not have been recorded."""
        return None if value is None else self.time(value)

    # -- statements ------------------------------------------------------------------------
    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """The rows of a statement, as tuples."""
        raise NotImplementedError

    def rows_in(self, sql: str, values: Iterable[Any], before: Sequence[Any] = ()) -> list[Row]:
        """The rows of a statement holding `IN ({marks})`, for every one of `values` (its
        parameters: `before`, then the values)."""
        raise NotImplementedError

    def dict_rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """The rows of a statement, as dicts by column name."""
        raise NotImplementedError

    def vector_rows(
        self, sql: str, params: Sequence[Any], column: int, dimension: int | None = None
    ) -> tuple[list[Row], np.ndarray]:
        """The rows of a statement, and the embeddings in `column` stacked (n x d float32;
        0 x `dimension` when there is no row, 0 x 0 when that is not given). Embeddings of
        another length than `dimension`, or of different lengths, raise `StoreError`."""
        raise NotImplementedError

    def vector_rows_in(
        self,
        sql: str,
        values: Iterable[Any],
        column: int,
        dimension: int | None = None,
        before: Sequence[Any] = (),
    ) -> tuple[list[Row], np.ndarray]:
        """`vector_rows` of a statement holding `IN ({marks})`, for every one of `values`
        (its parameters: `before`, then the values)."""
        raise NotImplementedError

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; the number of rows it changed."""
        raise NotImplementedError

    def execute_in(self, sql: str, values: Iterable[Any], before: Sequence[Any] = ()) -> int:
        """Run a statement holding `IN ({marks})` for every one of `values`; rows changed."""
        raise NotImplementedError

    def execute_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        """Run a statement once per row of parameters; the number of rows changed in all."""
        raise NotImplementedError

    def firsts(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """The first column of each row of a statement."""
        return [row[0] for row in self.rows(sql, params)]

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first column of the first row of a statement (None when there is no row)."""
        rows = self.rows(sql, params)
        return rows[0][0] if rows else None

    # -- the database itself ---------------------------------------------------------------
    def compact(self) -> None:
        """Rewrite the storage so deleted data is gone from the files, not only unlinked."""
        raise NotImplementedError

    def engine_problems(self) -> list[str]:
        """The database engine's own verdict on its files (empty when they are intact)."""
        raise NotImplementedError

    def close(self) -> None:
        """Close every connection."""
        raise NotImplementedError


def vector_length(lengths: set[int], dimension: int | None) -> int:
    """The one length of the embeddings a read found (their `lengths`), which must be
    `dimension` when it is given; `StoreError` when they differ from it or from each other
    (faces of several models in one read)."""
    expected = {dimension} if dimension is not None else set(list(lengths)[:1])
    if lengths != expected:
        found = " and ".join(str(n) for n in sorted(lengths))
        recorded = f"; the model's recorded dimension is {dimension}" if dimension else ""
        raise StoreError(
            f"the catalogue holds embeddings of {found} dimensions where one length was "
            f"expected{recorded}: read the faces of one model at a time"
        )
    return lengths.pop()


def json_body(body: str, where: str, error: type[Exception]) -> Any:
    """The JSON document a text column keeps (a calibration table, a model card); `error`
    naming `where` if it is not JSON, so damage is refused, never half read."""
    try:
        return json.loads(body)
    except json.JSONDecodeError as problem:
        raise error(f"{where} is not JSON: {problem}") from None


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
