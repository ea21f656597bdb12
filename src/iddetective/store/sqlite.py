"""The embedded catalogue: one SQLite file in WAL mode, with versioned migrations.

One writer at a time (SQLite's own lock, waited on with a busy timeout); readers see only
committed data. Every `save` is one transaction, so a killed process leaves either the whole
batch or none of it. The statements are `SqlStore`'s (sql_store.py), run by `SqliteSql`
(sqlite_sql.py) on the connections of sqlite_connections.py; people's text is searched with
FTS5 (sqlite_text.py).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path

from ..entities import AuditEntry
from ..errors import NotFound, StoreBusy, StoreError
from .access import INSERT_AUDIT
from .dialect import Row, check_version
from .migrations import MIGRATIONS
from .sql_store import SqlStore
from .sqlite_connections import SqliteConnections
from .sqlite_file import checked_connect, create_whole, refuse_foreign, refuse_other_programs
from .sqlite_sql import BUSY_TIMEOUT_SECONDS, SqliteSql
from .sqlite_text import SqliteText

__all__ = ["BUSY_TIMEOUT_SECONDS", "SqliteStore"]

#: How long a search waits to write its audit entry at once before leaving it to the
#: background writer, and how often that writer tries again.
AUDIT_WAIT_SECONDS = 0.2
AUDIT_RETRY_SECONDS = 1.0


class SqliteStore(SqlStore):
    """`Store` over one SQLite file."""

    sql: SqliteSql
    text: SqliteText

    def __init__(self, path: Path | str, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
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
        self._use(SqliteConnections(self._connect(), self._open_reader))
        try:
            if not readonly:
                self._migrate()
            self._check_version()
        except BaseException:
            self.sql.close()
            raise

    def _use(self, connections: SqliteConnections) -> None:
        """Run statements on `connections` (those of a new file while `_build` makes it)."""
        self.sql = SqliteSql(connections, self.path)
        self.text = SqliteText(self.sql)

    @property
    def _db(self) -> sqlite3.Connection:
        """This thread's connection (benchmarks reach in for it)."""
        return self.sql.db

    # -- connection and schema -----------------------------------------------------------------
    def _make_folder(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(f"cannot create {self.path.parent}: {error.strerror}") from None

    def _build(self, db: sqlite3.Connection) -> None:
        """The schema of a new catalogue, on the file `create_whole` links into place."""
        _configure(db, readonly=False)
        self._use(SqliteConnections(db, lambda: db))
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
        if self._user_version() >= len(MIGRATIONS):
            return  # readers must not queue behind a running writer for nothing
        with self.sql.write() as db:
            version = self._user_version()
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in _statements(script):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {number}")
            if self.sql.rows("SELECT 1 FROM meta WHERE key = 'person_text_stale'"):
                self.text.clear()  # filled for every person after the migration creating it
                for person_id in self.sql.firsts("SELECT id FROM person"):
                    self._write_person_text(person_id)
                db.execute("DELETE FROM meta WHERE key = 'person_text_stale'")

    def _user_version(self) -> int:
        return int(self.sql.scalar("PRAGMA user_version"))

    def _check_version(self) -> None:
        check_version(self._user_version(), len(MIGRATIONS), str(self.path))

    def close(self) -> None:
        self._closed = True
        self._audit_due.set()
        if self._audit_writer is not None:
            self._audit_writer.join()
        try:
            if self.sql.deferring():
                self.sql.flush(BUSY_TIMEOUT_SECONDS)
        finally:
            self.sql.close()

    # -- the audit log -------------------------------------------------------------------------
    def _append_audit(self, entry: Row) -> None:
        """Append a search to the audit log, waiting for another writer as any write does;
        after `defer_busy_audit`, an entry another writer holds up (another process, a long
        erasure) is kept and written with the next write transaction, before the log is
        read, or by a background thread as soon as the lock is free: the search answers
        meanwhile. An error other than a busy catalogue (a full disk) is raised."""
        if self.sql.writing_here():
            self.sql.execute(INSERT_AUDIT, entry)
            return
        self.sql.defer(INSERT_AUDIT, entry)
        try:
            wait = AUDIT_WAIT_SECONDS if self._defer_busy_audit else BUSY_TIMEOUT_SECONDS
            if self.sql.flush(wait):
                return
            if not self._defer_busy_audit:
                raise StoreBusy(f"cannot use {self.path}: another program holds it")
        except StoreError:
            # A full disk, a read-only or damaged file, or (unless deferring) a writer held
            # past the busy timeout: the search is refused, never answered unaudited.
            self.sql.withdraw(entry)
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
        if self.sql.deferring():
            with contextlib.suppress(StoreError):  # the log as it stands can still be read
                self.sql.flush(BUSY_TIMEOUT_SECONDS)
        return super().audit(limit, before)

    def _write_audit_later(self) -> None:
        """The background writer of audit entries that could not be written at once."""
        while not self._closed:
            self._audit_due.wait()
            self._audit_due.clear()
            while self.sql.deferring() and not self._closed:
                try:
                    written = self.sql.flush(AUDIT_RETRY_SECONDS)
                except StoreError:
                    written = False  # kept: the next write or read of the log tries again
                if not written:
                    self._audit_due.wait(AUDIT_RETRY_SECONDS)


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
