"""Service URLs (PostgreSQL, Redis) as they may be shown or written down: never a password.

`fetch.py` masks the URLs of photos it downloads its own way (user names too).
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

__all__ = ["masked_url", "without_password"]


def masked_url(url: str) -> str:
    """`url` with its password, if any, replaced by `***`: fit to show on a page or in a log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}:" if parts.username else ":"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}***@{host}"))


def without_password(url: str) -> str:
    """`url` with its password, if any, left out: a URL still to connect with, where libpq's
    PGPASSWORD or ~/.pgpass supplies the password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}@{host}" if parts.username else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))
