"""Security headers on every answer: what the browser may load and run, framing, referrers,
and no caching of answers that carry personal data.

Referrers are kept to this site (`same-origin`), not dropped (`no-referrer`): under
`no-referrer` Chromium sends `Origin: null` with the pages' own form posts, which the login
form must refuse as it would a form of another site (auth.check_same_origin).

The pages load their scripts, styles and images from the app itself only (no inline script,
no style attributes: search.js positions face boxes through the CSSOM), so the policy
allows nothing else. FastAPI's /docs and /redoc pages load Swagger UI and ReDoc from their
CDN with an inline bootstrap script; they show the schema only, and get a policy allowing
exactly that. Answers that set no Cache-Control (every JSON answer, error or not, and the
pages) get `no-store`; thumbnails and crops keep their own private caching, and /static
files none (browsers revalidate them).
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CONTENT_SECURITY_POLICY", "DOCS_CONTENT_SECURITY_POLICY", "SecurityHeaders"]

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
_CDN = "https://cdn.jsdelivr.net"
DOCS_CONTENT_SECURITY_POLICY = (
    f"default-src 'self'; script-src 'self' 'unsafe-inline' {_CDN}; "
    f"style-src 'self' 'unsafe-inline' {_CDN}; img-src 'self' data: https:; "
    "worker-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
_DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc"})
_FIXED = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


class SecurityHeaders:
    """ASGI middleware adding the headers above to every HTTP answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                add_security_headers(MutableHeaders(scope=message), path)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def add_security_headers(headers: MutableHeaders, path: str) -> None:
    """Set the security headers of an answer to `path` (Cache-Control only if unset)."""
    docs = path in _DOCS_PATHS
    headers["Content-Security-Policy"] = (
        DOCS_CONTENT_SECURITY_POLICY if docs else CONTENT_SECURITY_POLICY
    )
    for name, value in _FIXED.items():
        headers[name] = value
    if "cache-control" not in headers and not path.startswith("/static/"):
        headers["Cache-Control"] = "no-store"
