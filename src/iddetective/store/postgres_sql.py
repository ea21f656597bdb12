"""What the PostgreSQL store's modules share: the connection, its write transactions, and the
conversions between PostgreSQL values and the catalogue's plain data.

Every write runs in one transaction that first takes a transaction-scoped advisory lock,
where SQLite takes its one write lock: the exclusive one for anything that changes who is
who (people, labels, edits, erasure, opt-outs); the shared one for saves of photos without
labels, which then run side by side and rely on unique keys (`INSERT ... ON CONFLICT`) so
that two writers never store a photo twice; none for appending to the audit log and writing
API keys (nothing else touches those rows). A shared save then locks the SHA-256s and paths
of its batch (advisory locks on their hashes, in one order), so two savers of overlapping
batches take turns instead of deadlocking over rows; a save that still loses a deadlock
(PostgreSQL detects it after a second) is rolled back and run again whole.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import numpy as np
import psycopg
from psycopg import errors
from psycopg.abc import Buffer
from psycopg.adapt import Loader
from psycopg.pq import Format
from psycopg.rows import dict_row

from ..errors import StoreError

__all__ = [
    "NOCASE",
    "PostgresBase",
    "iso",
    "iso_or_none",
    "like_escape",
    "now",
    "vectors_of",
]

#: The store's connection: autocommit, rows as tuples (a type, for the modules of the store).
Connection = psycopg.Connection[tuple[Any, ...]]
Params = tuple[Any, ...] | list[Any] | dict[str, Any]
Lock = Literal["exclusive", "shared", "none"]
T = TypeVar("T")

#: First key of the store's advisory locks ("iddt" in ASCII), and of its per-photo locks.
LOCK_CLASS = 0x69646474
PHOTO_LOCK_CLASS = LOCK_CLASS + 1
#: Second keys: the catalogue's writer lock, and the lock migrations run under.
WRITER_LOCK = 1
MIGRATION_LOCK = 2
#: SQLite's `x = ? COLLATE NOCASE` is `lower(x) = NOCASE` here (x a `COLLATE "C"` column):
#: ASCII letters fold and no others, as in SQLite, whatever the database's locale.
NOCASE = 'lower(%s::text COLLATE "C")'
#: Times a save that lost a deadlock to another save is run again before giving up.
RETRIES = 5


class VectorLoader(Loader):
    """pgvector's binary `vector` (u16 dimensions, u16 unused, big-endian float32s) as a
    native float32 numpy array: faster than a `pgvector.Vector` per row for bulk reads."""

    format = Format.BINARY

    def load(self, data: Buffer) -> np.ndarray:
        return np.frombuffer(data, dtype=">f4", offset=4).astype(np.float32)


class PostgresBase:
    """The connection and its transactions (a base of `PostgresStore` and its mixins)."""

    _db: Connection
    #: The URL without its password, for messages.
    url: str
    readonly: bool

    @contextmanager
    def _write(self, lock: Lock = "exclusive") -> Iterator[Connection]:
        """One transaction holding the writer lock: `exclusive` for changes of who is who,
        `shared` for saves of photos, `none` for rows nothing else touches (audit, keys)."""
        if self.readonly:
            raise StoreError(f"cannot write {self.url}: the catalogue was opened read-only")
        with self._db.transaction():
            if lock != "none":
                mode = "_shared" if lock == "shared" else ""
                self._db.execute(
                    f"SELECT pg_advisory_xact_lock{mode}(%s, %s)", (LOCK_CLASS, WRITER_LOCK)
                )
            yield self._db

    def _retrying(self, work: Callable[[], T], lock: Lock) -> T:
        """Run `work` in a write transaction, again from the start if it lost a deadlock or a
        serialisation conflict to another writer (it must be safe to repeat: saves are)."""
        for attempt in range(RETRIES):
            try:
                with self._write(lock):
                    return work()
            except (errors.DeadlockDetected, errors.SerializationFailure) as error:
                if attempt == RETRIES - 1:
                    raise StoreError(f"cannot write {self.url}: {error}") from None
                time.sleep(0.01 * 2**attempt)
        raise AssertionError("unreachable")

    # -- reading -------------------------------------------------------------------------
    def _all(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        return self._db.execute(sql, params).fetchall()

    def _one(self, sql: str, params: Params = ()) -> tuple[Any, ...] | None:
        return self._db.execute(sql, params).fetchone()

    def _value(self, sql: str, params: Params = ()) -> Any:
        """The first column of the first row (None when there is no row)."""
        row = self._db.execute(sql, params).fetchone()
        return row[0] if row else None

    def _dicts(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        with self._db.cursor(row_factory=dict_row) as cursor:
            return cursor.execute(sql, params).fetchall()

    def _binary(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        """Rows fetched in binary form: `vector` columns arrive as numpy arrays."""
        with self._db.cursor(binary=True) as cursor:
            return cursor.execute(sql, params).fetchall()

    def _bump_epoch(self) -> None:
        self._db.execute("UPDATE meta SET value = value + 1 WHERE key = 'faces_epoch'")


def vectors_of(rows: list[tuple[Any, ...]], column: int) -> np.ndarray:
    """The arrays in `column` of `rows` stacked (n x d float32; 0 x 0 when there is none)."""
    if not rows:
        return np.zeros((0, 0), np.float32)
    return np.stack([row[column] for row in rows]).astype(np.float32, copy=False)


def now() -> datetime:
    """The time to record, to the second (as the SQLite store records it)."""
    return datetime.now(UTC).replace(microsecond=0)


def iso(value: datetime) -> str:
    """A recorded time as the catalogue shows it: ISO 8601 in UTC, to the second."""
    return value.astimezone(UTC).isoformat(timespec="seconds")


def iso_or_none(value: datetime | None) -> str | None:
    """`iso` of a time that may not have been recorded."""
    return None if value is None else iso(value)


def like_escape(text: str) -> str:
    """`text` matched literally inside a LIKE pattern (backslash is LIKE's escape)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
