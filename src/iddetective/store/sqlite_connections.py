"""The SQLite store's connections: one writer, and a reader per thread (datasette's way).

WAL lets readers read while a writer writes, in this process or another, so a thread never
waits to read: it reads on its own connection, which sees the last committed transaction.
Writes go through the one writer connection, one thread at a time (`writing`); there they
wait for SQLite's write lock like any writer. A thread inside `writing` reads on the writer
connection, so it sees its own uncommitted rows.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["SqliteConnections"]


class SqliteConnections:
    """The writer connection, a reader connection per thread (opened on first use), and the
    lock that lets one thread at a time use the writer."""

    def __init__(self, writer: sqlite3.Connection, open_reader: Callable[[], sqlite3.Connection]):
        self.writer = writer
        self._open_reader = open_reader
        self._writer_lock = threading.Lock()
        self._owner: int | None = None
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()

    def current(self) -> sqlite3.Connection:
        """The connection this thread runs its statements on: the writer inside `writing`,
        else its own reader."""
        if self._owner == threading.get_ident():
            return self.writer
        reader: sqlite3.Connection | None = getattr(self._local, "reader", None)
        if reader is None:
            reader = self._open_reader()
            self._local.reader = reader
            with self._readers_lock:
                self._readers.append(reader)
        return reader

    def writing_here(self) -> bool:
        """Whether this thread holds the writer."""
        return self._owner == threading.get_ident()

    @contextmanager
    def writing(self, timeout: float = -1) -> Iterator[sqlite3.Connection]:
        """Hold the writer connection (waiting up to `timeout` seconds for another thread to
        let go of it; forever when negative). TimeoutError when it did not come in time."""
        if not self._writer_lock.acquire(timeout=timeout):
            raise TimeoutError("the catalogue's writer is busy")
        self._owner = threading.get_ident()
        try:
            yield self.writer
        finally:
            self._owner = None
            self._writer_lock.release()

    def close(self) -> None:
        """Close the writer and every reader."""
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for db in [self.writer, *readers]:
            db.close()
