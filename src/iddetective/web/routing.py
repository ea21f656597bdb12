"""Routes whose text parameters are checked before the endpoint runs.

A NUL character is valid in a URL (`%00`), a form field and a JSON string, and is never
part of a name, a query or a label, but SQLite's full-text queries and PostgreSQL's text
refuse it with an unexpected error deep down (a 500). Every route of the app is a
`CheckedRoute`, which refuses it first, 422 naming the parameter, for path and query
parameters, form fields and JSON strings alike.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Iterable, Iterator
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from .errors import InvalidText

__all__ = ["CheckedRoute", "check_text"]


class CheckedRoute(APIRoute):
    """An APIRoute that calls `check_text` on the request before the endpoint."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            await check_text(request)
            return await handler(request)

        return checked


async def check_text(request: Request) -> None:
    """Raise `InvalidText` for a NUL character in any text parameter of `request`.

    The body is read here only for forms and JSON, which the endpoint reads anyway (Starlette
    keeps what was read for it); upload contents are not looked at.
    """
    _refuse_nul(_texts(request))
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        form = await request.form()
        _refuse_nul((f"body.{name}", v) for name, v in form.multi_items() if isinstance(v, str))
    elif content_type.startswith("application/json"):
        try:
            document = json.loads(await request.body())
        except ValueError:
            return  # the endpoint's validation says what is wrong with it
        _refuse_nul(_json_strings(document, "body"))


def _texts(request: Request) -> Iterator[tuple[str, str]]:
    for name, value in request.path_params.items():
        if isinstance(value, str):
            yield f"path.{name}", value
    for name, value in request.query_params.multi_items():
        yield f"query.{name}", value


def _refuse_nul(fields: Iterable[tuple[str, str]]) -> None:
    for where, value in fields:
        if "\x00" in value:
            raise InvalidText(f"{where}: text may not contain a NUL character (\\x00)")


def _json_strings(document: object, where: str) -> Iterator[tuple[str, str]]:
    """Every string in a JSON document (keys included) with where it is."""
    if isinstance(document, str):
        yield where, document
    elif isinstance(document, dict):
        for key, value in document.items():
            yield f"{where}.{key}", key
            yield from _json_strings(value, f"{where}.{key}")
    elif isinstance(document, list):
        for number, value in enumerate(document):
            yield from _json_strings(value, f"{where}.{number}")
