"""The embedded catalogue: one SQLite file in WAL mode, with versioned migrations.

One writer at a time (SQLite's own lock, waited on with a busy timeout); readers see only
committed data. Every `save` is one transaction, so a killed process leaves either the whole
batch or none of it.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from ..entities import AuditEntry, Outcome, SaveResult
from ..errors import NotFound, StoreBusy, StoreError
from .access import INSERT_AUDIT, Access
from .checking import Checking
from .clusters import Clusters
from .dialect import Lock, Row, check_version
from .erasing import Erasing
from .migrations import MIGRATIONS
from .photos import Photos
from .privacy import Privacy
from .saving import Saving
from .sqlite_connections import SqliteConnections
from .sqlite_file import checked_connect, create_whole, refuse_foreign, refuse_other_programs
from .sqlite_sql import SqliteDialect
from .sqlite_text import SqliteText

__all__ = ["SqliteStore"]

BUSY_TIMEOUT_SECONDS = 60.0
#: How long a search waits to write its audit entry at once before leaving it to the
#: background writer, and how often that writer tries again.
AUDIT_WAIT_SECONDS = 0.2
AUDIT_RETRY_SECONDS = 1.0


class SqliteStore(
    SqliteText, Privacy, Erasing, Saving, Clusters, Checking, Photos, Access, SqliteDialect
):
    """`Store` over one SQLite file."""

    def __init__(self, path: Path | str, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._pending_audit: list[tuple[object, ...]] = []
        self._audit_lock = threading.Lock()
        self._audit_due = threading.Event()
        self._audit_writer: threading.Thread | None = None
        self._closed = False
        self._defer_busy_audit = False
        if self.path.exists() or self.path.is_symlink():
            refuse_foreign(self.path)
        elif readonly:
            raise NotFound(f"no catalogue at {self.path}")
        else:
            self._make_folder()
            create_whole(self.path, self._build)
        self._connections = SqliteConnections(self._connect(), self._open_reader)
        try:
            if not readonly:
                self._migrate()
            self._check_version()
        except BaseException:
            self._connections.close()
            raise

    @property
    def _db(self) -> sqlite3.Connection:
        """This thread's connection (sqlite_connections.py): the writer inside `_write`, its
        own reader elsewhere."""
        return self._connections.current()

    # -- connection and schema -----------------------------------------------------------------
    def _make_folder(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(f"cannot create {self.path.parent}: {error.strerror}") from None

    def _build(self, db: sqlite3.Connection) -> None:
        """The schema of a new catalogue, on the file `create_whole` links into place."""
        _configure(db, readonly=False)
        self._connections = SqliteConnections(db, lambda: db)
        self._migrate()

    def _connect(self) -> sqlite3.Connection:
        """The writer connection, once the file is known to be a catalogue."""
        db = self._open()
        try:
            refuse_other_programs(db, self.path)  # before anything writes to it
            _configure(db, self.readonly)
        except BaseException:
            db.close()
            raise
        return db

    def _open_reader(self) -> sqlite3.Connection:
        """Another connection to the catalogue, for one thread's reads."""
        db = self._open()
        _configure(db, readonly=True)  # the writer set the file up
        return db

    def _open(self) -> sqlite3.Connection:
        # Closed by whichever thread closes the store (SqliteConnections.close).
        return checked_connect(
            self.path,
            readonly=self.readonly,
            timeout=BUSY_TIMEOUT_SECONDS,
            isolation_level=None,
            check_same_thread=False,
        )

    def _migrate(self) -> None:
        if self._db.execute("PRAGMA user_version").fetchone()[0] >= len(MIGRATIONS):
            return  # readers must not queue behind a running writer for nothing
        with self._write():
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in _statements(script):
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {number}")
            stale = self._db.execute("SELECT 1 FROM meta WHERE key = 'person_text_stale'")
            if stale.fetchone():
                self._rebuild_person_text()
                self._db.execute("DELETE FROM meta WHERE key = 'person_text_stale'")

    def _check_version(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        check_version(version, len(MIGRATIONS), str(self.path))

    @contextmanager
    def _write(self, lock: Lock = "exclusive") -> Iterator[sqlite3.Connection]:
        """One write transaction on the writer connection: SQLite has one write lock,
        whatever `lock` asks for."""
        with self._connections.writing() as db, self._transaction(db):
            yield db

    @contextmanager
    def _transaction(self, db: sqlite3.Connection) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT on the writer, the audit entries waiting written first."""
        db.execute("BEGIN IMMEDIATE")
        with self._audit_lock:
            pending, self._pending_audit = self._pending_audit, []
        try:
            if pending:
                db.executemany(INSERT_AUDIT, pending)
            yield
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # SQLite rolls back by itself on a full disk
                db.execute("ROLLBACK")
            with self._audit_lock:
                self._pending_audit[:0] = pending
            raise

    def close(self) -> None:
        self._closed = True
        self._audit_due.set()
        if self._audit_writer is not None:
            self._audit_writer.join()
        try:
            if self._pending_audit:
                self._flush_audit(BUSY_TIMEOUT_SECONDS)
        finally:
            self._connections.close()

    # -- the audit log -------------------------------------------------------------------------
    def _append_audit(self, entry: Row) -> None:
        """Append a search to the audit log, waiting for another writer as any write does;
        after `defer_busy_audit`, an entry another writer holds up (another process, a long
        erasure) is kept and written with the next write transaction, before the log is
        read, or by a background thread as soon as the lock is free: the search answers
        meanwhile. An error other than a busy catalogue (a full disk) is raised."""
        if self._connections.writing_here():
            self._db.execute(INSERT_AUDIT, entry)
            return
        with self._audit_lock:
            self._pending_audit.append(entry)
        try:
            wait = AUDIT_WAIT_SECONDS if self._defer_busy_audit else BUSY_TIMEOUT_SECONDS
            if self._flush_audit(wait):
                return
            if not self._defer_busy_audit:
                raise StoreBusy(f"cannot use {self.path}: another program holds it")
        except StoreError:
            # A full disk, a read-only or damaged file, or (unless deferring) a writer held
            # past the busy timeout: the search is refused, never answered unaudited.
            with self._audit_lock:
                self._pending_audit = [e for e in self._pending_audit if e is not entry]
            raise
        self._audit_due.set()
        if self._audit_writer is None:
            self._audit_writer = threading.Thread(
                target=self._write_audit_later, name="iddetective-audit", daemon=True
            )
            self._audit_writer.start()

    def defer_busy_audit(self) -> None:
        """From now on, an audit entry another writer keeps from being written within
        `AUDIT_WAIT_SECONDS` waits in memory instead of holding up its search (the web
        server's choice: a server killed before the lock frees loses those entries)."""
        self._defer_busy_audit = True

    def audit(self, limit: int, before: int | None = None) -> list[AuditEntry]:
        if self._pending_audit:
            with contextlib.suppress(StoreError):  # the log as it stands can still be read
                self._flush_audit(BUSY_TIMEOUT_SECONDS)
        return super().audit(limit, before)

    def _flush_audit(self, wait: float) -> bool:
        """Write the audit entries waiting, if the writer and SQLite's lock come within
        `wait` seconds; whether they did (other errors, a full disk say, are raised)."""
        try:
            with self._connections.writing(wait) as db:
                db.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")
                try:
                    with self._transaction(db):
                        pass
                finally:
                    db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
        except (TimeoutError, StoreBusy):
            return False
        return True

    def _write_audit_later(self) -> None:
        """The background writer of audit entries that could not be written at once."""
        while not self._closed:
            self._audit_due.wait()
            self._audit_due.clear()
            while self._pending_audit and not self._closed:
                try:
                    written = self._flush_audit(AUDIT_RETRY_SECONDS)
                except StoreError:
                    written = False  # kept: the next write or read of the log tries again
                if not written:
                    self._audit_due.wait(AUDIT_RETRY_SECONDS)

    # -- ingestion -----------------------------------------------------------------------------
    def save(self, outcomes: Sequence[Outcome]) -> list[SaveResult]:
        with self._write():
            results = [self._save_one(outcome) for outcome in outcomes]
            if any(r.status == "indexed" and r.faces for r in results):
                self._bump_epoch()
        return results

    # -- privacy -------------------------------------------------------------------------------
    def compact(self) -> None:
        """Rewrite the storage so deleted data is gone from the files, not only unlinked."""
        # Deleted rows linger in free pages and the WAL until both are rewritten, and the
        # text index keeps deleted trigrams in old segments until they are merged.
        with self._connections.writing() as db:
            db.execute("INSERT INTO person_text (person_text) VALUES ('optimize')")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            db.execute("VACUUM")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # -- checking ------------------------------------------------------------------------------
    def _engine_problems(self) -> list[str]:
        pages = [row[0] for row in self._db.execute("PRAGMA integrity_check").fetchall()]
        problems = [f"{self.path}: {text}" for text in pages if text != "ok"]
        for table, rowid, parent, _ in self._db.execute("PRAGMA foreign_key_check").fetchall():
            problems.append(f"{self.path}: {table} row {rowid} refers to a missing {parent}")
        return problems


def _configure(db: sqlite3.Connection, readonly: bool) -> None:
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA foreign_keys = ON")
    if not readonly:
        db.execute("PRAGMA journal_mode = WAL")
        # WAL + NORMAL: a killed process never loses a committed transaction.
        db.execute("PRAGMA synchronous = NORMAL")
        # Deleted rows are overwritten with zeros (an erased person must be gone from
        # the file); some SQLite builds default to off.
        db.execute("PRAGMA secure_delete = ON")


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
