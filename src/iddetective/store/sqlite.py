"""The embedded catalogue: one SQLite file in WAL mode, with versioned migrations.

One writer at a time (SQLite's own lock, waited on with a busy timeout); readers see only
committed data. Every `save` is one transaction, so a killed process leaves either the whole
batch or none of it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from ..entities import (
    Outcome,
    SaveResult,
)
from ..errors import NotFound, StoreError
from .access import Access
from .checking import Checking
from .clusters import Clusters
from .dialect import Lock, check_version
from .erasing import Erasing
from .migrations import MIGRATIONS
from .photos import Photos
from .privacy import Privacy
from .saving import Saving
from .sqlite_file import checked_connect, create_whole, refuse_foreign
from .sqlite_sql import SqliteDialect
from .sqlite_text import SqliteText

__all__ = ["SqliteStore"]

BUSY_TIMEOUT_SECONDS = 60.0


class SqliteStore(
    SqliteText, Privacy, Erasing, Saving, Clusters, Checking, Photos, Access, SqliteDialect
):
    """`Store` over one SQLite file."""

    def __init__(self, path: Path | str, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        if self.path.exists() or self.path.is_symlink():
            refuse_foreign(self.path)
        elif readonly:
            raise NotFound(f"no catalogue at {self.path}")
        else:
            self._make_folder()
            create_whole(self.path, self._build)
        self._db = self._connect()
        try:
            if not readonly:
                self._migrate()
            self._check_version()
        except BaseException:
            self._db.close()
            raise

    # -- connection and schema -----------------------------------------------------------------
    def _make_folder(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(f"cannot create {self.path.parent}: {error.strerror}") from None

    def _build(self, db: sqlite3.Connection) -> None:
        """The schema of a new catalogue, on the file `create_whole` links into place."""
        _configure(db, readonly=False)
        self._db = db
        self._migrate()

    def _connect(self) -> sqlite3.Connection:
        # Threads may share the connection (the web app serialises its calls with a lock).
        db = checked_connect(
            self.path,
            readonly=self.readonly,
            timeout=BUSY_TIMEOUT_SECONDS,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            _refuse_other_databases(db, self.path)  # before anything writes to it
            _configure(db, self.readonly)
        except BaseException:
            db.close()
            raise
        return db

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
        """One write transaction: SQLite has one write lock, whatever `lock` asks for."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            if self._db.in_transaction:  # SQLite rolls back by itself on a full disk
                self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()

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
        self._db.execute("INSERT INTO person_text (person_text) VALUES ('optimize')")
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.execute("VACUUM")
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # -- checking ------------------------------------------------------------------------------
    def _engine_problems(self) -> list[str]:
        pages = [row[0] for row in self._db.execute("PRAGMA integrity_check").fetchall()]
        problems = [f"{self.path}: {text}" for text in pages if text != "ok"]
        for table, rowid, parent, _ in self._db.execute("PRAGMA foreign_key_check").fetchall():
            problems.append(f"{self.path}: {table} row {rowid} refers to a missing {parent}")
        return problems


def _refuse_other_databases(db: sqlite3.Connection, path: Path) -> None:
    """A SQLite file with tables but no schema version is another program's database."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    if version == 0 and tables:
        raise StoreError(
            f"{path} is a SQLite database of another program, not a catalogue; "
            "refusing to open it; nothing was written"
        )


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
