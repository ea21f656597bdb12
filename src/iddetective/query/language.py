"""The query language: text → a checked syntax tree → a plan (a people filter, maybe a face).

    list:"Alumni 2010" AND NOT platform:telegram
    (friends-of:"Ann Lee" OR related-to:colleague:"Ann Lee") has:face face:selfie.jpg

Terms are `field:value` (a value in double quotes may hold spaces; `\\"` is a quote) or a
bare value, which looks in names, aliases and handles. `NOT` binds tightest, then `AND`
(also implied between neighbouring terms), then `OR`; parentheses group. `face:` may appear
once, at the top level, joined by AND: the people the rest selects are then searched by
that photo. The grammar is docs/query.md's; stores compile the filter (store/people_query.py).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from lark import (
    Lark,
    Token,
    Transformer,
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
)
from lark import UnexpectedToken as LarkUnexpectedToken
from lark.exceptions import VisitError

from ..errors import UsageError

__all__ = [
    "FIELDS",
    "MAX_DEPTH",
    "MAX_TERMS",
    "And",
    "Expr",
    "Not",
    "Or",
    "Query",
    "QueryError",
    "Term",
    "parse_query",
]

GRAMMAR = r"""
start: or_expr?
?or_expr: and_expr (_OR and_expr)*
?and_expr: not_expr (_AND? not_expr)*
?not_expr: _NOT not_expr -> negation
         | atom
?atom: term
     | "(" or_expr ")"
term: FIELD ":" value             -> field_term
    | FIELD ":" WORD ":" value    -> kind_term
    | value                       -> text_term
value: STRING | WORD
_OR.3: /OR(?![^\s():"])/
_AND.3: /AND(?![^\s():"])/
_NOT.3: /NOT(?![^\s():"])/
FIELD.2: /[a-z][a-z-]*(?=:)/
STRING: /"(\\.|[^"\\\n])*"/
WORD: /[^\s():"]+/
%import common.WS
%ignore WS
"""

#: Every field, with what its value means (shown in errors and docs/query.md).
FIELDS = {
    "name": "text in a name or alias",
    "handle": "text in an account handle",
    "platform": "has an account on this platform (exact, any case)",
    "list": "member of the list with this name",
    "friends-of": "a friend of this person (id or name)",
    "related-to": "related to this person, any kind, or KIND only: related-to:KIND:PERSON",
    "has": "has:face (at least one face in the catalogue)",
    "id": "the person with this id",
    "face": "search by this photo (once, at the top level, joined by AND)",
}
_HAS = ("face",)
#: Limits that keep a query plannable: terms in all, and levels of NOT, AND and OR (SQLite's
#: parser refuses SQL nested much deeper: 30 levels of OR fail there).
MAX_TERMS = 200
MAX_DEPTH = 20

_PARSER = Lark(GRAMMAR, parser="lalr", propagate_positions=True, maybe_placeholders=False)

_TOKEN_NAMES = {
    "FIELD": "a term such as name:…",
    "STRING": "a value",
    "WORD": "a value",
    "LPAR": "'('",
    "RPAR": "')'",
    "COLON": "':'",
    "_OR": "OR",
    "_AND": "AND",
    "_NOT": "NOT",
    "$END": "the end of the query",
}


class QueryError(UsageError):
    """A query that cannot be run: the message points at the place, with a caret."""

    def __init__(self, query: str, line: int, column: int, problem: str) -> None:
        self.query, self.line, self.column, self.problem = query, line, column, problem
        source = query.splitlines()[line - 1] if query.strip() else query
        caret = " " * max(column - 1, 0) + "^"
        super().__init__(
            f"query error at line {line}, column {column}: {problem}\n  {source}\n  {caret}"
        )


@dataclass(frozen=True)
class Term:
    """One `field:value` (field "text" for a bare value); `kind` for related-to:KIND:…."""

    field: str
    value: str
    kind: str | None = None
    line: int = 1
    column: int = 1


@dataclass(frozen=True)
class And:
    """Every part holds."""

    parts: tuple[Expr, ...]


@dataclass(frozen=True)
class Or:
    """At least one part holds."""

    parts: tuple[Expr, ...]


@dataclass(frozen=True)
class Not:
    """The part does not hold."""

    part: Expr


Expr = Term | And | Or | Not


@dataclass(frozen=True)
class Query:
    """A parsed query: the people filter (None: everyone) and the face term, if any."""

    text: str
    people: Expr | None
    face: Term | None

    def error_at(self, term: Term, problem: str) -> QueryError:
        """A `QueryError` pointing at `term`'s value (for problems found when compiling)."""
        return QueryError(self.text, term.line, term.column, problem)


def parse_query(text: str) -> Query:
    """Parse and check `text`; raises `QueryError` pointing at the first problem."""
    try:
        tree = _PARSER.parse(text)
        expr = _ToExpr(text).transform(tree)
    except UnexpectedInput as error:
        raise _syntax_error(text, error) from None
    except VisitError as error:
        if isinstance(error.orig_exc, QueryError):
            raise error.orig_exc from None
        raise
    except RecursionError:
        raise _too_big(text, f"it nests deeper than {MAX_DEPTH} levels") from None
    if expr is None:
        raise QueryError(text, 1, 1, "the query is empty: give at least one term")
    assert not isinstance(expr, Token), "the grammar wraps every value in a term"
    _check_size(text, expr)
    return _split_face(text, expr)


def _check_size(text: str, expr: Expr) -> None:
    """Refuse queries too big to plan (SQLite's expression depth is limited too)."""
    terms, depth = _size(expr)
    if terms > MAX_TERMS:
        raise _too_big(text, f"it has {terms} terms, more than {MAX_TERMS}")
    if depth > MAX_DEPTH:
        raise _too_big(text, f"it nests {depth} levels deep, more than {MAX_DEPTH}")


def _size(expr: Expr) -> tuple[int, int]:
    if isinstance(expr, Term):
        return 1, 0
    parts = [expr.part] if isinstance(expr, Not) else list(expr.parts)
    sizes = [_size(part) for part in parts]
    return sum(s[0] for s in sizes), 1 + max(s[1] for s in sizes)


def _too_big(text: str, why: str) -> QueryError:
    return QueryError(text, 1, 1, f"the query is too big: {why}; split it or use a list")


class _ToExpr(Transformer[Token, Expr | Token | None]):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def start(self, children: list[Expr]) -> Expr | None:
        return children[0] if children else None

    def or_expr(self, children: list[Expr]) -> Expr:
        return Or(tuple(children))

    def and_expr(self, children: list[Expr]) -> Expr:
        return And(tuple(children))

    def negation(self, children: list[Expr]) -> Expr:
        return Not(children[0])

    def value(self, children: list[Token]) -> Token:
        token = children[0]
        if token.type == "STRING":
            unquoted = token.value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
            return token.update(value=unquoted)
        return token

    def text_term(self, children: list[Token]) -> Term:
        (value,) = children
        return self._term("text", value, None, value)

    def field_term(self, children: list[Token]) -> Term:
        field, value = children
        return self._term(str(field), value, None, field)

    def kind_term(self, children: list[Token]) -> Term:
        field, kind, value = children
        if field not in FIELDS:
            raise QueryError(self.text, field.line or 1, field.column or 1, _unknown_field(field))
        if field != "related-to":
            problem = f"only related-to takes a kind (related-to:KIND:PERSON), not {field}:"
            raise QueryError(self.text, field.line or 1, field.column or 1, problem)
        return self._term(str(field), value, str(kind), field)

    def _term(self, field: str, value: Token, kind: str | None, at: Token) -> Term:
        term = Term(field, str(value), kind, at.line or 1, at.column or 1)
        if field != "text" and field not in FIELDS:
            raise QueryError(self.text, term.line, term.column, _unknown_field(field))
        at_value = (self.text, value.line or 1, value.column or 1)
        if field == "has" and term.value not in _HAS:
            raise QueryError(*at_value, f"has: takes {', '.join(_HAS)}, not {term.value!r}")
        if not term.value.strip():
            raise QueryError(*at_value, f"{field}: needs a value")
        return term


def _unknown_field(field: str) -> str:
    close = difflib.get_close_matches(field, FIELDS, n=1)
    hint = f"; did you mean {close[0]}:?" if close else ""
    return f"unknown field {field}:{hint} (fields: {', '.join(FIELDS)})"


def _split_face(text: str, expr: Expr) -> Query:
    """Take the face term out of the top-level AND; a face anywhere else is an error."""
    top = expr.parts if isinstance(expr, And) else (expr,)
    faces = [part for part in top if isinstance(part, Term) and part.field == "face"]
    rest = [part for part in top if part not in faces]
    for nested in _nested_faces(rest):
        raise QueryError(
            text,
            nested.line,
            nested.column,
            "face: must be a top-level term joined by AND (not inside OR, NOT or parentheses)",
        )
    if len(faces) > 1:
        raise QueryError(text, faces[1].line, faces[1].column, "face: may appear only once")
    people: Expr | None = None
    if len(rest) == 1:
        people = rest[0]
    elif rest:
        people = And(tuple(rest))
    return Query(text, people, faces[0] if faces else None)


def _nested_faces(parts: list[Expr]) -> list[Term]:
    found: list[Term] = []
    for part in parts:
        if isinstance(part, Term):
            found += [part] if part.field == "face" else []
        elif isinstance(part, Not):
            found += _nested_faces([part.part])
        else:
            found += _nested_faces(list(part.parts))
    return found


def _syntax_error(text: str, error: UnexpectedInput) -> QueryError:
    line, column = error.line if error.line > 0 else 1, error.column if error.column > 0 else 1
    if isinstance(error, UnexpectedEOF) or (
        isinstance(error, LarkUnexpectedToken) and error.token.type == "$END"
    ):
        lines = text.splitlines() or [""]
        line, column = len(lines), len(lines[-1]) + 1
        found = "the query ends"
    elif isinstance(error, UnexpectedCharacters):
        char = text[error.pos_in_stream or 0]
        if char == '"':
            return QueryError(text, line, column, 'a quoted value has no closing "')
        found = f"unexpected {char!r}"
    else:
        assert isinstance(error, LarkUnexpectedToken)
        found = f"unexpected {error.token.value!r}"
    expected = sorted({_TOKEN_NAMES.get(name, name) for name in getattr(error, "expected", ())})
    wanted = f"; expected {' or '.join(expected)}" if expected else ""
    return QueryError(text, line, column, f"{found}{wanted}")
