"""Substring search over people's names, aliases and handles in the PostgreSQL store.

`person_text` rows are plain rows here; a GIN trigram index (pg_trgm) finds those containing
a fragment of three characters or more. people.py decides what goes in it and merges what a
search finds; the ranks are the SQLite store's (store/sqlite_text.py).
"""

from __future__ import annotations

from typing import Any

from .person_text import Match, TextSearch
from .postgres_sql import PostgresSql, like_escape

__all__ = ["PostgresText"]

#: Shorter fragments have no trigram: they are looked for by a scan (still correct, slower).
_TRIGRAM = 3


class PostgresText(TextSearch):
    """The search text of `PostgresStore`, on pg_trgm."""

    def __init__(self, sql: PostgresSql) -> None:
        self.sql = sql

    def insert(self, person_id: str, rows: list[tuple[str, str, str]]) -> None:
        # Ids rise in the order rows come (the name, aliases, handles), as SQLite's rowids
        # do within one length; searches order by length, then id.
        self.sql.execute_many(
            "INSERT INTO person_text (person_id, field, value, text) VALUES (?, ?, ?, ?)",
            [(person_id, field, value, form) for form, field, value in rows],
        )

    def delete(self, person_id: str) -> None:
        self.sql.execute("DELETE FROM person_text WHERE person_id = ?", (person_id,))

    def matches(self, form: str, want: int) -> list[Match]:
        """One query per rank tier (the value's start, a later word's start, anywhere), each
        narrowed by the trigram index and stopping after `want` rows, as the SQLite store's."""
        if len(form) < _TRIGRAM:
            return self._scan_matches(form, want)
        escaped = like_escape(form)
        found: list[Match] = []
        for pattern, condition in _TIERS:
            if len(found) >= want:
                break
            found += self._ranked(
                f"SELECT person_id, field, value, {_RANK} FROM person_text "
                f"WHERE text LIKE %(pattern)s AND {condition} "
                "ORDER BY length(text), id LIMIT %(want)s",
                {"form": form, "pattern": pattern.format(escaped), "want": want - len(found)},
            )
        return found

    def _scan_matches(self, form: str, want: int) -> list[Match]:
        """Fragments under three characters have no trigram: a scan (correct, slower)."""
        return self._ranked(
            f"SELECT person_id, field, value, {_RANK} AS rank FROM person_text "
            "WHERE strpos(text, %(form)s) > 0 ORDER BY rank, length(text), id LIMIT %(want)s",
            {"form": form, "want": want},
        )

    def _ranked(self, sql: str, params: dict[str, Any]) -> list[Match]:
        return [(r[0], r[1], r[2], int(r[3])) for r in self.sql.all(sql, params)]

    def condition(self, form: str) -> tuple[str, str]:
        return "text LIKE ?", "%" + like_escape(form) + "%"


#: The rank of a row for the form: 0 the whole text, 1 its start, 2 a word's start, 3 inside.
_RANK = (
    "CASE WHEN text = %(form)s THEN 0 WHEN starts_with(text, %(form)s) THEN 1 "
    "WHEN strpos(' ' || text, ' ' || %(form)s) > 0 THEN 2 ELSE 3 END"
)
#: (LIKE pattern around the escaped form, SQL keeping only that tier's rows), best first.
_TIERS: tuple[tuple[str, str], ...] = (
    ("{}%", "true"),
    ("% {}%", "NOT starts_with(text, %(form)s)"),
    ("%{}%", f"{_RANK} = 3"),
)
