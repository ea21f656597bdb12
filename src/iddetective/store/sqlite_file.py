"""The catalogue's SQLite file: refused unless it is one, created whole, errors said in words.

A catalogue file that exists is the operator's data. If it is empty, truncated, not SQLite,
or another program's database, opening it must not quietly make a new empty catalogue over it
(every search would then say "no match", and `serve` would mint a new admin key): it is
refused with `StoreError` and nothing is written. So that an empty file is never one of ours,
a new catalogue is built beside its final name and linked into place only once its schema is
complete. Every later SQLite error on the connection (damage found mid-query, a full disk, a
read-only folder) becomes a one-line `StoreError` naming the file.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import StoreBusy, StoreError

__all__ = [
    "checked_connect",
    "create_whole",
    "refuse_foreign",
    "refuse_other_programs",
    "storage_error",
]

#: Every SQLite file begins with these 16 bytes; the header is 100 bytes long.
_MAGIC = b"SQLite format 3\x00"
_HEADER = 100
#: How to fix what `refuse_foreign` finds.
_ADVICE = (
    "refusing to open it; nothing was written. Restore it from a backup, or move it away to "
    "start a new catalogue (`iddetective check` tells more)"
)


def refuse_foreign(path: Path) -> None:
    """Raise `StoreError` if the existing file at `path` is not an intact SQLite file.

    Checked without opening it with SQLite: the 16-byte signature, and the size the header
    records against the file's size (a truncated copy is shorter).
    """
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise StoreError(f"{path} is not a regular file; {_ADVICE}")
        with open(path, "rb") as handle:
            header = handle.read(_HEADER)
    except OSError as error:
        raise StoreError(f"cannot read {path}: {error.strerror or error}") from None
    if not header:
        raise StoreError(f"{path} is empty (0 bytes), not a catalogue; {_ADVICE}")
    if len(header) < _HEADER or not header.startswith(_MAGIC):
        raise StoreError(f"{path} is not a catalogue (not a SQLite database); {_ADVICE}")
    recorded = _recorded_size(header)
    # With a write-ahead log beside it, the file may lag its header until SQLite replays it.
    unlogged = not _nonempty(path.with_name(path.name + "-wal"))
    if recorded is not None and unlogged and info.st_size < recorded:
        raise StoreError(
            f"{path} is truncated ({info.st_size:,} of {recorded:,} bytes); {_ADVICE}"
        )


def refuse_other_programs(db: sqlite3.Connection, path: Path) -> None:
    """Raise `StoreError` if the open SQLite file at `path` is another program's database:
    tables, but no schema version of ours. Asked before anything writes to it."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    if version == 0 and tables:
        raise StoreError(
            f"{path} is a SQLite database of another program, not a catalogue; {_ADVICE}"
        )


def _nonempty(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except OSError:
        return False


def _recorded_size(header: bytes) -> int | None:
    """The database size the header states, when the header says that figure is valid."""
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    change_counter, valid_for = header[24:28], header[92:96]
    if pages == 0 or change_counter != valid_for:
        return None  # written by an old SQLite: the file's size is the truth
    return pages * page_size


def create_whole(path: Path, build: Callable[[sqlite3.Connection], None]) -> None:
    """Make a new catalogue at `path`: `build` runs on a file beside it, which is then linked
    to `path` (unless another process made one first: then theirs is kept)."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.new")
    for leftover in _with_sidecars(partial):
        leftover.unlink(missing_ok=True)
    try:
        db = checked_connect(partial)
        try:
            build(db)
        finally:
            db.close()
        _link_unless_taken(partial, path)
    except OSError as error:
        raise StoreError(f"cannot create {path}: {error.strerror or error}") from None
    finally:
        for leftover in _with_sidecars(partial):
            leftover.unlink(missing_ok=True)


def _link_unless_taken(partial: Path, path: Path) -> None:
    """`partial` becomes `path`, unless `path` exists by now (another process's catalogue)."""
    try:
        os.link(partial, path)
    except FileExistsError:
        pass
    except OSError:  # a file system without hard links: nearly as good
        if not path.exists():
            os.replace(partial, path)


def _with_sidecars(path: Path) -> list[Path]:
    return [path, *(path.with_name(path.name + end) for end in ("-wal", "-shm", "-journal"))]


def checked_connect(path: Path, *, readonly: bool = False, **options: Any) -> sqlite3.Connection:
    """A connection to `path` whose SQLite errors are `StoreError`s naming the file."""
    target = f"file:{path}?mode=ro" if readonly else str(path)
    with storage_error(path):
        db = sqlite3.connect(target, uri=readonly, factory=_Connection, **options)
    db.path = path
    return db


@contextmanager
def storage_error(path: Path) -> Iterator[None]:
    """Turn SQLite errors that are not the caller's bugs (damage, full disk, read-only
    folder, a lock held too long) into a one-line `StoreError` about `path`."""
    try:
        yield
    except (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError):
        raise
    except sqlite3.DatabaseError as error:
        busy = isinstance(error, sqlite3.OperationalError) and "locked" in str(error)
        raise (StoreBusy if busy else StoreError)(_in_words(path, error)) from None


def _in_words(path: Path, error: sqlite3.DatabaseError) -> str:
    text = str(error)
    if "disk I/O error" in text and _free_bytes(path.parent) < _NEARLY_FULL:
        text = "disk is full"  # SQLite cannot map its shared-memory file on a full disk
    for phrase, meaning in _MEANINGS:
        if phrase in text:
            return meaning.format(path=path, error=text)
    return f"{path}: {text}"


def _free_bytes(folder: Path) -> int:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return _NEARLY_FULL


#: Less free space than this on the catalogue's disk explains an I/O error.
_NEARLY_FULL = 1 << 20
_MEANINGS = (
    ("file is not a database", "{path} is not a catalogue (not a SQLite database)"),
    ("malformed", "{path} is damaged ({error}): restore it from a backup"),
    ("disk is full", "cannot write {path}: the disk is full"),
    ("readonly database", "cannot write {path}: it or its folder is read-only"),
    ("unable to open", "cannot open {path}: {error}"),
    ("locked", "cannot use {path}: another program holds it ({error})"),
)


class _Cursor(sqlite3.Cursor):
    """A cursor whose SQLite errors, at execution or while rows are read, say what and where."""

    def _path(self) -> Path:
        return getattr(self.connection, "path", Path("catalogue"))

    def execute(self, sql: str, parameters: Any = (), /) -> _Cursor:
        with storage_error(self._path()):
            super().execute(sql, parameters)
        return self

    def executemany(self, sql: str, parameters: Any, /) -> _Cursor:
        with storage_error(self._path()):
            super().executemany(sql, parameters)
        return self

    def executescript(self, script: str, /) -> _Cursor:
        with storage_error(self._path()):
            super().executescript(script)
        return self

    def fetchone(self) -> Any:
        with storage_error(self._path()):
            return super().fetchone()

    def fetchmany(self, size: int | None = 1) -> list[Any]:
        with storage_error(self._path()):
            return super().fetchmany(size if size is not None else self.arraysize)

    def fetchall(self) -> list[Any]:
        with storage_error(self._path()):
            return super().fetchall()

    def __next__(self) -> Any:
        with storage_error(self._path()):
            return super().__next__()


class _Connection(sqlite3.Connection):
    """A connection whose statements run on `_Cursor`s."""

    path: Path

    def cursor(self, factory: Any = None) -> Any:
        return super().cursor(factory or _Cursor)

    def execute(self, sql: str, parameters: Any = (), /) -> Any:
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> Any:
        return self.cursor().executemany(sql, parameters)

    def executescript(self, script: str, /) -> Any:
        return self.cursor().executescript(script)
