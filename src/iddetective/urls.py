"""URLs as they may be shown or written down: never a password (PostgreSQL, Redis, photos).

Written once here for every URL the project shows: a catalogue's or broker's URL keeps its
user name (`masked_url`), a photo's URL loses that too (`masked_url(url, user=True)`,
sources/fetch.py), and a URL still to connect with leaves the password to libpq
(`without_password`). The host part is kept as written (an IPv6 address in brackets, the
port), so the result parses back.
"""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit, urlunsplit

__all__ = ["masked_url", "without_password"]

MASK = "***"


def masked_url(url: str, *, user: bool = False) -> str:
    """`url` with its password, if any, replaced by `***` (with `user`, the user name and
    password together): fit to show on a page or in a log."""
    parts = _split(url)
    if parts is None:
        return _masked_text(url)
    if parts.password is None and not (user and "@" in parts.netloc):
        return url
    credentials = MASK if user else f"{parts.username or ''}:{MASK}"
    return urlunsplit(parts._replace(netloc=f"{credentials}@{_host(parts)}"))


def without_password(url: str) -> str:
    """`url` with its password, if any, left out: a URL still to connect with, where libpq's
    PGPASSWORD or ~/.pgpass supplies the password."""
    parts = _split(url)
    if parts is None:
        return _masked_text(url)
    if parts.password is None:
        return url
    user = parts.netloc.rpartition("@")[0].partition(":")[0]
    netloc = f"{user}@{_host(parts)}" if user else _host(parts)
    return urlunsplit(parts._replace(netloc=netloc))


def _split(url: str) -> SplitResult | None:
    """`url`'s parts, or None for a URL urlsplit refuses (a bad IPv6 address, a bad port)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError:
        return None
    return parts


def _host(parts: SplitResult) -> str:
    """The host and port as written, brackets of an IPv6 address included."""
    return parts.netloc.rpartition("@")[2]


def _masked_text(url: str) -> str:
    """A URL that does not parse, with everything before the last `@` of its authority
    masked: what cannot be parsed may still hold a password."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return url
    authority, slash, path = rest.partition("/")
    if "@" not in authority:
        return url
    return f"{scheme}://{MASK}@{authority.rpartition('@')[2]}{slash}{path}"
