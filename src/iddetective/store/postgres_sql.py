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

Connections come from a bounded pool (psycopg_pool; `POOL_SIZE`), set up once each when
they are opened (pgvector's types, read-only sessions) and checked each time one is lent
out. The store survives a restart of the server: a dead connection is replaced (and, since a
restart ends them all, the idle ones are checked at once); a statement outside a write
transaction that finds its connection gone runs once more on another, waiting for the server
up to `RECONNECT_SECONDS`; a write transaction that loses its connection is run again whole
by `repeatable_write` (saves), and otherwise fails with a `StoreError` that says whether the
change was made.
"""

from __future__ import annotations

import contextlib
import logging
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
from psycopg.sql import SQL, Composed, Identifier, Literal
from psycopg.types import TypeInfo
from psycopg_pool import ConnectionPool, PoolTimeout

from ..errors import StoreBusy, StoreError
from ..retrying import Backoff, retried
from .dialect import Lock, Row, Sql, vector_length

__all__ = [
    "HNSW_MAX_DIMENSIONS",
    "NOCASE",
    "POOL_SIZE",
    "RECONNECT_SECONDS",
    "LostConnection",
    "PostgresSql",
    "configured",
    "connect_patiently",
    "embedding_expression",
    "is_lost",
    "iso",
    "iso_or_none",
    "like_escape",
    "model_condition",
    "model_index_name",
    "now",
    "once_more_if_lost",
    "to_postgres",
    "vector_oid",
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
#: Times a save that lost a deadlock to another save is run again before giving up.
RETRIES = 5
#: Seconds a store keeps trying to reach its server again after losing its connection (a
#: restart takes a few), or waits for one of its connections to come free, before its
#: statement fails with a `StoreError`.
RECONNECT_SECONDS = 30.0
#: The store's pool of connections: how many it keeps open at least (idle ones beyond that
#: are closed after ten minutes) and at most (statements wait for one beyond that). A
#: `PostgresStore(url, pool=(low, high))` of a server with many request threads may want more.
POOL_SIZE = (1, 8)
PoolSize = tuple[int, int]
#: The most dimensions pgvector's HNSW index takes for a `vector`.
HNSW_MAX_DIMENSIONS = 2000
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
    """The SQL primitives over one PostgreSQL catalogue, on a bounded pool of autocommit
    connections (psycopg_pool): a statement outside a write transaction borrows one for its
    own time; a write transaction holds one from BEGIN to COMMIT, and this thread's
    statements run on it meanwhile. Reads connect again after a server restart
    (`_again_if_lost`); other statements never run twice."""

    FOR_UPDATE = " FOR UPDATE"

    def __init__(self, dsn: str, url: str, *, readonly: bool, pool: PoolSize = POOL_SIZE) -> None:
        #: The URL as given, password included: never shown.
        self._dsn = dsn
        #: The URL without its password, for messages.
        self.url = url
        self.readonly = readonly
        # The pool connects on demand and reconnects on the schedule of `_borrow`: its own
        # reconnection loop (1 s, doubling, for minutes) would keep a caller waiting long
        # after the server is back, so it gives a failed connection up at once.
        self._pool = ConnectionPool(
            dsn,
            kwargs={"autocommit": True, "connect_timeout": round(RECONNECT_SECONDS)},
            min_size=pool[0],
            max_size=pool[1],
            open=False,
            configure=self._configure,
            check=self._check,
            reconnect_timeout=0,
            name="iddetective-store",
        )
        _quiet_pool_logs()
        self._pool.open()
        #: This thread's write transaction's connection, while it is inside `write`.
        self._local = threading.local()
        #: Writers that take the catalogue's lock hold at most all but one of the pool's
        #: connections (the rest wait here, before borrowing one): however many wait for the
        #: lock, reads and audit entries find a connection.
        self._lockers = threading.BoundedSemaphore(max(pool[1] - 1, 1))

    def close(self) -> None:
        """Close the pool: its idle connections now, those lent out when they come back."""
        self._pool.close()

    # -- the pool's connections --------------------------------------------------------------
    def _configure(self, db: Connection) -> None:
        """Set up a new connection of the pool as the store's modules expect it."""
        configured(db, self._set_up)

    def _set_up(self, db: Connection) -> None:
        register_vector(db)  # numpy arrays are written as `vector`
        db.adapters.register_loader(vector_oid(db, self.url), VectorLoader)
        if self.readonly:
            db.execute("SET default_transaction_read_only = on")

    def _check(self, db: Connection) -> None:
        """Make sure a connection the pool lends out still answers. One that does not means
        the server restarted or ended sessions: every idle connection is checked then (the
        dead replaced), rather than one at each borrowing."""
        try:
            ConnectionPool.check_connection(db)
        except psycopg.Error:
            self._pool.check()
            raise

    def _borrow(self) -> Connection:
        """A connection of the pool, checked. While the pool has none to lend (the server is
        down, or every connection is in use) it is asked again, waiting a little longer
        each time, for up to `RECONNECT_SECONDS`; each ask lets it try to connect again."""
        deadline = time.monotonic() + RECONNECT_SECONDS
        retry = 0
        while (wait := min(CONNECT_BACKOFF.delay(retry), deadline - time.monotonic())) > 0:
            try:
                return self._pool.getconn(timeout=wait)
            except PoolTimeout:
                retry += 1
        raise self._none_to_lend()

    def _none_to_lend(self) -> StoreError:
        """Why the pool lent no connection for `RECONNECT_SECONDS`, in words."""
        try:
            psycopg.connect(self._dsn, connect_timeout=2).close()
        except psycopg.OperationalError as error:
            return StoreError(f"cannot reach {self.url}: {error}")
        return StoreBusy(
            f"no connection to {self.url} came free within {RECONNECT_SECONDS:g} s: all "
            f"{self._pool.max_size} were in use"
        )

    def _on_connection(self, work: Callable[[Connection], T]) -> T:
        """`work(db)` on this thread's write transaction's connection, or on a borrowed one
        (statements that must not run twice: nothing is tried again)."""
        db: Connection | None = getattr(self._local, "db", None)
        if db is not None:
            return work(db)
        db = self._borrow()
        try:
            return work(db)
        finally:
            self._pool.putconn(db)

    def _again_if_lost(self, work: Callable[[Connection], T]) -> T:
        """`work(db)` (statements outside a transaction, safe to repeat: reads), and once more
        on another connection if the server dropped the first (it restarted, or ended the
        session). Inside a write transaction, on its connection, once."""
        if getattr(self._local, "db", None) is not None:
            return self._on_connection(work)
        db, done = self._borrowed(work)
        self._pool.putconn(db)
        return done

    def _borrowed(self, work: Callable[[Connection], T]) -> tuple[Connection, T]:
        """A borrowed connection, still lent (the caller gives it back), and `work(db)` on
        it; on another one if the first turns out lost (`work` must be safe to repeat)."""
        db = self._borrow()
        try:
            return db, work(db)
        except psycopg.OperationalError as error:
            self._pool.putconn(db)
            if not is_lost(db, error):
                raise
        except BaseException:
            self._pool.putconn(db)
            raise
        self._pool.check()  # a restart ended them all: the idle ones are replaced too
        db = self._borrow()
        try:
            return db, work(db)
        except BaseException:
            self._pool.putconn(db)
            raise

    # -- writing -----------------------------------------------------------------------------
    @contextmanager
    def write(self, lock: Lock = "exclusive") -> Iterator[Connection]:
        """One transaction holding the writer lock: `exclusive` for changes of who is who,
        `shared` for saves of photos, `none` for rows nothing else touches (audit, keys).
        Inside another write of this thread, a savepoint of its transaction."""
        if self.readonly:
            raise StoreError(f"cannot write {self.url}: the catalogue was opened read-only")
        outer: Connection | None = getattr(self._local, "db", None)
        if outer is not None:
            with self._begin(outer, lock):
                yield outer
            return
        with self._lockers if lock != "none" else contextlib.nullcontext():
            # Nothing is written before the lock is held: BEGIN and the lock may run again.
            db, transaction = self._borrowed(lambda db: self._begin(db, lock))
            self._local.db = db
            committing = False
            try:
                with transaction:
                    yield db
                    committing = True
            except psycopg.OperationalError as error:
                if not is_lost(db, error):
                    raise
                # A transaction whose connection died before COMMIT was rolled back by the
                # server; one that died during COMMIT may or may not have been committed.
                made = "may or may not have been made" if committing else "was not made"
                raise LostConnection(
                    f"lost the connection to {self.url} while writing (the change {made}): {error}"
                ) from None
            finally:
                self._local.db = None
                self._pool.putconn(db)

    def _begin(self, db: Connection, lock: Lock) -> ExitStack:
        """BEGIN, and take the writer lock; closing what it returns commits (or rolls back)."""
        with ExitStack() as transaction:
            transaction.enter_context(db.transaction())
            if lock != "none":
                mode = "_shared" if lock == "shared" else ""
                db.execute(f"SELECT pg_advisory_xact_lock{mode}(%s, %s)", (LOCK_CLASS, WRITER_LOCK))
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
        statement = (
            "SELECT pg_advisory_xact_lock(%s, h) FROM (SELECT DISTINCT hashtext(k) AS h "
            "FROM unnest(%s::text[]) AS k ORDER BY h) AS hashes"
        )
        params = (PHOTO_LOCK_CLASS, sorted(set(keys)))
        self._on_connection(lambda db: db.execute(statement, params))

    # -- expressions and values ------------------------------------------------------------
    # Text columns are COLLATE "C" (postgres_migrations.py): lower() of them folds ASCII
    # letters and no others, as NOCASE does, and sorts by code point, as SQLite does.
    def nocase(self, column: str) -> str:
        return f"lower({column})"

    def nocase_equals(self, column: str) -> str:
        return f"lower({column}) = {NOCASE.replace('%s', '?')}"

    def vector_length(self, column: str) -> str:
        return f"vector_dims({column})"

    def vector(self, embedding: np.ndarray) -> Any:
        return np.asarray(embedding, dtype=np.float32)  # register_vector binds it as `vector`

    def time(self, value: Any) -> str:
        return iso(value)

    def index_model(self, model_id: int, model: str, dimension: int) -> None:
        """The model's own HNSW index: over its rows only (a partial index), of its
        embeddings cast to their length (pgvector indexes vectors of one declared length;
        the column is untyped so that any model fits). Building it reads the table once,
        holding off other writers of faces until this transaction ends: once per model.
        A model of more dimensions than HNSW takes has none, and is scanned exactly."""
        if dimension > HNSW_MAX_DIMENSIONS:
            return
        statement = SQL(
            "CREATE INDEX IF NOT EXISTS {} ON face USING hnsw ({} vector_l2_ops) WHERE {}"
        ).format(
            Identifier(model_index_name(model_id)),
            embedding_expression(dimension),
            model_condition(model),
        )
        self._on_connection(lambda db: db.execute(statement))

    # -- statements in SQLite's form (store/dialect.py) -----------------------------------
    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self.all(to_postgres(sql), tuple(params))

    def rows_in(self, sql: str, values: Iterable[Any], before: Sequence[Any] = ()) -> list[Row]:
        return self.all(to_postgres(sql), (*before, list(values)))

    def dict_rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return self._dicts(to_postgres(sql), tuple(params))

    def vector_rows(
        self, sql: str, params: Sequence[Any], column: int, dimension: int | None = None
    ) -> tuple[list[Row], np.ndarray]:
        rows = self._binary(to_postgres(sql), tuple(params))
        return rows, vectors_of(rows, column, dimension)

    def vector_rows_in(
        self,
        sql: str,
        values: Iterable[Any],
        column: int,
        dimension: int | None = None,
        before: Sequence[Any] = (),
    ) -> tuple[list[Row], np.ndarray]:
        rows = self._binary(to_postgres(sql), (*before, list(values)))
        return rows, vectors_of(rows, column, dimension)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        statement = to_postgres(sql)
        return self._on_connection(lambda db: db.execute(statement, tuple(params)).rowcount)

    def execute_in(self, sql: str, values: Iterable[Any], before: Sequence[Any] = ()) -> int:
        params = (*before, list(values))
        return self._on_connection(lambda db: db.execute(to_postgres(sql), params).rowcount)

    def execute_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        def run(db: Connection) -> int:
            with db.cursor() as cursor:
                cursor.executemany(to_postgres(sql), rows)
                # psycopg adds up the rows of every statement of an executemany.
                return max(cursor.rowcount, 0)

        return self._on_connection(run)

    # -- statements in PostgreSQL's form ----------------------------------------------------
    def all(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        """The rows of a statement written for PostgreSQL (`%s` or `%(name)s` parameters)."""
        return self._again_if_lost(lambda db: db.execute(sql, params).fetchall())

    def value(self, sql: str, params: Params = ()) -> Any:
        """The first column of the first row (None when there is no row)."""
        row = self._again_if_lost(lambda db: db.execute(sql, params).fetchone())
        return row[0] if row else None

    def _dicts(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        def fetch(db: Connection) -> list[dict[str, Any]]:
            with db.cursor(row_factory=dict_row) as cursor:
                return cursor.execute(sql, params).fetchall()

        return self._again_if_lost(fetch)

    def _binary(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        """Rows fetched in binary form: `vector` columns arrive as numpy arrays."""

        def fetch(db: Connection) -> list[tuple[Any, ...]]:
            with db.cursor(binary=True) as cursor:
                return cursor.execute(sql, params).fetchall()

        return self._again_if_lost(fetch)

    # -- the database itself ---------------------------------------------------------------
    def compact(self) -> None:
        # Deleted rows stay in their pages, marked dead, until the table is rewritten; the
        # write-ahead log keeps them until a checkpoint recycles it (backups and replicas are
        # the operator's to age out: docs/scaling.md).
        vacuum = f"VACUUM (FULL, ANALYZE) {', '.join(_TABLES)}"
        self._again_if_lost(lambda db: db.execute(vacuum))
        # Only superusers and pg_checkpoint members may; the server checkpoints on its own.
        with contextlib.suppress(errors.InsufficientPrivilege):
            self._again_if_lost(lambda db: db.execute("CHECKPOINT"))

    def engine_problems(self) -> list[str]:
        """None to find from here: PostgreSQL checks its own pages (data checksums, amcheck)
        and the schema enforces what SQLite's foreign key check looks for."""
        return []


class LostConnection(StoreError):
    """A write transaction lost its connection to the server (which restarted, or ended it)."""


def _quiet_pool_logs() -> None:
    """Send the pool's own warnings while the server is away (a connection discarded, a
    connect that failed) where the application sends its logs, and nowhere else: without a
    handler of the application's, Python would print them on stderr, and the store's errors
    already say what went wrong in words."""
    logger = logging.getLogger("psycopg.pool")
    if not any(isinstance(handler, logging.NullHandler) for handler in logger.handlers):
        logger.addHandler(logging.NullHandler())


def vector_oid(db: Connection, url: str) -> int:
    """The type id of pgvector's `vector` in the database at `url` (StoreError without it)."""
    info = TypeInfo.fetch(db, "vector")
    if info is None:
        raise StoreError(f"{url} has lost the vector extension; CREATE EXTENSION vector")
    return info.oid


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


def embedding_expression(dimension: int) -> Composed:
    """`face.embedding` as the HNSW index of a model of `dimension` holds it: cast to that
    length. A query must use this very expression (and `model_condition`) for the planner
    to answer it with the index."""
    return SQL("(embedding::vector({}))").format(Literal(int(dimension)))


def model_condition(model: str) -> Composed:
    """The condition on `face` of a model's partial index, with the name as a literal: a
    parameter would hide from the planner of a prepared statement that the index applies."""
    return SQL("model = {}").format(Literal(model))


def model_index_name(model_id: int) -> str:
    """The name of the HNSW index of the model whose row in `model` is `model_id`."""
    return f"face_embedding_{int(model_id)}"


def vectors_of(
    rows: list[tuple[Any, ...]], column: int, dimension: int | None = None
) -> np.ndarray:
    """The arrays in `column` of `rows` stacked (n x d float32; 0 x `dimension` when there is
    none, 0 x 0 when it is not given); `StoreError` for arrays of another length than
    `dimension`, or of different lengths (store/dialect.py's `vector_length`)."""
    if not rows:
        return np.zeros((0, dimension or 0), np.float32)
    vector_length({len(row[column]) for row in rows}, dimension)
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
    "model",
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
