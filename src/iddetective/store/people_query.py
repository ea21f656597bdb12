"""Compile a query's people filter (query/language.py) into one SQL statement, for both stores.

Each term becomes a predicate on `person p`; AND, OR and NOT become the same words in SQL, so
the database plans the whole filter at once. Text terms test `person_text` rows with the
store's own condition (`text.condition`: FTS5 MATCH in SQLite, LIKE over the trigram index in
PostgreSQL). Names the query refers to (lists, people) are resolved first, so an unknown one
is an error pointing at it, with the closest names.
"""

from __future__ import annotations

import difflib
from typing import Protocol

from ..entities import FoundPerson, PersonRef
from ..query.language import And, Expr, Not, Or, Query, Term
from ..query.textfold import search_forms
from .dialect import Sql
from .person_text import TextSearch

__all__ = ["People", "people_matching"]


class People(Protocol):
    """What the compiler needs of a store (store/people.py's `People` is one): its SQL, the
    condition its search text is tested with, and its substring search."""

    @property
    def sql(self) -> Sql: ...

    @property
    def text(self) -> TextSearch: ...

    def find(self, text: str, limit: int) -> list[FoundPerson]:
        """People whose name, alias or handle contains `text`, best first."""
        ...


_TEXT_FIELDS = {
    "text": ("name", "alias", "handle"),
    "name": ("name", "alias"),
    "handle": ("handle",),
}


def people_matching(store: People, query: Query) -> list[PersonRef]:
    """The people `query.people` selects (everyone if it is None), by name then id."""
    params: list[object] = []
    where = _compile(store, query, query.people, params) if query.people else "1 = 1"
    rows = store.sql.rows(
        f"SELECT p.id, p.name FROM person p WHERE {where} ORDER BY p.name, p.id", params
    )
    return [PersonRef(r[0], r[1]) for r in rows]


def _compile(store: People, query: Query, expr: Expr, params: list[object]) -> str:
    if isinstance(expr, Not):
        return f"(NOT {_compile(store, query, expr.part, params)})"
    if isinstance(expr, And | Or):
        joiner = " AND " if isinstance(expr, And) else " OR "
        return "(" + joiner.join(_compile(store, query, p, params) for p in expr.parts) + ")"
    return _term(store, query, expr, params)


def _term(store: People, query: Query, term: Term, params: list[object]) -> str:
    if term.field in _TEXT_FIELDS:
        return _text(store, term, params)
    if term.field == "platform":
        params.append(term.value)
        platform = store.sql.nocase_equals("platform")
        return f"p.id IN (SELECT person_id FROM account WHERE {platform})"
    if term.field == "list":
        params.append(_list_id(store, query, term))
        return "p.id IN (SELECT person_id FROM list_member WHERE list_id = ?)"
    if term.field == "has":
        return "EXISTS (SELECT 1 FROM face WHERE face.person_id = p.id)"
    if term.field == "id":
        params.append(term.value)
        return "p.id = ?"
    if term.field in ("friends-of", "related-to"):
        other = _person(store, query, term)
        kind = "friend" if term.field == "friends-of" else term.kind
        kind_test = "" if kind is None else " AND kind = ?"
        params.extend([other.id, *([kind] if kind else []), other.id, *([kind] if kind else [])])
        return (
            f"p.id IN (SELECT other_id FROM relation WHERE person_id = ?{kind_test} "
            f"UNION SELECT person_id FROM relation WHERE other_id = ?{kind_test})"
        )
    raise query.error_at(term, f"{term.field}: cannot select people")  # face: is split off


def _text(store: People, term: Term, params: list[object]) -> str:
    """One subquery per folded form (SQLite allows MATCH only alone, not inside an OR)."""
    fields = _TEXT_FIELDS[term.field]
    marks = ", ".join("?" * len(fields))
    tests = []
    for form in search_forms(term.value):
        test, argument = store.text.condition(form)
        tests.append(
            f"p.id IN (SELECT person_id FROM person_text WHERE {test} AND field IN ({marks}))"
        )
        params.extend([argument, *fields])
    return "(" + " OR ".join(tests) + ")"


def _list_id(store: People, query: Query, term: Term) -> str:
    found = store.sql.scalar(
        f"SELECT id FROM list WHERE {store.sql.nocase_equals('name')}", (term.value,)
    )
    if found is not None:
        return str(found)
    names = store.sql.firsts("SELECT name FROM list")
    close = difflib.get_close_matches(term.value, names, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(n) for n in close)}?" if close else ""
    raise query.error_at(term, f"no list is named {term.value!r}{hint}")


def _person(store: People, query: Query, term: Term) -> PersonRef:
    rows = store.sql.rows("SELECT id, name FROM person WHERE id = ?", (term.value,))
    if rows:
        return PersonRef(rows[0][0], rows[0][1])
    rows = store.sql.rows(
        f"SELECT id, name FROM person WHERE {store.sql.nocase_equals('name')} ORDER BY id",
        (term.value,),
    )
    if len(rows) == 1:
        return PersonRef(rows[0][0], rows[0][1])
    if rows:
        listed = ", ".join(f"{r[0]} ({r[1]})" for r in rows)
        raise query.error_at(term, f"{term.value!r} names {len(rows)} people: {listed}; use an id")
    candidates = store.find(term.value, 3) or store.find(term.value[:3], 200)
    names = list(dict.fromkeys(f.person.name for f in candidates))
    close = difflib.get_close_matches(term.value, names, n=3, cutoff=0.5) or names[:3]
    hint = f"; did you mean {', '.join(repr(n) for n in close)}?" if close else ""
    raise query.error_at(term, f"no person is named {term.value!r}{hint}")
