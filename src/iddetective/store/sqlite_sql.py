"""SQL helpers shared by the SQLite store's modules."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

__all__ = ["chunks", "select_in"]

#: Values bound per statement: SQLite builds before 3.32 allow 999 variables in all.
_CHUNK = 900


def select_in(
    db: sqlite3.Connection, sql: str, values: Iterable[Any], before: Sequence[Any] = ()
) -> list[sqlite3.Row]:
    """Rows of `sql` for every one of `values` (distinct, sorted), in chunks: `sql` holds
    `{marks}` where the `IN (...)` placeholders go, after the parameters `before`."""
    rows: list[sqlite3.Row] = []
    for chunk in chunks(sorted(set(values))):
        query = sql.format(marks=",".join("?" * len(chunk)))
        rows += db.execute(query, [*before, *chunk]).fetchall()
    return rows


def chunks(values: Sequence[Any]) -> Iterator[list[Any]]:
    """`values` in pieces small enough to bind in one statement."""
    for start in range(0, len(values), _CHUNK):
        yield list(values[start : start + _CHUNK])
