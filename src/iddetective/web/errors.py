"""Errors as HTTP answers: a specific status and `{"error": {"code", "message"}}`, never a trace.

The library's typed errors carry the message; this module only picks the status. Anything
unexpected is logged with its traceback on the server and answered with a plain 500 body.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from ..errors import (
    AmbiguousPerson,
    BadImage,
    Forbidden,
    IDDetectiveError,
    LastAdminKey,
    NotFound,
    PhotoChanged,
    StoreError,
    Unauthorized,
    UsageError,
    from_os_error,
)
from ..faces.pipeline import TooManyFaces
from ..ingest.fleet.remote_hosts import RemoteHostError
from ..query.language import QueryError
from .analysis import AnalysisTimeout, Busy, PipelineCrashed
from .models import ErrorBody

__all__ = [
    "ERROR_RESPONSES",
    "FleetNotConfigured",
    "FleetUnavailable",
    "InvalidText",
    "UploadTooLarge",
    "error_response",
    "install_error_handlers",
    "library_error_response",
]

log = logging.getLogger("iddetective.web")
#: Renders an error as a page: (request, message, status) -> response.
ErrorPage = Callable[[Request, str, int], Response]


class UploadTooLarge(UsageError):
    """An upload over the server's size limit (HTTP 413)."""


class InvalidText(IDDetectiveError):
    """A text parameter holding what no text here may (a NUL character): HTTP 422."""


class FleetNotConfigured(IDDetectiveError):
    """The server was started without a broker, so it cannot see the workers (HTTP 409)."""


class FleetUnavailable(IDDetectiveError):
    """The workers' broker does not answer, or celery is missing (HTTP 503)."""


#: (status, code) per error class, most specific first.
_STATUS: list[tuple[type[Exception], int, str]] = [
    (Unauthorized, 401, "unauthorized"),
    (Forbidden, 403, "forbidden"),
    (NotFound, 404, "not_found"),
    (AmbiguousPerson, 409, "ambiguous_person"),
    (PhotoChanged, 409, "photo_changed"),
    (LastAdminKey, 409, "last_admin_key"),
    (InvalidText, 422, "invalid_request"),
    (UploadTooLarge, 413, "too_large"),
    (TooManyFaces, 422, "too_many_faces"),
    (AnalysisTimeout, 422, "analysis_timeout"),
    (PipelineCrashed, 422, "pipeline_crashed"),
    (BadImage, 422, "bad_image"),
    (Busy, 503, "busy"),
    (FleetNotConfigured, 409, "no_broker"),
    (FleetUnavailable, 503, "broker_unavailable"),
    (StoreError, 503, "store_unavailable"),
    (QueryError, 400, "query_error"),
    (UsageError, 400, "bad_request"),
    (RemoteHostError, 502, "remote_host"),
    (IDDetectiveError, 422, "unprocessable"),
]

_DESCRIPTIONS = {
    400: "Bad request: a parameter is wrong (the message says which and why).",
    401: "No API key, or an unknown or revoked one.",
    403: "The key's role may not do this (or a cookie session sent no CSRF token).",
    404: "No such person, photo, face or page.",
    409: "A name matches several people (use a person id); a photo's file changed since it "
    "was indexed; no broker for the workers; the last active admin key cannot be revoked.",
    413: "The upload is larger than the server's limit.",
    422: "The input cannot be used (not a photo, a corrupt photo, a bad parameter, a NUL "
    "character in text).",
    502: "A host of the hosts file cannot be reached or refused (the message names it).",
    503: "Busy, or the catalogue or the workers' broker is unavailable (the message says which).",
}

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text} for status, text in _DESCRIPTIONS.items()
}


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    line: int | None = None,
    column: int | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """The JSON error answer (`line` and `column` locate a query error)."""
    detail: dict[str, object] = {"code": code, "message": message}
    if line is not None:
        detail.update(line=line, column=column)
    return JSONResponse({"error": detail}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI, error_page: ErrorPage) -> None:
    """Answer every error as JSON with a specific status, or with `error_page` (message,
    status) to a browser asking for a page (the pages module, passed in: errors are below
    the pages, never importing them)."""
    app.state.error_page = error_page
    app.add_exception_handler(IDDetectiveError, library_error_response)
    app.add_exception_handler(OSError, _environment_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)


async def library_error_response(request: Request, error: Exception) -> Response:
    """The answer to a library error: its status, code and message (a page for a browser)."""
    status, code = next((s, c) for kind, s, c in _STATUS if isinstance(error, kind))
    if _wants_page(request):
        page: Response = request.app.state.error_page(request, str(error), status)
        return page
    headers: dict[str, str] = {}
    if isinstance(error, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(error, Busy):
        headers["Retry-After"] = str(error.retry_after)
    if isinstance(error, QueryError):
        return error_response(status, code, str(error), line=error.line, column=error.column)
    return error_response(status, code, str(error), headers=headers)


async def _environment_error(request: Request, error: Exception) -> Response:
    """A full disk or a read-only data directory: 503 store_unavailable, saying where."""
    assert isinstance(error, OSError)
    log.error("environment failure: %s", error)
    return await library_error_response(request, from_os_error(error))


def _wants_page(request: Request) -> bool:
    """A browser asking for a page (not the API) gets an HTML error page."""
    path = request.url.path
    api = path.startswith("/api/") or path in ("/metrics", "/healthz")
    return not api and "text/html" in request.headers.get("accept", "")


async def _validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in item.get("loc", ()))
        problems.append(f"{where}: {item.get('msg', 'invalid')}")
    return error_response(422, "invalid_request", "; ".join(problems) or "invalid request")


async def _http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, HTTPException)
    headers = dict(error.headers or {})
    code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
    return error_response(error.status_code, code, str(error.detail), headers=headers)


async def _unexpected_error(request: Request, error: Exception) -> JSONResponse:
    log.exception("unexpected error answering %s %s", request.method, request.url.path)
    return error_response(500, "internal", "internal error; the server log has the details")
