"""The query language: parsing, precedence, errors that point, and SQL that agrees with a
brute-force evaluator over the same catalogue (hypothesis)."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iddetective.entities import Account, PersonRecord, PersonRef
from iddetective.query.language import (
    MAX_DEPTH,
    MAX_TERMS,
    And,
    Expr,
    Not,
    Or,
    QueryError,
    Term,
    parse_query,
)
from iddetective.query.textfold import search_forms
from iddetective.store.sqlite import SqliteStore


def t(field: str, value: str, kind: str | None = None) -> Term:
    """A term, for comparing trees (positions ignored)."""
    return Term(field, value, kind)


def shape(expr: Expr | None) -> object:
    """The tree without positions."""
    if isinstance(expr, Term):
        return (expr.field, expr.value, expr.kind)
    if isinstance(expr, Not):
        return ("NOT", shape(expr.part))
    if isinstance(expr, And | Or):
        return (type(expr).__name__.upper(), *[shape(p) for p in expr.parts])
    return None


# -- parsing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tree"),
    [
        (
            "a OR b c",
            ("OR", ("text", "a", None), ("AND", ("text", "b", None), ("text", "c", None))),
        ),
        ("NOT a b", ("AND", ("NOT", ("text", "a", None)), ("text", "b", None))),
        (
            "(a OR b) AND c",
            ("AND", ("OR", ("text", "a", None), ("text", "b", None)), ("text", "c", None)),
        ),
        ("NOT NOT a", ("NOT", ("NOT", ("text", "a", None)))),
        (
            "a AND b OR c AND d",
            (
                "OR",
                ("AND", ("text", "a", None), ("text", "b", None)),
                ("AND", ("text", "c", None), ("text", "d", None)),
            ),
        ),
        ('name:"petr"', ("name", "petr", None)),
        ("handle:ivan_", ("handle", "ivan_", None)),
        ("platform:telegram", ("platform", "telegram", None)),
        ('list:"Alumni 2010"', ("list", "Alumni 2010", None)),
        ('friends-of:"Ann Lee"', ("friends-of", "Ann Lee", None)),
        ('related-to:colleague:"Ann Lee"', ("related-to", "Ann Lee", "colleague")),
        ("related-to:p_0123", ("related-to", "p_0123", None)),
        ("has:face", ("has", "face", None)),
        ("id:p_42", ("id", "p_42", None)),
        ('name:"say \\"hi\\""', ("name", 'say "hi"', None)),
        ("Пётр", ("text", "Пётр", None)),
        (
            "ORacle ANDroid NOTed",
            ("AND", ("text", "ORacle", None), ("text", "ANDroid", None), ("text", "NOTed", None)),
        ),
    ],
)
def test_terms_and_precedence(text: str, tree: object) -> None:
    assert shape(parse_query(text).people) == tree


def test_face_is_split_off_the_top_level_and() -> None:
    query = parse_query('list:"A" face:"my photo.jpg" has:face')
    assert query.face is not None and query.face.value == "my photo.jpg"
    assert shape(query.people) == ("AND", ("list", "A", None), ("has", "face", None))
    alone = parse_query("face:x.jpg")
    assert alone.people is None and alone.face is not None


@pytest.mark.parametrize(
    ("text", "line", "column", "words"),
    [
        ("a OR face:x.jpg", 1, 6, "top-level term joined by AND"),
        ("NOT face:x.jpg", 1, 5, "top-level"),
        ("(face:x.jpg a) b", 1, 2, "top-level"),
        ("face:a face:b", 1, 8, "only once"),
        ("list:", 1, 6, "expected a value"),
        ("a OR (b", 1, 8, "expected ')'"),
        ("a AND", 1, 6, "expected"),
        (")", 1, 1, "unexpected ')'"),
        ('name:"open', 1, 6, "no closing"),
        ("nmae:x", 1, 1, "did you mean name:?"),
        ("has:dog", 1, 5, "has: takes face"),
        ("friends-of:x:y", 1, 1, "only related-to takes a kind"),
        ("", 1, 1, "empty"),
        ("a\nOR (b c", 2, 8, "expected ')'"),
    ],
)
def test_errors_point_at_the_problem(text: str, line: int, column: int, words: str) -> None:
    with pytest.raises(QueryError) as caught:
        parse_query(text)
    error = caught.value
    assert (error.line, error.column) == (line, column), str(error)
    assert words in str(error)
    caret_line = str(error).splitlines()[-1]
    assert caret_line.index("^") == column - 1 + 2  # two spaces of indent


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('ab :()"\\-_ANDORTfce\nё')), max_size=40))
def test_any_string_parses_or_raises_only_a_query_error(text: str) -> None:
    with contextlib.suppress(QueryError):
        parse_query(text)


# -- compiling against a brute-force evaluator --------------------------------------------


FIRST = ["Ann", "Анна", "Petr", "Пётр", "José", "Li", "Olga", "Ольга", "Bob", "Zoë"]
LAST = ["Lee", "Иванов", "Novak", "Müller", "Annson", "Wei", "Smith", "Ёжиков"]
PLATFORMS = ["telegram", "instagram", "email", "x"]
LISTS = ["Alumni 2010", "Team", "Choir"]
KINDS = ["friend", "colleague", "sibling"]


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> tuple[SqliteStore, list[PersonRef]]:
    """40 people with random names, aliases, accounts, lists, relations and some faces."""
    rng = random.Random(7)
    store = SqliteStore(tmp_path_factory.mktemp("query") / "catalog.sqlite")
    people = []
    for number in range(40):
        name = f"{rng.choice(FIRST)} {rng.choice(LAST)} {number}"
        accounts = tuple(
            Account(platform, f"{rng.choice(['ann', 'pe', 'ivan_', 'zo'])}{number}_{platform}")
            for platform in rng.sample(PLATFORMS, rng.randint(0, 2))
        )
        record = PersonRecord(
            f"ext-{number}",
            name,
            aliases=tuple(rng.sample(FIRST, rng.randint(0, 1))),
            accounts=accounts,
            lists=tuple(rng.sample(LISTS, rng.randint(0, 2))),
        )
        people.append(store.upsert_person(record)[0])
    for _ in range(40):
        a, b = rng.sample(people, 2)
        store.add_relation(a.id, b.id, rng.choice(KINDS))
    with store.sql.write() as db:
        db.execute(
            "INSERT INTO photo (sha256, width, height, face_count, ingested_at) "
            "VALUES ('x', 1, 1, 1, 'now')"
        )
        for person in people[::3]:
            db.execute(
                "INSERT INTO face (photo_id, box_left, box_top, box_right, box_bottom, score, "
                "landmarks, model, embedding, person_id) "
                "VALUES (1, 0, 0, 1, 1, 1, '[]', 'm', x'00', ?)",
                (person.id,),
            )
    return store, people


def brute(store: SqliteStore, person: PersonRef, expr: Expr) -> bool:
    """Does `expr` hold for `person`? Evaluated in Python from the person's profile."""
    if isinstance(expr, Not):
        return not brute(store, person, expr.part)
    if isinstance(expr, And):
        return all(brute(store, person, p) for p in expr.parts)
    if isinstance(expr, Or):
        return any(brute(store, person, p) for p in expr.parts)
    profile = store.profile(person.id)
    field, value = expr.field, expr.value
    if field in ("text", "name", "handle"):
        texts = []
        if field in ("text", "name"):
            texts += [person.name, *profile.aliases]
        if field in ("text", "handle"):
            texts += [a.handle for a in profile.accounts]
        forms = [f for text in texts for f in search_forms(text)]
        return any(q in f for q in search_forms(value) for f in forms)
    if field == "platform":
        return any(a.platform.lower() == value.lower() for a in profile.accounts)
    if field == "list":
        return any(name.lower() == value.lower() for name in profile.lists)
    if field == "has":
        return bool(store.faces_of_person(person.id))
    if field == "id":
        return person.id == value
    kind = "friend" if field == "friends-of" else expr.kind
    return any(other.name == value and kind in (None, k) for k, other in profile.relations)


def render(expr: Expr) -> str:
    """Query text for `expr`, fully parenthesised."""
    if isinstance(expr, Term):
        quoted = '"' + expr.value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        field = "" if expr.field == "text" else f"{expr.field}:"
        kind = f"{expr.kind}:" if expr.kind else ""
        return f"{field}{kind}{quoted}"
    if isinstance(expr, Not):
        return f"NOT ({render(expr.part)})"
    joiner = " AND " if isinstance(expr, And) else " OR "
    return "(" + joiner.join(render(p) for p in expr.parts) + ")"


def terms(people: list[PersonRef]) -> st.SearchStrategy[Expr]:
    fragments = st.sampled_from(
        ["ann", "Анна", "petr", "пётр", "jose", "li", "olg", "ez", "ivan_", "müller", "son 1", "e"]
    )
    names = st.sampled_from([p.name for p in people])
    return st.one_of(
        st.builds(Term, st.sampled_from(["text", "name", "handle"]), fragments),
        st.builds(Term, st.just("platform"), st.sampled_from([*PLATFORMS, "TELEGRAM"])),
        st.builds(Term, st.just("list"), st.sampled_from([*LISTS, "team"])),
        st.builds(Term, st.just("has"), st.just("face")),
        st.builds(Term, st.just("id"), st.sampled_from([p.id for p in people])),
        st.builds(Term, st.just("friends-of"), names),
        st.builds(Term, st.just("related-to"), names, st.sampled_from([None, *KINDS])),
    )


def expressions(people: list[PersonRef]) -> st.SearchStrategy[Expr]:
    return st.recursive(
        terms(people),
        lambda inner: st.one_of(
            st.builds(Not, inner),
            st.builds(lambda ps: And(tuple(ps)), st.lists(inner, min_size=2, max_size=3)),
            st.builds(lambda ps: Or(tuple(ps)), st.lists(inner, min_size=2, max_size=3)),
        ),
        max_leaves=6,
    )


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_compiled_queries_select_what_brute_force_selects(
    catalogue: tuple[SqliteStore, list[PersonRef]], data: st.DataObject
) -> None:
    store, people = catalogue
    expr = data.draw(expressions(people))
    text = render(expr)
    parsed = parse_query(text)
    assert shape(parsed.people) == shape(expr) or isinstance(expr, And | Or)
    got = [p.id for p in store.people_matching(parsed)]
    expected = sorted((p for p in people if brute(store, p, expr)), key=lambda p: (p.name, p.id))
    assert got == [p.id for p in expected], text


@pytest.mark.parametrize(
    "text",
    ["ann OR petr", "NOT has:face", 'list:"Team" OR platform:telegram', "name:пётр handle:ivan_"],
)
def test_hand_picked_queries_select_some_but_not_all(
    catalogue: tuple[SqliteStore, list[PersonRef]], text: str
) -> None:
    store, people = catalogue
    parsed = parse_query(text)
    assert parsed.people is not None
    got = [p.id for p in store.people_matching(parsed)]
    expected = [p for p in people if brute(store, p, parsed.people)]
    assert 0 < len(got) < len(people) and set(got) == {p.id for p in expected}


def test_unknown_names_are_errors_with_suggestions(
    catalogue: tuple[SqliteStore, list[PersonRef]],
) -> None:
    store, people = catalogue
    with pytest.raises(
        QueryError, match=r"no list is named 'Alumni 2011'; did you mean 'Alumni 2010'"
    ) as caught:
        store.people_matching(parse_query('has:face list:"Alumni 2011"'))
    assert caught.value.column == 10
    someone = people[0].name
    with pytest.raises(QueryError, match="no person is named") as unknown:
        store.people_matching(parse_query(f'friends-of:"{someone}x"'))
    assert repr(someone) in str(unknown.value)


def test_everyone_when_only_a_face_is_given(catalogue: tuple[SqliteStore, list[PersonRef]]) -> None:
    store, people = catalogue
    assert len(store.people_matching(parse_query("face:x.jpg"))) == len(people)


def test_query_errors_through_the_catalogue(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "c.sqlite")
    store.upsert_person(PersonRecord("1", "Ann Lee"))
    store.upsert_person(PersonRecord("2", "Ann Lee"))
    with pytest.raises(QueryError, match="names 2 people"):
        store.people_matching(parse_query('friends-of:"ann lee"'))


@pytest.mark.parametrize(
    "nest",
    [
        lambda n: "NOT " * n + "a",
        lambda n: "(a OR " * n + "b" + ")" * n,
        lambda n: "(NOT (a OR " * (n // 2) + "b" + "))" * (n // 2),
        lambda n: "(a AND (b OR " * (n // 2) + "c" + "))" * (n // 2),
    ],
)
def test_the_deepest_allowed_queries_run_and_deeper_ones_are_refused(
    catalogue: tuple[SqliteStore, list[PersonRef]], nest: Callable[[int], str]
) -> None:
    store, _ = catalogue
    store.people_matching(parse_query(nest(MAX_DEPTH)))
    with pytest.raises(QueryError, match="too big"):
        parse_query(nest(MAX_DEPTH + 2))


def test_too_many_terms_or_too_deep_for_the_parser_are_query_errors() -> None:
    with pytest.raises(QueryError, match=f"more than {MAX_TERMS}"):
        parse_query("a " * (MAX_TERMS + 1))
    with pytest.raises(QueryError, match="too big"):
        parse_query("NOT " * 2000 + "a")


def test_a_value_folding_to_short_and_long_forms_runs(
    catalogue: tuple[SqliteStore, list[PersonRef]],
) -> None:
    store, _ = catalogue
    assert search_forms("xÆ") == ["xæ", "xae"]  # one form under three characters, one not
    assert store.people_matching(parse_query("xÆ OR name:xÆ")) == []
