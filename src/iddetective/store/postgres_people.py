"""The people catalogue of the PostgreSQL store: people, aliases, accounts, lists, relations,
and substring search over names, aliases and handles.

As in the SQLite store (store/sqlite_people.py), `person_text` holds the folded forms of every
name, alias and handle (textfold.py) and is rewritten for a person whenever one of those
changes. A GIN trigram index (pg_trgm) finds the rows containing a fragment, and the search
ranks them in the same tiers: the whole value, its start, a later word's start, anywhere.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

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
from .postgres_query import people_matching
from .postgres_sql import NOCASE, PostgresBase, like_escape, now

__all__ = ["PostgresPeople"]

#: Shorter fragments have no trigram: they are looked for by a scan (still correct, slower).
_TRIGRAM = 3


class PostgresPeople(PostgresBase):
    """People-catalogue methods of `PostgresStore` (a mixin over the store's connection)."""

    resolve_person: Callable[[str], PersonRef]

    # -- writing ---------------------------------------------------------------------------
    def upsert_person(self, record: PersonRecord) -> tuple[PersonRef, bool]:
        """Create or update the person with `record.external_id`; (person, created).

        Name and notes are replaced; aliases, accounts and lists are added (never removed),
        so importing the same file twice changes nothing. An account owned by another person
        is a `UsageError` naming the owner, and nothing of the record is written.
        """
        with self._write() as db:
            found = self._value(
                "SELECT id FROM person WHERE external_id = %s", (record.external_id,)
            )
            created = found is None
            person_id = found if found is not None else "p_" + secrets.token_hex(8)
            self._check_accounts(person_id, record.accounts)
            at = now()
            if created:
                origin = record.provenance or Provenance()
                db.execute(
                    "INSERT INTO person (id, name, external_id, notes, created_at, updated_at, "
                    "source, added_by, basis) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (
                        person_id,
                        record.name,
                        record.external_id,
                        record.notes,
                        at,
                        at,
                        origin.source or None,
                        origin.added_by or None,
                        origin.basis or None,
                    ),
                )
            else:
                db.execute(
                    "UPDATE person SET name = %(name)s, notes = %(notes)s, updated_at = %(at)s "
                    "WHERE id = %(id)s AND (name <> %(name)s OR notes <> %(notes)s)",
                    {"name": record.name, "notes": record.notes, "at": at, "id": person_id},
                )
            self._add_details(person_id, record)
            self._write_person_text(person_id)
        return PersonRef(person_id, record.name), created

    def _check_accounts(self, person_id: str, accounts: tuple[Account, ...]) -> None:
        for account in accounts:
            owner = self._one(
                "SELECT p.id, p.name FROM account a JOIN person p ON p.id = a.person_id "
                "WHERE a.platform = %s AND a.handle = %s",
                (account.platform, account.handle),
            )
            if owner and owner[0] != person_id:
                raise UsageError(
                    f"the {account.platform} account {account.handle!r} already belongs to "
                    f"{owner[1]} ({owner[0]})"
                )

    def _add_details(self, person_id: str, record: PersonRecord) -> None:
        with self._db.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO alias (person_id, name) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                [(person_id, alias) for alias in record.aliases],
            )
            cursor.executemany(
                "INSERT INTO account (person_id, platform, handle, url) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (platform, handle) DO UPDATE "
                "SET url = coalesce(excluded.url, account.url)",
                [(person_id, a.platform, a.handle, a.url) for a in record.accounts],
            )
        for name in record.lists:
            self._db.execute(
                "INSERT INTO list (id, name, created_at) VALUES (%s, %s, %s) "
                "ON CONFLICT DO NOTHING",
                ("l_" + secrets.token_hex(8), name, now()),
            )
            self._db.execute(
                "INSERT INTO list_member (list_id, person_id) "
                f"SELECT id, %s FROM list WHERE lower(name) = {NOCASE} ON CONFLICT DO NOTHING",
                (person_id, name),
            )

    def add_relation(self, person_id: str, other_id: str, kind: str) -> bool:
        """Relate two people (`friend`, `colleague` ...); False if they already were."""
        if person_id == other_id:
            raise UsageError(f"a person cannot be related to themselves ({person_id})")
        with self._write() as db:
            exists = self._one(
                "SELECT 1 FROM relation WHERE kind = %(kind)s AND ((person_id = %(a)s AND "
                "other_id = %(b)s) OR (person_id = %(b)s AND other_id = %(a)s))",
                {"kind": kind, "a": person_id, "b": other_id},
            )
            if exists:
                return False
            db.execute(
                "INSERT INTO relation (person_id, other_id, kind) VALUES (%s, %s, %s)",
                (person_id, other_id, kind),
            )
        return True

    def person_by_external_id(self, external_id: str) -> PersonRef | None:
        """The person imported with this external id, if any."""
        row = self._one("SELECT id, name FROM person WHERE external_id = %s", (external_id,))
        return PersonRef(row[0], row[1]) if row else None

    def _write_person_text(self, person_id: str) -> None:
        """Rewrite the person's rows of the search text (ids rise in the order the SQLite
        store numbers them: the name, aliases, handles; searches order by length, then id)."""
        self._delete_person_text(person_id)
        values = [
            ("name", r[0]) for r in self._all("SELECT name FROM person WHERE id = %s", (person_id,))
        ]
        values += [
            ("alias", r[0])
            for r in self._all(
                "SELECT name FROM alias WHERE person_id = %s ORDER BY name", (person_id,)
            )
        ]
        values += [
            ("handle", r[0])
            for r in self._all(
                "SELECT handle FROM account WHERE person_id = %s ORDER BY id", (person_id,)
            )
        ]
        rows = [
            (person_id, field, value, form)
            for field, value in values
            for form in dict.fromkeys(search_forms(value))
        ]
        with self._db.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO person_text (person_id, field, value, text) VALUES (%s, %s, %s, %s)",
                rows,
            )

    def _delete_person_text(self, person_id: str) -> None:
        self._db.execute("DELETE FROM person_text WHERE person_id = %s", (person_id,))

    # -- reading ---------------------------------------------------------------------------
    def profile(self, person_id: str) -> PersonProfile:
        """Aliases, accounts, lists and relations of a person."""
        row = self._one(
            "SELECT id, name, external_id, notes, source, added_by, basis FROM person "
            "WHERE id = %s",
            (person_id,),
        )
        if row is None:
            raise NotFound(f"no person has the id {person_id!r}")
        aliases = [
            r[0]
            for r in self._all(
                "SELECT name FROM alias WHERE person_id = %s ORDER BY name", (person_id,)
            )
        ]
        accounts = [
            Account(r[0], r[1], r[2])
            for r in self._all(
                "SELECT platform, handle, url FROM account WHERE person_id = %s "
                "ORDER BY platform, handle",
                (person_id,),
            )
        ]
        lists = [
            r[0]
            for r in self._all(
                "SELECT l.name FROM list l JOIN list_member m ON m.list_id = l.id "
                "WHERE m.person_id = %s ORDER BY lower(l.name)",
                (person_id,),
            )
        ]
        relations = [
            (r[0], PersonRef(r[1], r[2]))
            for r in self._all(
                "SELECT r.kind, p.id, p.name FROM relation r JOIN person p ON p.id = "
                "CASE WHEN r.person_id = %(id)s THEN r.other_id ELSE r.person_id END "
                "WHERE r.person_id = %(id)s OR r.other_id = %(id)s ORDER BY r.kind, p.name",
                {"id": person_id},
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
        names = dict(
            (r[0], r[1])
            for r in self._all(
                "SELECT id, name FROM person WHERE id = ANY(%s)", (sorted({r[0] for r in rows}),)
            )
        )
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
        return self._reconnecting(lambda: people_matching(self._db, query, self.find))

    def _matches(self, form: str, want: int) -> list[tuple[str, str, str, int]]:
        """Up to `want` rows containing `form`, best rank first, shortest first within a rank.

        One query per rank tier (the value's start, a later word's start, anywhere), each
        narrowed by the trigram index and stopping after `want` rows, as the SQLite store's.
        """
        if len(form) < _TRIGRAM:
            return self._scan_matches(form, want)
        escaped = like_escape(form)
        found: list[tuple[str, str, str, int]] = []
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

    def _scan_matches(self, form: str, want: int) -> list[tuple[str, str, str, int]]:
        """Fragments under three characters have no trigram: a scan (correct, slower)."""
        return self._ranked(
            f"SELECT person_id, field, value, {_RANK} AS rank FROM person_text "
            "WHERE strpos(text, %(form)s) > 0 ORDER BY rank, length(text), id LIMIT %(want)s",
            {"form": form, "want": want},
        )

    def _ranked(self, sql: str, params: dict[str, object]) -> list[tuple[str, str, str, int]]:
        """(person, field, value, rank) rows of a search query."""
        return [(r[0], r[1], r[2], int(r[3])) for r in self._all(sql, params)]


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
