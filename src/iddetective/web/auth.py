"""Who is calling: an API key in a header, or a page session made by logging in with a key.

API clients send `Authorization: Bearer idd_…` (or `X-API-Key: idd_…`). The pages log in
once with a key and get a session cookie (HttpOnly, SameSite=Strict). Requests that change
something and are authenticated by that cookie must also carry the session's CSRF token
(`X-CSRF-Token` header, which the pages' script sends), so another site cannot make a
logged-in browser act. The login and logout forms are refused when a browser says another
site sent them (`check_same_origin`), and logging out needs the CSRF token too. Sessions
live in the server's memory: a restart logs everyone out.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import Request

from .. import access
from ..entities import ApiKey
from ..errors import Forbidden, Unauthorized, printable

__all__ = ["SESSION_COOKIE", "Caller", "Sessions", "check_same_origin", "requires"]

SESSION_COOKIE = "idd_session"
SESSION_SECONDS = 12 * 3600
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Session:
    key_id: str
    csrf: str
    expires: float


@dataclass(frozen=True)
class Caller:
    """An authenticated request: its key, and the session's CSRF token if it came by cookie."""

    key: ApiKey
    csrf: str | None = None

    @property
    def actor(self) -> str:
        """How the audit log names this caller."""
        return f"key:{self.key.id}"

    def may(self, action: str) -> bool:
        """Whether this caller may do `action` (access.ACTIONS): the pages show only the
        controls a caller may use."""
        return access.allows(self.key, action)


class Sessions:
    """Page sessions by random token, in memory."""

    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def open(self, key: ApiKey) -> tuple[str, Session]:
        """A new session for `key`: (cookie token, session)."""
        token = secrets.token_urlsafe(32)
        session = Session(key.id, secrets.token_urlsafe(32), time.time() + SESSION_SECONDS)
        with self._lock:
            self._sessions = {t: s for t, s in self._sessions.items() if s.expires > time.time()}
            self._sessions[token] = session
        return token, session

    def get(self, token: str | None) -> Session | None:
        """The live session for the cookie `token`, if any."""
        session = self._sessions.get(token or "")
        return session if session and session.expires > time.time() else None

    def close(self, token: str | None) -> None:
        """End a session (logout)."""
        with self._lock:
            self._sessions.pop(token or "", None)


def caller_of(request: Request) -> Caller:
    """The authenticated caller of `request`; `Unauthorized` if there is none."""
    state = request.app.state
    secret = _header_key(request)
    if secret is not None:
        return Caller(access.authenticate(state.catalogue.store, secret))
    session = state.sessions.get(request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise Unauthorized("an API key is required (Authorization: Bearer idd_…) or log in")
    key = state.catalogue.store.key(session.key_id)
    if key is None or not key.active:
        state.sessions.close(request.cookies.get(SESSION_COOKIE))
        raise Unauthorized("the key this session logged in with was revoked")
    if request.method not in _SAFE_METHODS and not secrets.compare_digest(
        request.headers.get("x-csrf-token", ""), session.csrf
    ):
        raise Forbidden("missing or wrong X-CSRF-Token for a cookie session")
    return Caller(key, session.csrf)


def check_same_origin(request: Request) -> None:
    """Raise `Forbidden` for a form a browser sent from another site.

    Browsers say where a request comes from: `Sec-Fetch-Site` (same-origin, or none when the
    user typed the address) and `Origin`, which must name this server as the request's Host
    header does (or X-Forwarded-Host, set by a reverse proxy: a form of another site cannot
    add headers, so trusting it here lets no other site in). Clients that are not browsers
    send neither and are not refused here.
    """
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise Forbidden(
            f"refused: this form was sent from another site (Sec-Fetch-Site: {printable(site)})"
        )
    origin = request.headers.get("origin")
    hosts = {request.headers.get("host"), request.headers.get("x-forwarded-host")} - {None}
    if origin is not None and urlsplit(origin).netloc not in hosts:
        raise Forbidden(f"refused: this form was sent from another site ({printable(origin)})")


def requires(action: str) -> Callable[[Request], Caller]:
    """A FastAPI dependency: the caller, who must be allowed to do `action` (access.ACTIONS)."""

    def dependency(request: Request) -> Caller:
        caller = caller_of(request)
        access.check_allowed(caller.key, action)
        request.state.caller = caller
        return caller

    return dependency


def _header_key(request: Request) -> str | None:
    authorization = request.headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthorized("the Authorization header must read: Bearer idd_…")
        return value.strip()
    return request.headers.get("x-api-key")
