"""Substring search over people's names, aliases and handles in the SQLite store.

Search runs on an FTS5 table with the trigram tokenizer (`person_text`), which finds any
substring of three characters or more through its index instead of scanning; people.py
decides what goes in it and merges what a search finds.
"""

from __future__ import annotations

from collections.abc import Callable

from .dialect import Sql
from .person_text import Match, TextSearch

__all__ = ["SqliteText"]

#: Shorter fragments have no trigram: they are looked for by a scan (still correct, slower).
_TRIGRAM = 3


class SqliteText(TextSearch):
    """The search text of `SqliteStore`, on FTS5."""

    def __init__(self, sql: Sql) -> None:
        self.sql = sql

    def insert(self, person_id: str, rows: list[tuple[str, str, str]]) -> None:
        seq = int(
            self.sql.scalar(
                "UPDATE meta SET value = value + ? WHERE key = 'person_text_seq' RETURNING value",
                (len(rows),),
            )
        )
        # The rowid puts the text's length first, so FTS5 hands matches over shortest first
        # and a search can stop after the first `limit` of each rank (see `matches`). Rows
        # go in rising rowid order: FTS5 flushes its pending data at every step down.
        first = seq - len(rows) + 1
        numbered = sorted(
            ((len(form) << _SEQ_BITS) | (first + i), form, field, value)
            for i, (form, field, value) in enumerate(rows)
        )
        self.sql.execute_many(
            "INSERT INTO person_text (rowid, text, person_id, field, value) VALUES (?, ?, ?, ?, ?)",
            [(rowid, form, person_id, field, value) for rowid, form, field, value in numbered],
        )
        self.sql.execute_many(
            "INSERT INTO person_text_row (text_rowid, person_id) VALUES (?, ?)",
            [(row[0], person_id) for row in numbered],
        )

    def delete(self, person_id: str) -> None:
        """Remove a person's rows from the text index (found through `person_text_row`:
        FTS5 cannot look rows up by an unindexed column without reading them all)."""
        rowids = self.sql.firsts(
            "SELECT text_rowid FROM person_text_row WHERE person_id = ?", (person_id,)
        )
        self.sql.execute_many("DELETE FROM person_text WHERE rowid = ?", [(r,) for r in rowids])
        self.sql.execute("DELETE FROM person_text_row WHERE person_id = ?", (person_id,))

    def clear(self) -> None:
        """Remove every row of the text index (before it is filled again)."""
        self.sql.execute("DELETE FROM person_text")
        self.sql.execute("DELETE FROM person_text_row")

    def matches(self, form: str, want: int) -> list[Match]:
        """One FTS5 query per rank tier (the value's start, a later word's start, anywhere):
        rows come in rowid order, which is length order, so each query stops after `want`
        rows instead of reading, ranking and sorting every match (a 3-letter fragment can
        match 100k rows of a million people)."""
        if len(form) < _TRIGRAM:
            return self._scan_matches(form, want)
        found: list[Match] = []
        for match, condition in _TIERS:
            if len(found) >= want:
                break
            found += self._match_rows(
                f"SELECT person_id, field, value, {_RANK} FROM person_text "
                f"WHERE person_text MATCH ?2 AND {condition} ORDER BY rowid LIMIT ?3",
                (form, match(form), want - len(found)),
            )
        return found

    def _scan_matches(self, form: str, want: int) -> list[Match]:
        """Fragments under three characters have no trigram: a scan (correct, slower)."""
        return self._match_rows(
            f"SELECT person_id, field, value, {_RANK} AS rank FROM person_text "
            "WHERE instr(text, ?1) > 0 ORDER BY rank, rowid LIMIT ?2",
            (form, want),
        )

    def _match_rows(self, sql: str, params: tuple[object, ...]) -> list[Match]:
        return [(r[0], r[1], r[2], int(r[3])) for r in self.sql.rows(sql, params)]

    def condition(self, form: str) -> tuple[str, str]:
        if len(form) >= _TRIGRAM:
            return "person_text MATCH ?", _phrase(form)
        return "instr(text, ?) > 0", form


def _phrase(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


#: The rank of a row for the form ?1: 0 the whole text, 1 its start, 2 a word's start, 3 inside.
_RANK = (
    "CASE WHEN text = ?1 THEN 0 WHEN substr(text, 1, length(?1)) = ?1 THEN 1 "
    "WHEN instr(' ' || text, ' ' || ?1) > 0 THEN 2 ELSE 3 END"
)
#: (FTS5 query for the form, SQL keeping only that tier's rows), best tier first.
_TIERS: tuple[tuple[Callable[[str], str], str], ...] = (
    (lambda form: "^" + _phrase(form), "1"),
    (lambda form: _phrase(" " + form), "substr(text, 1, length(?1)) <> ?1"),
    (_phrase, f"{_RANK} = 3"),
)
#: person_text rowids are (length << _SEQ_BITS) | sequence number.
_SEQ_BITS = 40
