"""The people catalogue, for both stores (written once over the store's `sql`,
store/dialect.py): people, aliases, accounts, lists, relations, and substring search over
names, aliases and handles.

`person_text` holds the folded forms of every name, alias and handle (query/textfold.py: case,
accents, ё/е, Latin transliteration) and is rewritten for a person whenever one of those
changes. How it is stored and searched is the store's `text` (person_text.py `TextSearch`:
`sqlite_text.py` on FTS5 with the trigram tokenizer, `postgres_text.py` on a GIN trigram
index); both rank a match in the same tiers: the whole value, its start, a later word's
start, anywhere.
"""

from __future__ import annotations

import secrets

from ..entities import (
    Account,
    FoundPerson,
    PersonProfile,
    PersonRecord,
    PersonRef,
    PersonSummary,
    Provenance,
)
from ..errors import AmbiguousPerson, NotFound, UsageError
from ..query.language import Query
from ..query.textfold import search_forms
from .dialect import Sql, timestamp
from .people_query import people_matching
from .person_text import Match, TextSearch

__all__ = ["People"]


class People:
    """People-catalogue methods of both stores (over the store's `sql` and `text`)."""

    sql: Sql
    text: TextSearch

    # -- resolving -------------------------------------------------------------------------
    def resolve_person(self, ref: str) -> PersonRef:
        """The person with this id, or else the one with this name (NOCASE)."""
        rows = self.sql.rows("SELECT id, name FROM person WHERE id = ?", (ref,))
        if rows:
            return PersonRef(rows[0][0], rows[0][1])
        rows = self.sql.rows(
            f"SELECT id, name FROM person WHERE {self.sql.nocase_equals('name')} ORDER BY id",
            (ref,),
        )
        if not rows:
            raise NotFound(f"no person has the id or name {ref!r}")
        if len(rows) > 1:
            raise AmbiguousPerson(ref, [(r[0], r[1]) for r in rows])
        return PersonRef(rows[0][0], rows[0][1])

    def people(self) -> list[PersonSummary]:
        """Everyone, by name then id, with how many faces and photos they have."""
        return self._summaries("")

    def person_summary(self, person_id: str) -> PersonSummary:
        """One person with how many faces and photos they have."""
        found = self._summaries("WHERE p.id = ?", (person_id,))
        if not found:
            raise NotFound(f"no person has the id {person_id!r}")
        return found[0]

    def _summaries(self, where: str, params: tuple[str, ...] = ()) -> list[PersonSummary]:
        rows = self.sql.rows(
            "SELECT p.id, p.name, count(f.id), count(DISTINCT f.photo_id) FROM person p "
            f"LEFT JOIN face f ON f.person_id = p.id {where} GROUP BY p.id, p.name "
            "ORDER BY p.name, p.id",
            params,
        )
        return [PersonSummary(r[0], r[1], int(r[2]), int(r[3])) for r in rows]

    def person_by_external_id(self, external_id: str) -> PersonRef | None:
        """The person imported with this external id, if any."""
        rows = self.sql.rows("SELECT id, name FROM person WHERE external_id = ?", (external_id,))
        return PersonRef(rows[0][0], rows[0][1]) if rows else None

    # -- writing ---------------------------------------------------------------------------
    def upsert_person(self, record: PersonRecord) -> tuple[PersonRef, bool]:
        """Create or update the person with `record.external_id`; (person, created).

        Name and notes are replaced; aliases, accounts and lists are added (never removed),
        so importing the same file twice changes nothing. An account owned by another person
        is a `UsageError` naming the owner, and nothing of the record is written.
        """
        with self.sql.write():
            found = self.sql.scalar(
                "SELECT id FROM person WHERE external_id = ?", (record.external_id,)
            )
            created = found is None
            person_id = str(found) if found is not None else "p_" + secrets.token_hex(8)
            self._check_accounts(person_id, record.accounts)
            now = timestamp()
            if created:
                origin = record.provenance or Provenance()
                self.sql.execute(
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
                self.sql.execute(
                    "UPDATE person SET name = ?, notes = ?, updated_at = ? WHERE id = ? "
                    "AND (name <> ? OR notes <> ?)",
                    (record.name, record.notes, now, person_id, record.name, record.notes),
                )
            self._add_details(person_id, record)
            self._write_person_text(person_id)
        return PersonRef(person_id, record.name), created

    def _check_accounts(self, person_id: str, accounts: tuple[Account, ...]) -> None:
        for account in accounts:
            owner = self.sql.rows(
                "SELECT p.id, p.name FROM account a JOIN person p ON p.id = a.person_id "
                "WHERE a.platform = ? AND a.handle = ?",
                (account.platform, account.handle),
            )
            if owner and owner[0][0] != person_id:
                raise UsageError(
                    f"the {account.platform} account {account.handle!r} already belongs to "
                    f"{owner[0][1]} ({owner[0][0]})"
                )

    def _add_details(self, person_id: str, record: PersonRecord) -> None:
        self.sql.execute_many(
            "INSERT INTO alias (person_id, name) VALUES (?, ?) ON CONFLICT DO NOTHING",
            [(person_id, alias) for alias in record.aliases],
        )
        self.sql.execute_many(
            "INSERT INTO account (person_id, platform, handle, url) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (platform, handle) DO UPDATE "
            "SET url = coalesce(excluded.url, account.url)",
            [(person_id, a.platform, a.handle, a.url) for a in record.accounts],
        )
        for name in record.lists:
            self.sql.execute(
                "INSERT INTO list (id, name, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                ("l_" + secrets.token_hex(8), name, timestamp()),
            )
            self.sql.execute(
                "INSERT INTO list_member (list_id, person_id) SELECT id, ? FROM list "
                f"WHERE {self.sql.nocase_equals('name')} ON CONFLICT DO NOTHING",
                (person_id, name),
            )

    def add_relation(self, person_id: str, other_id: str, kind: str) -> bool:
        """Relate two people (`friend`, `colleague` ...); False if they already were."""
        if person_id == other_id:
            raise UsageError(f"a person cannot be related to themselves ({person_id})")
        with self.sql.write():
            exists = self.sql.rows(
                "SELECT 1 FROM relation WHERE kind = ? AND ((person_id = ? AND other_id = ?) "
                "OR (person_id = ? AND other_id = ?))",
                (kind, person_id, other_id, other_id, person_id),
            )
            if exists:
                return False
            self.sql.execute(
                "INSERT INTO relation (person_id, other_id, kind) VALUES (?, ?, ?)",
                (person_id, other_id, kind),
            )
        return True

    def _write_person_text(self, person_id: str) -> None:
        """Rewrite the person's rows of the search text: the name, aliases, handles."""
        self.text.delete(person_id)
        names = self.sql.firsts("SELECT name FROM person WHERE id = ?", (person_id,))
        values = [("name", n) for n in names]
        values += [
            ("alias", n)
            for n in self.sql.firsts(
                "SELECT name FROM alias WHERE person_id = ? ORDER BY name", (person_id,)
            )
        ]
        values += [
            ("handle", h)
            for h in self.sql.firsts(
                "SELECT handle FROM account WHERE person_id = ? ORDER BY id", (person_id,)
            )
        ]
        rows = [
            (form, field, value)
            for field, value in values
            for form in dict.fromkeys(search_forms(value))
        ]
        if rows:
            self.text.insert(person_id, rows)

    # -- reading ---------------------------------------------------------------------------
    def profile(self, person_id: str) -> PersonProfile:
        """Aliases, accounts, lists and relations of a person."""
        rows = self.sql.rows(
            "SELECT id, name, external_id, notes, source, added_by, basis FROM person WHERE id = ?",
            (person_id,),
        )
        if not rows:
            raise NotFound(f"no person has the id {person_id!r}")
        row = rows[0]
        aliases = self.sql.firsts(
            "SELECT name FROM alias WHERE person_id = ? ORDER BY name", (person_id,)
        )
        accounts = [
            Account(r[0], r[1], r[2])
            for r in self.sql.rows(
                "SELECT platform, handle, url FROM account WHERE person_id = ? "
                "ORDER BY platform, handle",
                (person_id,),
            )
        ]
        lists = self.sql.firsts(
            "SELECT l.name FROM list l JOIN list_member m ON m.list_id = l.id "
            f"WHERE m.person_id = ? ORDER BY {self.sql.nocase('l.name')}",
            (person_id,),
        )
        relations = [
            (r[0], PersonRef(r[1], r[2]))
            for r in self.sql.rows(
                "SELECT r.kind, p.id, p.name FROM relation r JOIN person p ON p.id = "
                "CASE WHEN r.person_id = ? THEN r.other_id ELSE r.person_id END "
                "WHERE r.person_id = ? OR r.other_id = ? ORDER BY r.kind, p.name",
                (person_id, person_id, person_id),
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
        rows: list[Match] = []
        for form in search_forms(text):
            rows += self.text.matches(form, limit * 4)
        names = dict(
            (r[0], r[1])
            for r in self.sql.rows_in(
                "SELECT id, name FROM person WHERE id IN ({marks})", {r[0] for r in rows}
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
        """The people a parsed query's filter selects, by name (query/language.py,
        docs/query.md)."""
        return people_matching(self, query)
