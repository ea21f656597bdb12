"""Compile a query's people filter (query.py) into one SQL statement over the SQLite catalogue.

Each term becomes a predicate on `person p`; AND, OR and NOT become the same words in SQL, so
the database plans the whole filter at once. Text terms use the trigram index (`person_text`)
for values of three characters or more. Names the query refers to (lists, people) are
resolved first, so an unknown one is an error pointing at it, with the closest names.
"""

from __future__ import annotations

import difflib
import sqlite3
from collections.abc import Callable

from ..entities import FoundPerson, PersonRef
from ..query import And, Expr, Not, Or, Query, Term
from ..textfold import search_forms

__all__ = ["people_matching"]

_TEXT_FIELDS = {
    "text": ("name", "alias", "handle"),
    "name": ("name", "alias"),
    "handle": ("handle",),
}

Finder = Callable[[str, int], list[FoundPerson]]


def people_matching(db: sqlite3.Connection, query: Query, find: Finder) -> list[PersonRef]:
    """The people `query.people` selects (everyone if it is None), by name then id."""
    params: list[object] = []
    where = _compile(db, query, query.people, params, find) if query.people else "1"
    rows = db.execute(
        f"SELECT p.id, p.name FROM person p WHERE {where} ORDER BY p.name, p.id", params
    ).fetchall()
    return [PersonRef(r[0], r[1]) for r in rows]


def _compile(
    db: sqlite3.Connection, query: Query, expr: Expr, params: list[object], find: Finder
) -> str:
    if isinstance(expr, Not):
        return f"(NOT {_compile(db, query, expr.part, params, find)})"
    if isinstance(expr, And | Or):
        joiner = " AND " if isinstance(expr, And) else " OR "
        return "(" + joiner.join(_compile(db, query, p, params, find) for p in expr.parts) + ")"
    return _term(db, query, expr, params, find)


def _term(
    db: sqlite3.Connection, query: Query, term: Term, params: list[object], find: Finder
) -> str:
    if term.field in _TEXT_FIELDS:
        return _text(term, params)
    if term.field == "platform":
        params.append(term.value)
        return "p.id IN (SELECT person_id FROM account WHERE platform = ? COLLATE NOCASE)"
    if term.field == "list":
        params.append(_list_id(db, query, term))
        return "p.id IN (SELECT person_id FROM list_member WHERE list_id = ?)"
    if term.field == "has":
        return "EXISTS (SELECT 1 FROM face WHERE face.person_id = p.id)"
    if term.field == "id":
        params.append(term.value)
        return "p.id = ?"
    if term.field in ("friends-of", "related-to"):
        other = _person(db, query, term, find)
        kind = "friend" if term.field == "friends-of" else term.kind
        kind_test = "" if kind is None else " AND kind = ?"
        params.extend([other.id, *([kind] if kind else []), other.id, *([kind] if kind else [])])
        return (
            f"p.id IN (SELECT other_id FROM relation WHERE person_id = ?{kind_test} "
            f"UNION SELECT person_id FROM relation WHERE other_id = ?{kind_test})"
        )
    raise query.error_at(term, f"{term.field}: cannot select people")  # face: is split off


def _text(term: Term, params: list[object]) -> str:
    """One subquery per folded form: SQLite allows MATCH only alone, not inside an OR."""
    fields = _TEXT_FIELDS[term.field]
    marks = ",".join("?" * len(fields))
    tests = []
    for form in search_forms(term.value):
        if len(form) >= 3:
            test, argument = "person_text MATCH ?", '"' + form.replace('"', '""') + '"'
        else:
            test, argument = "instr(text, ?) > 0", form
        tests.append(
            f"p.id IN (SELECT person_id FROM person_text WHERE {test} AND field IN ({marks}))"
        )
        params.extend([argument, *fields])
    return "(" + " OR ".join(tests) + ")"


def _list_id(db: sqlite3.Connection, query: Query, term: Term) -> str:
    row = db.execute("SELECT id FROM list WHERE name = ?", (term.value,)).fetchone()
    if row:
        return str(row[0])
    names = [r[0] for r in db.execute("SELECT name FROM list")]
    close = difflib.get_close_matches(term.value, names, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(n) for n in close)}?" if close else ""
    raise query.error_at(term, f"no list is named {term.value!r}{hint}")


def _person(db: sqlite3.Connection, query: Query, term: Term, find: Finder) -> PersonRef:
    row = db.execute("SELECT id, name FROM person WHERE id = ?", (term.value,)).fetchone()
    if row:
        return PersonRef(row[0], row[1])
    rows = db.execute(
        "SELECT id, name FROM person WHERE name = ? COLLATE NOCASE ORDER BY id", (term.value,)
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
