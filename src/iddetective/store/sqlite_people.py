"""The people catalogue of the SQLite store: people, aliases, accounts, lists, relations, and
substring search over names, aliases and handles.

Search runs on an FTS5 table with the trigram tokenizer (`person_text`), which finds any
substring of three characters or more through its index instead of scanning. It holds the
folded forms of every name, alias and handle (textfold.py: case, accents, ё/е, Latin
transliteration) and is rewritten for a person whenever one of those changes.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager

from ..entities import (
    Account,
    FoundPerson,
    PersonProfile,
    PersonRecord,
    PersonRef,
    Provenance,
)
from ..errors import NotFound, UsageError
from ..query import Query
from ..textfold import search_forms
from .dialect import timestamp
from .sqlite_query import people_matching

__all__ = ["SqlitePeople"]

#: Shorter fragments have no trigram: they are looked for by a scan (still correct, slower).
_TRIGRAM = 3


class SqlitePeople:
    """People-catalogue methods of `SqliteStore` (a mixin: it uses the store's connection)."""

    _db: sqlite3.Connection
    _write: Callable[[], AbstractContextManager[sqlite3.Connection]]

    # -- writing ---------------------------------------------------------------------------
    def upsert_person(self, record: PersonRecord) -> tuple[PersonRef, bool]:
        """Create or update the person with `record.external_id`; (person, created).

        Name and notes are replaced; aliases, accounts and lists are added (never removed),
        so importing the same file twice changes nothing. An account owned by another person
        is a `UsageError` naming the owner, and nothing of the record is written.
        """
        with self._write() as db:
            row = db.execute(
                "SELECT id FROM person WHERE external_id = ?", (record.external_id,)
            ).fetchone()
            created = row is None
            person_id = row[0] if row else "p_" + secrets.token_hex(8)
            self._check_accounts(person_id, record.accounts)
            now = timestamp()
            if created:
                origin = record.provenance or Provenance()
                db.execute(
                    "INSERT INTO person (id, name, external_id, notes, created_at, updated_at, "
                    "source, added_by, basis) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        person_id,
                        record.name,
                        record.external_id,
                        record.notes,
                        now,
                        now,
                        origin.source or None,
                        origin.added_by or None,
                        origin.basis or None,
                    ),
                )
            else:
                db.execute(
                    "UPDATE person SET name = ?, notes = ?, updated_at = ? WHERE id = ? "
                    "AND (name <> ? OR notes <> ?)",
                    (record.name, record.notes, now, person_id, record.name, record.notes),
                )
            self._add_details(person_id, record)
            self._write_person_text(person_id)
        return PersonRef(person_id, record.name), created

    def _check_accounts(self, person_id: str, accounts: tuple[Account, ...]) -> None:
        for account in accounts:
            owner = self._db.execute(
                "SELECT p.id, p.name FROM account a JOIN person p ON p.id = a.person_id "
                "WHERE a.platform = ? AND a.handle = ?",
                (account.platform, account.handle),
            ).fetchone()
            if owner and owner[0] != person_id:
                raise UsageError(
                    f"the {account.platform} account {account.handle!r} already belongs to "
                    f"{owner[1]} ({owner[0]})"
                )

    def _add_details(self, person_id: str, record: PersonRecord) -> None:
        db = self._db
        db.executemany(
            "INSERT OR IGNORE INTO alias (person_id, name) VALUES (?, ?)",
            [(person_id, alias) for alias in record.aliases],
        )
        db.executemany(
            "INSERT INTO account (person_id, platform, handle, url) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (platform, handle) DO UPDATE SET url = coalesce(excluded.url, url)",
            [(person_id, a.platform, a.handle, a.url) for a in record.accounts],
        )
        for name in record.lists:
            db.execute(
                "INSERT OR IGNORE INTO list (id, name, created_at) VALUES (?, ?, ?)",
                ("l_" + secrets.token_hex(8), name, timestamp()),
            )
            db.execute(
                "INSERT OR IGNORE INTO list_member (list_id, person_id) "
                "SELECT id, ? FROM list WHERE name = ?",
                (person_id, name),
            )

    def add_relation(self, person_id: str, other_id: str, kind: str) -> bool:
        """Relate two people (`friend`, `colleague` ...); False if they already were."""
        if person_id == other_id:
            raise UsageError(f"a person cannot be related to themselves ({person_id})")
        with self._write() as db:
            exists = db.execute(
                "SELECT 1 FROM relation WHERE kind = ? AND ((person_id = ? AND other_id = ?) "
                "OR (person_id = ? AND other_id = ?))",
                (kind, person_id, other_id, other_id, person_id),
            ).fetchone()
            if exists:
                return False
            db.execute(
                "INSERT INTO relation (person_id, other_id, kind) VALUES (?, ?, ?)",
                (person_id, other_id, kind),
            )
        return True

    def person_by_external_id(self, external_id: str) -> PersonRef | None:
        """The person imported with this external id, if any."""
        row = self._db.execute(
            "SELECT id, name FROM person WHERE external_id = ?", (external_id,)
        ).fetchone()
        return PersonRef(row[0], row[1]) if row else None

    def _write_person_text(self, person_id: str) -> None:
        db = self._db
        self._delete_person_text(person_id)
        values = [
            ("name", r[0]) for r in db.execute("SELECT name FROM person WHERE id = ?", (person_id,))
        ]
        values += [
            ("alias", r[0])
            for r in db.execute("SELECT name FROM alias WHERE person_id = ?", (person_id,))
        ]
        values += [
            ("handle", r[0])
            for r in db.execute("SELECT handle FROM account WHERE person_id = ?", (person_id,))
        ]
        rows = [
            (form, field, value)
            for field, value in values
            for form in dict.fromkeys(search_forms(value))
        ]
        seq = int(
            db.execute(
                "UPDATE meta SET value = value + ? WHERE key = 'person_text_seq' RETURNING value",
                (len(rows),),
            ).fetchone()[0]
        )
        # The rowid puts the text's length first, so FTS5 hands matches over shortest first
        # and a search can stop after the first `limit` of each rank (see `find`). Rows go
        # in rising rowid order: FTS5 flushes its pending data at every step down.
        first = seq - len(rows) + 1
        numbered = sorted(
            ((len(form) << _SEQ_BITS) | (first + i), form, field, value)
            for i, (form, field, value) in enumerate(rows)
        )
        rowids = [row[0] for row in numbered]
        db.executemany(
            "INSERT INTO person_text (rowid, text, person_id, field, value) VALUES (?, ?, ?, ?, ?)",
            [(rowid, form, person_id, field, value) for rowid, form, field, value in numbered],
        )
        db.executemany(
            "INSERT INTO person_text_row (text_rowid, person_id) VALUES (?, ?)",
            [(rowid, person_id) for rowid in rowids],
        )

    def _delete_person_text(self, person_id: str) -> None:
        """Remove a person's rows from the text index (found through `person_text_row`:
        FTS5 cannot look rows up by an unindexed column without reading them all)."""
        rowids = [
            (r[0],)
            for r in self._db.execute(
                "SELECT text_rowid FROM person_text_row WHERE person_id = ?", (person_id,)
            )
        ]
        self._db.executemany("DELETE FROM person_text WHERE rowid = ?", rowids)
        self._db.execute("DELETE FROM person_text_row WHERE person_id = ?", (person_id,))

    def _rebuild_person_text(self) -> None:
        """Fill `person_text` for every person (after the migration that created it)."""
        self._db.execute("DELETE FROM person_text")
        self._db.execute("DELETE FROM person_text_row")
        for (person_id,) in self._db.execute("SELECT id FROM person").fetchall():
            self._write_person_text(person_id)

    # -- reading ---------------------------------------------------------------------------
    def profile(self, person_id: str) -> PersonProfile:
        """Aliases, accounts, lists and relations of a person."""
        db = self._db
        row = db.execute(
            "SELECT id, name, external_id, notes, source, added_by, basis FROM person WHERE id = ?",
            (person_id,),
        ).fetchone()
        if row is None:
            raise NotFound(f"no person has the id {person_id!r}")
        aliases = [
            r[0]
            for r in db.execute(
                "SELECT name FROM alias WHERE person_id = ? ORDER BY name", (person_id,)
            )
        ]
        accounts = [
            Account(r[0], r[1], r[2])
            for r in db.execute(
                "SELECT platform, handle, url FROM account WHERE person_id = ? "
                "ORDER BY platform, handle",
                (person_id,),
            )
        ]
        lists = [
            r[0]
            for r in db.execute(
                "SELECT l.name FROM list l JOIN list_member m ON m.list_id = l.id "
                "WHERE m.person_id = ? ORDER BY l.name",
                (person_id,),
            )
        ]
        relations = [
            (r[0], PersonRef(r[1], r[2]))
            for r in db.execute(
                "SELECT r.kind, p.id, p.name FROM relation r JOIN person p ON p.id = "
                "CASE WHEN r.person_id = ?1 THEN r.other_id ELSE r.person_id END "
                "WHERE r.person_id = ?1 OR r.other_id = ?1 ORDER BY r.kind, p.name",
                (person_id,),
            )
        ]
        return PersonProfile(
            PersonRef(row[0], row[1]),
            row[2],
            tuple(aliases),
            tuple(accounts),
            tuple(lists),
            tuple(relations),
            row[3],
            Provenance(row[4] or "", row[5] or "", row[6] or ""),
        )

    def find(self, text: str, limit: int) -> list[FoundPerson]:
        """People whose name, alias or handle contains `text` (folded), best first."""
        rows: list[tuple[str, str, str, int]] = []
        for form in search_forms(text):
            rows += self._matches(form, limit * 4)
        names = self._names({row[0] for row in rows})
        best: dict[str, FoundPerson] = {}
        for person_id, field, value, rank in rows:
            kept = best.get(person_id)
            if kept is None or rank < kept.rank:
                best[person_id] = FoundPerson(
                    PersonRef(person_id, names[person_id]), field, value, rank
                )
        ranked = sorted(
            best.values(), key=lambda f: (f.rank, f.person.name.casefold(), f.person.id)
        )
        return ranked[:limit]

    def people_matching(self, query: Query) -> list[PersonRef]:
        """The people a parsed query's filter selects, by name (query.py, docs/query.md)."""
        return people_matching(self._db, query, self.find)

    def _matches(self, form: str, want: int) -> list[tuple[str, str, str, int]]:
        """Up to `want` rows containing `form`, best rank first, shortest first within a rank.

        One FTS5 query per rank tier (the value's start, a later word's start, anywhere):
        rows come in rowid order, which is length order, so each query stops after `want`
        rows instead of reading, ranking and sorting every match (a 3-letter fragment can
        match 100k rows of a million people).
        """
        if len(form) < _TRIGRAM:
            return self._scan_matches(form, want)
        found: list[tuple[str, str, str, int]] = []
        for match, condition in _TIERS:
            if len(found) >= want:
                break
            found += self._db.execute(
                f"SELECT person_id, field, value, {_RANK} FROM person_text "
                f"WHERE person_text MATCH ?2 AND {condition} ORDER BY rowid LIMIT ?3",
                (form, match(form), want - len(found)),
            ).fetchall()
        return found

    def _scan_matches(self, form: str, want: int) -> list[tuple[str, str, str, int]]:
        """Fragments under three characters have no trigram: a scan (correct, slower)."""
        rows = self._db.execute(
            f"SELECT person_id, field, value, {_RANK} AS rank FROM person_text "
            "WHERE instr(text, ?1) > 0 ORDER BY rank, rowid LIMIT ?2",
            (form, want),
        ).fetchall()
        return [tuple(row) for row in rows]

    def _names(self, person_ids: set[str]) -> dict[str, str]:
        names: dict[str, str] = {}
        ordered = sorted(person_ids)
        for start in range(0, len(ordered), 900):
            chunk = ordered[start : start + 900]
            marks = ",".join("?" * len(chunk))
            names.update(
                self._db.execute(
                    f"SELECT id, name FROM person WHERE id IN ({marks})", chunk
                ).fetchall()
            )
        return names


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
