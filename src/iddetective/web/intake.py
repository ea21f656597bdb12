"""What a request must pass before its body is read: a known caller, then a size in bounds.

FastAPI reads (and spools to disk) a multipart body before any dependency runs, so the key
check of a route comes too late to protect the disk: a request with no key could make the
server store a gigabyte before it answered 401. This ASGI middleware runs first: a request
that may carry a body (any method but GET, HEAD, OPTIONS) must authenticate, from its
headers alone, and declare no more than the limit; then its body is counted as it streams
in (chunked bodies declare no size) and cut off, 413, as soon as it passes the limit.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import IDDetectiveError
from .auth import caller_of
from .errors import UploadTooLarge, error_response, library_error_response

__all__ = ["ENVELOPE_BYTES", "OPEN_FORM_BYTES", "OPEN_PATHS", "RequestIntake"]

#: What a request body may exceed the upload limit by: the multipart envelope, other fields.
ENVELOPE_BYTES = 64 * 1024
#: Paths that take a body from callers not logged in yet (their small forms only).
OPEN_PATHS = frozenset({"/login", "/logout"})
#: The body limit of those paths.
OPEN_FORM_BYTES = 64 * 1024
_BODILESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class RequestIntake:
    """ASGI middleware: authenticate, check the declared size, then count the body."""

    def __init__(self, app: ASGIApp, upload_limit: Callable[[], int]) -> None:
        self.app = app
        self.upload_limit = upload_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _BODILESS_METHODS:
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        uploads = self.upload_limit()
        open_path = request.url.path in OPEN_PATHS
        limit = OPEN_FORM_BYTES if open_path else uploads + ENVELOPE_BYTES
        limits = f"limit of {limit:,} bytes" + (
            "" if open_path else f" (uploads may be {uploads:,} bytes)"
        )
        try:
            if not open_path:
                await run_in_threadpool(caller_of, request)
            declared = _declared_size(request)
            if declared is not None and declared > limit:
                raise UploadTooLarge(
                    f"the request body declares {declared:,} bytes, over this server's {limits}"
                )
        except IDDetectiveError as error:
            response = await library_error_response(request, error)
            response.headers["Connection"] = "close"  # rather than read the body to discard it
            await response(scope, receive, send)
            return
        body = _CountedBody(scope, receive, send, limit)
        try:
            await self.app(scope, body.receive, body.send)
        except Exception:
            if not body.over:
                raise
        if body.over:
            await body.refuse(f"the request body is over this server's {limits}")


def _declared_size(request: Request) -> int | None:
    value = request.headers.get("content-length", "")
    return int(value) if value.isdigit() else None  # the HTTP server refuses a bad one


class _CountedBody:
    """The body stream of one request, ended once more than `limit` bytes came through.

    Past the limit the app is told the client left (it stops reading: nothing more is
    received or spooled), whatever it answers to that is dropped, and `refuse` answers 413.
    """

    def __init__(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        self.scope, self._receive, self._send, self.limit = scope, receive, send, limit
        self.received = 0
        self.over = False
        self.started = False  # the app's answer began before the body passed the limit

    async def receive(self) -> Message:
        if self.over:
            return {"type": "http.disconnect"}
        event = await self._receive()
        if event["type"] == "http.request":
            self.received += len(event.get("body", b""))
            if self.received > self.limit:
                self.over = True
                return {"type": "http.disconnect"}
        return event

    async def send(self, message: Message) -> None:
        if self.over and not self.started:
            return
        self.started = True
        await self._send(message)

    async def refuse(self, message: str) -> None:
        """Answer 413 with `message`, unless the app's answer had begun already."""
        if not self.started:
            refusal = error_response(413, "too_large", message, headers={"Connection": "close"})
            await refusal(self.scope, self._receive, self._send)
