"""The SQL primitives of store/dialect.py over a PostgreSQL catalogue (`PostgresSql`): the
connections, their write transactions, shared statements (written in SQLite's form) turned
into PostgreSQL's (`to_postgres`), and the conversions between PostgreSQL values and the
catalogue's plain data.

Every write runs in one transaction that first takes a transaction-scoped advisory lock,
where SQLite takes its one write lock: the exclusive one for anything that changes who is
who (people, labels, edits, erasure, opt-outs); the shared one for saves of photos without
labels, which then run side by side and rely on unique keys (`INSERT ... ON CONFLICT`) so
that two writers never store a photo twice; none for appending to the audit log and writing
API keys (nothing else touches those rows). A shared save then locks the SHA-256s and paths
of its batch (advisory locks on their hashes, in one order), so two savers of overlapping
batches take turns instead of deadlocking over rows; a save that still loses a deadlock
(PostgreSQL detects it after a second) is rolled back and run again whole.

The connection survives a restart of the server: a statement outside a write transaction
that finds its connection gone connects again (waiting for the server up to
`RECONNECT_SECONDS`) and runs once more; a write transaction that loses its connection is
run again whole by `repeatable_write` (saves), and otherwise fails with a `StoreError` that says
whether the change was made.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import errors
from psycopg.abc import Buffer
from psycopg.adapt import Loader
from psycopg.pq import Format
from psycopg.rows import dict_row
from psycopg.types import TypeInfo

from ..errors import StoreError
from ..retrying import Backoff, retried
from .dialect import Lock, Row, Sql

__all__ = [
    "NOCASE",
    "RECONNECT_SECONDS",
    "LostConnection",
    "PostgresSql",
    "configured",
    "connect_patiently",
    "is_lost",
    "iso",
    "iso_or_none",
    "like_escape",
    "now",
    "once_more_if_lost",
    "to_postgres",
    "vectors_of",
]

#: The store's connection: autocommit, rows as tuples (a type, for the modules of the store).
Connection = psycopg.Connection[tuple[Any, ...]]
Params = tuple[Any, ...] | list[Any] | dict[str, Any]
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
#: Guards the stores' lists of opened connections.
_OPENED = threading.Lock()
#: Times a save that lost a deadlock to another save is run again before giving up.
RETRIES = 5
#: Seconds a store keeps trying to reach its server again after losing its connection (a
#: restart takes a few), before its statement fails with a `StoreError`.
RECONNECT_SECONDS = 30.0
#: Waits between tries to connect to a server that is down, and to rerun a write that lost
#: a deadlock or a serialisation conflict.
CONNECT_BACKOFF = Backoff(0.1, longest=2.0)
WRITE_BACKOFF = Backoff(0.01)


class VectorLoader(Loader):
    """pgvector's binary `vector` (u16 dimensions, u16 unused, big-endian float32s) as a
    native float32 numpy array: faster than a `pgvector.Vector` per row for bulk reads."""

    format = Format.BINARY

    def load(self, data: Buffer) -> np.ndarray:
        return np.frombuffer(data, dtype=">f4", offset=4).astype(np.float32)


class PostgresSql(Sql):
    """The SQL primitives over one PostgreSQL catalogue: each thread its own autocommit
    connection, write transactions under advisory locks. Reads connect again after a server
    restart (`_reconnecting`); other statements never run twice."""

    FOR_UPDATE = " FOR UPDATE"

    def __init__(self, dsn: str, url: str, *, readonly: bool) -> None:
        #: The URL as given, password included: never shown.
        self._dsn = dsn
        #: The URL without its password, for messages.
        self.url = url
        self.readonly = readonly
        #: Each thread's own connection (and whether it is inside `write`), so that threads
        #: never share a transaction nor wait for each other's statements.
        self._local = threading.local()
        self._opened: list[Connection] = []

    # -- a connection per thread -------------------------------------------------------------
    @property
    def db(self) -> Connection:
        """This thread's connection, opened on its first statement."""
        db: Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = connect_patiently(self._dsn, self.url, self._configure)
            self._use(db)
        return db

    def adopt(self, db: Connection) -> None:
        """Make `db` (just opened, autocommit) this thread's connection, set up as any."""
        self._use(configured(db, self._configure))

    def _use(self, db: Connection) -> None:
        """Make `db` this thread's connection."""
        old: Connection | None = getattr(self._local, "db", None)
        self._local.db = db
        with _OPENED:
            self._opened = [c for c in self._opened if c is not old] + [db]

    @property
    def _writing(self) -> bool:
        """True inside `write`: there, a lost connection fails the transaction (its
        statements must not run again on their own, outside it)."""
        return bool(getattr(self._local, "writing", False))

    @_writing.setter
    def _writing(self, value: bool) -> None:
        self._local.writing = value

    def close(self) -> None:
        """Close every thread's connection."""
        with _OPENED:
            opened, self._opened = self._opened, []
        for db in opened:
            db.close()

    # -- the connection ----------------------------------------------------------------------
    def _configure(self, db: Connection) -> None:
        """Set up a new connection as the store's modules expect it."""
        info = TypeInfo.fetch(db, "vector")
        if info is None:
            raise StoreError(f"{self.url} has lost the vector extension; CREATE EXTENSION vector")
        register_vector(db)  # numpy arrays are written as `vector`
        db.adapters.register_loader(info.oid, VectorLoader)
        if self.readonly:
            db.execute("SET default_transaction_read_only = on")

    def _reconnecting(self, work: Callable[[], T]) -> T:
        """Run `work` (statements outside a transaction, safe to repeat), and once more on a
        new connection if the server dropped this one (it restarted, or ended the session)."""
        if self._writing:
            return work()
        lost = self.db

        def reconnect() -> None:
            if self.db is lost:  # else a statement inside `work` has connected again already
                self._reconnect()

        return once_more_if_lost(lost, work, reconnect)

    def _reconnect(self) -> None:
        """Replace the lost connection, trying again with backoff while the server is down."""
        db = connect_patiently(self._dsn, self.url, self._configure)
        self.db.close()
        self._use(db)  # in this thread; the others keep theirs

    # -- writing -----------------------------------------------------------------------------
    @contextmanager
    def write(self, lock: Lock = "exclusive") -> Iterator[Connection]:
        """One transaction holding the writer lock: `exclusive` for changes of who is who,
        `shared` for saves of photos, `none` for rows nothing else touches (audit, keys)."""
        if self.readonly:
            raise StoreError(f"cannot write {self.url}: the catalogue was opened read-only")
        # Nothing is written before the lock is held: BEGIN and the lock may run again.
        transaction = self._reconnecting(lambda: self._begin(lock))
        outer, self._writing = self._writing, True
        committing = False
        try:
            with transaction:
                yield self.db
                committing = True
        except psycopg.OperationalError as error:
            if not is_lost(self.db, error):
                raise
            # A transaction whose connection died before COMMIT was rolled back by the
            # server; one that died during COMMIT may or may not have been committed.
            made = "may or may not have been made" if committing else "was not made"
            raise LostConnection(
                f"lost the connection to {self.url} while writing (the change {made}): {error}"
            ) from None
        finally:
            self._writing = outer

    def _begin(self, lock: Lock) -> ExitStack:
        """BEGIN, and take the writer lock; closing what it returns commits (or rolls back)."""
        with ExitStack() as transaction:
            transaction.enter_context(self.db.transaction())
            if lock != "none":
                mode = "_shared" if lock == "shared" else ""
                self.db.execute(
                    f"SELECT pg_advisory_xact_lock{mode}(%s, %s)", (LOCK_CLASS, WRITER_LOCK)
                )
            return transaction.pop_all()
        raise AssertionError("unreachable")  # mypy: ExitStack may swallow exceptions

    def repeatable_write(self, work: Callable[[], T], lock: Lock) -> T:
        """Run `work` in a write transaction, again from the start if it lost a deadlock or a
        serialisation conflict to another writer, or its connection (it must be safe to
        repeat: saves are)."""

        def written() -> T:
            with self.write(lock):
                return work()

        try:
            return retried(written, _write_retry_delay, attempts=RETRIES)
        except (errors.DeadlockDetected, errors.SerializationFailure) as error:
            raise StoreError(f"cannot write {self.url}: {error}") from None

    def lock_keys(self, keys: Iterable[str]) -> None:
        """Lock the keys (a batch's SHA-256s and paths) in the order of their hashes: savers
        sharing one wait for each other here, before either holds a row the other needs."""
        self.db.execute(
            "SELECT pg_advisory_xact_lock(%s, h) FROM (SELECT DISTINCT hashtext(k) AS h "
            "FROM unnest(%s::text[]) AS k ORDER BY h) AS hashes",
            (PHOTO_LOCK_CLASS, sorted(set(keys))),
        )

    # -- expressions and values ------------------------------------------------------------
    # Text columns are COLLATE "C" (postgres_migrations.py): lower() of them folds ASCII
    # letters and no others, as NOCASE does, and sorts by code point, as SQLite does.
    def nocase(self, column: str) -> str:
        return f"lower({column})"

    def nocase_equals(self, column: str) -> str:
        return f"lower({column}) = {NOCASE.replace('%s', '?')}"

    def vector(self, embedding: np.ndarray) -> Any:
        return np.asarray(embedding, dtype=np.float32)  # register_vector binds it as `vector`

    def time(self, value: Any) -> str:
        return iso(value)

    # -- statements in SQLite's form (store/dialect.py) -----------------------------------
    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self.all(to_postgres(sql), tuple(params))

    def rows_in(self, sql: str, values: Iterable[Any], before: Sequence[Any] = ()) -> list[Row]:
        return self.all(to_postgres(sql), (*before, list(values)))

    def dict_rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return self._dicts(to_postgres(sql), tuple(params))

    def vector_rows(
        self, sql: str, params: Sequence[Any], column: int
    ) -> tuple[list[Row], np.ndarray]:
        rows = self._binary(to_postgres(sql), tuple(params))
        return rows, vectors_of(rows, column)

    def vector_rows_in(
        self, sql: str, values: Iterable[Any], column: int
    ) -> tuple[list[Row], np.ndarray]:
        rows = self._binary(to_postgres(sql), (list(values),))
        return rows, vectors_of(rows, column)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self.db.execute(to_postgres(sql), tuple(params)).rowcount

    def execute_in(self, sql: str, values: Iterable[Any], before: Sequence[Any] = ()) -> int:
        return self.db.execute(to_postgres(sql), (*before, list(values))).rowcount

    def execute_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        with self.db.cursor() as cursor:
            cursor.executemany(to_postgres(sql), rows)
            # psycopg adds up the rows of every statement of an executemany.
            return max(cursor.rowcount, 0)

    # -- statements in PostgreSQL's form ----------------------------------------------------
    def all(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        """The rows of a statement written for PostgreSQL (`%s` or `%(name)s` parameters)."""
        return self._reconnecting(lambda: self.db.execute(sql, params).fetchall())

    def value(self, sql: str, params: Params = ()) -> Any:
        """The first column of the first row (None when there is no row)."""
        row = self._reconnecting(lambda: self.db.execute(sql, params).fetchone())
        return row[0] if row else None

    def _dicts(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        def fetch() -> list[dict[str, Any]]:
            with self.db.cursor(row_factory=dict_row) as cursor:
                return cursor.execute(sql, params).fetchall()

        return self._reconnecting(fetch)

    def _binary(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        """Rows fetched in binary form: `vector` columns arrive as numpy arrays."""

        def fetch() -> list[tuple[Any, ...]]:
            with self.db.cursor(binary=True) as cursor:
                return cursor.execute(sql, params).fetchall()

        return self._reconnecting(fetch)

    # -- the database itself ---------------------------------------------------------------
    def compact(self) -> None:
        # Deleted rows stay in their pages, marked dead, until the table is rewritten; the
        # write-ahead log keeps them until a checkpoint recycles it (backups and replicas are
        # the operator's to age out: docs/scaling.md).
        vacuum = f"VACUUM (FULL, ANALYZE) {', '.join(_TABLES)}"
        self._reconnecting(lambda: self.db.execute(vacuum))
        # Only superusers and pg_checkpoint members may; the server checkpoints on its own.
        with contextlib.suppress(errors.InsufficientPrivilege):
            self._reconnecting(lambda: self.db.execute("CHECKPOINT"))

    def engine_problems(self) -> list[str]:
        """None to find from here: PostgreSQL checks its own pages (data checksums, amcheck)
        and the schema enforces what SQLite's foreign key check looks for."""
        return []


class LostConnection(StoreError):
    """A write transaction lost its connection to the server (which restarted, or ended it)."""


def is_lost(db: Connection, error: psycopg.OperationalError) -> bool:
    """Whether `error` means the connection is gone, not that its statement failed."""
    return db.broken or isinstance(error, errors.AdminShutdown | errors.CrashShutdown)


def once_more_if_lost(db: Connection, work: Callable[[], T], reconnect: Callable[[], None]) -> T:
    """`work()` on `db`; if `db` turns out lost (`is_lost`), `reconnect()` then `work()` again
    (only for work that is safe to repeat: reads, BEGIN)."""
    try:
        return work()
    except psycopg.OperationalError as error:
        if not is_lost(db, error):
            raise
    reconnect()
    return work()


def connect_patiently(dsn: str, shown: str, configure: Callable[[Connection], None]) -> Connection:
    """A new autocommit connection to `dsn`, set up by `configure`; while the server is down
    (a restart takes a few seconds) tried again with backoff for up to `RECONNECT_SECONDS`,
    then a StoreError naming `shown` (the URL without its password)."""
    deadline = time.monotonic() + RECONNECT_SECONDS

    def connect() -> Connection:
        # libpq waits for an unreachable host as long as TCP does, unless told otherwise.
        timeout = max(2, round(deadline - time.monotonic()))
        return psycopg.connect(dsn, autocommit=True, connect_timeout=timeout)

    try:
        db = retried(connect, _connect_retry_delay, seconds=RECONNECT_SECONDS)
    except psycopg.OperationalError as error:
        raise StoreError(f"cannot reach {shown}: {error}") from None
    return configured(db, configure)


def _connect_retry_delay(error: Exception, retry: int) -> float | None:
    """A server that cannot be reached is tried again (it may be restarting)."""
    return CONNECT_BACKOFF.delay(retry) if isinstance(error, psycopg.OperationalError) else None


def _write_retry_delay(error: Exception, retry: int) -> float | None:
    """A write that lost to another writer is run again after a backoff, one that lost its
    connection at once: the next try connects again. (Had the lost COMMIT been made, the
    work finds its rows there and changes nothing: a save then reports its photos as
    unchanged rather than indexed.)"""
    if isinstance(error, errors.DeadlockDetected | errors.SerializationFailure):
        return WRITE_BACKOFF.delay(retry)
    return 0.0 if isinstance(error, LostConnection) else None


def configured(db: Connection, configure: Callable[[Connection], None]) -> Connection:
    """`db` once `configure` has set it up; closed if that fails."""
    try:
        configure(db)
    except BaseException:
        db.close()
        raise
    return db


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


def to_postgres(sql: str) -> str:
    """A statement in SQLite's form (`?` placeholders, `IN ({marks})` lists) in PostgreSQL's
    (`%s`, `= ANY(%s)` with the list as one array parameter)."""
    return sql.replace("%", "%%").replace("IN ({marks})", "= ANY(?)").replace("?", "%s")


#: Every table of the catalogue, rewritten by `compact`.
_TABLES = (
    "person",
    "alias",
    "account",
    "list",
    "list_member",
    "relation",
    "person_text",
    "photo",
    "photo_file",
    "face",
    "face_cluster",
    "face_rejection",
    "failure",
    "optout",
    "erased_label",
    "erase_secret",
    "audit",
    "edit",
    "api_key",
    "meta",
)
