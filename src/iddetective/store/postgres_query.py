"""Compile a query's people filter (query.py) into one SQL statement over the PostgreSQL
catalogue: the same predicates as store/sqlite_query.py, with LIKE over the trigram-indexed
`person_text` where SQLite uses FTS5 MATCH. Names the query refers to (lists, people) are
resolved first, so an unknown one is an error pointing at it, with the closest names.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from ..entities import FoundPerson, PersonRef
from ..query import And, Expr, Not, Or, Query, Term
from ..textfold import search_forms
from .postgres_sql import NOCASE, Connection, like_escape

__all__ = ["people_matching"]

_TEXT_FIELDS = {
    "text": ["name", "alias", "handle"],
    "name": ["name", "alias"],
    "handle": ["handle"],
}

Finder = Callable[[str, int], list[FoundPerson]]


def people_matching(db: Connection, query: Query, find: Finder) -> list[PersonRef]:
    """The people `query.people` selects (everyone if it is None), by name then id."""
    params: list[Any] = []
    where = _compile(db, query, query.people, params, find) if query.people else "true"
    rows = db.execute(
        f"SELECT p.id, p.name FROM person p WHERE {where} ORDER BY p.name, p.id", params
    ).fetchall()
    return [PersonRef(r[0], r[1]) for r in rows]


def _compile(db: Connection, query: Query, expr: Expr, params: list[Any], find: Finder) -> str:
    if isinstance(expr, Not):
        return f"(NOT {_compile(db, query, expr.part, params, find)})"
    if isinstance(expr, And | Or):
        joiner = " AND " if isinstance(expr, And) else " OR "
        return "(" + joiner.join(_compile(db, query, p, params, find) for p in expr.parts) + ")"
    return _term(db, query, expr, params, find)


def _term(db: Connection, query: Query, term: Term, params: list[Any], find: Finder) -> str:
    if term.field in _TEXT_FIELDS:
        return _text(term, params)
    if term.field == "platform":
        params.append(term.value)
        return f"p.id IN (SELECT person_id FROM account WHERE lower(platform) = {NOCASE})"
    if term.field == "list":
        params.append(_list_id(db, query, term))
        return "p.id IN (SELECT person_id FROM list_member WHERE list_id = %s)"
    if term.field == "has":
        return "EXISTS (SELECT 1 FROM face WHERE face.person_id = p.id)"
    if term.field == "id":
        params.append(term.value)
        return "p.id = %s"
    if term.field in ("friends-of", "related-to"):
        other = _person(db, query, term, find)
        kind = "friend" if term.field == "friends-of" else term.kind
        kind_test = "" if kind is None else " AND kind = %s"
        params.extend([other.id, *([kind] if kind else []), other.id, *([kind] if kind else [])])
        return (
            f"p.id IN (SELECT other_id FROM relation WHERE person_id = %s{kind_test} "
            f"UNION SELECT person_id FROM relation WHERE other_id = %s{kind_test})"
        )
    raise query.error_at(term, f"{term.field}: cannot select people")  # face: is split off


def _text(term: Term, params: list[Any]) -> str:
    """Rows of `person_text` holding a folded form of the value (the trigram index narrows
    LIKE to candidates for forms of three characters or more)."""
    tests = []
    for form in search_forms(term.value):
        tests.append(
            "p.id IN (SELECT person_id FROM person_text WHERE text LIKE %s AND field = ANY(%s))"
        )
        params.extend(["%" + like_escape(form) + "%", _TEXT_FIELDS[term.field]])
    return "(" + " OR ".join(tests) + ")"


def _list_id(db: Connection, query: Query, term: Term) -> str:
    row = db.execute(f"SELECT id FROM list WHERE lower(name) = {NOCASE}", (term.value,)).fetchone()
    if row:
        return str(row[0])
    names = [r[0] for r in db.execute("SELECT name FROM list").fetchall()]
    close = difflib.get_close_matches(term.value, names, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(n) for n in close)}?" if close else ""
    raise query.error_at(term, f"no list is named {term.value!r}{hint}")


def _person(db: Connection, query: Query, term: Term, find: Finder) -> PersonRef:
    row = db.execute("SELECT id, name FROM person WHERE id = %s", (term.value,)).fetchone()
    if row:
        return PersonRef(row[0], row[1])
    rows = db.execute(
        f"SELECT id, name FROM person WHERE lower(name) = {NOCASE} ORDER BY id", (term.value,)
    ).fetchall()
    if len(rows) == 1:
        return PersonRef(rows[0][0], rows[0][1])
    if rows:
        listed = ", ".join(f"{r[0]} ({r[1]})" for r in rows)
        raise query.error_at(term, f"{term.value!r} names {len(rows)} people: {listed}; use an id")
    candidates = find(term.value, 3) or find(term.value[:3], 200)
    names = list(dict.fromkeys(f.person.name for f in candidates))
    close = difflib.get_close_matches(term.value, names, n=3, cutoff=0.5) or names[:3]
    hint = f"; did you mean {', '.join(repr(n) for n in close)}?" if close else ""
    raise query.error_at(term, f"no person is named {term.value!r}{hint}")
