"""API keys and roles: who may do what.

A key reads `idd_<id>_<secret>`. The catalogue keeps only the id, the role and the SHA-256 of
the whole key: keys are 192 random bits, so a fast hash is as safe as a slow one here (the
slow hashes are for guessable passwords) and checking a key costs microseconds per request.
The key itself is shown once, when it is created.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import UTC, datetime

from .entities import ApiKey
from .errors import Forbidden, Unauthorized, UsageError
from .store import Store

__all__ = ["ACTIONS", "ROLES", "allows", "authenticate", "check_allowed", "new_key"]

ROLES = ("admin", "search", "ingest")

#: Each action and the roles allowed to do it (admin may do everything).
ACTIONS: dict[str, frozenset[str]] = {
    # Photo, text and query searches, and every view of faces (people's pages, clusters,
    # crops, thumbnails), each audited: seeing someone's faces is searching for them.
    "search": frozenset({"admin", "search"}),
    "ingest": frozenset({"admin", "ingest"}),  # upload photos to index
    "read_stats": frozenset({"admin", "search", "ingest"}),
    "admin": frozenset({"admin"}),  # keys, audit log, metrics, erasing people
    # Naming clusters, moving, rejecting and merging faces, edits and undo, running the
    # clustering: changing who is who is writing to the catalogue, which searching alone may
    # not. Seeing the faces it changes takes `search`: both are admin's.
    "curate": frozenset({"admin", "ingest"}),
}

_KEY_PATTERN = re.compile(r"^idd_([0-9a-f]{12})_([A-Za-z0-9_-]{32})$")


def new_key(store: Store, role: str, label: str = "") -> tuple[str, ApiKey]:
    """Create and store a key with `role`; returns (the key to show once, its stored record)."""
    if role not in ROLES:
        raise UsageError(f"unknown role {role!r}: choose one of {', '.join(ROLES)}")
    key_id = secrets.token_hex(6)
    secret = f"idd_{key_id}_{secrets.token_urlsafe(24)}"
    record = ApiKey(
        id=key_id,
        role=role,
        label=label,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        hash=_digest(secret),
    )
    store.add_key(record)
    return secret, record


def authenticate(store: Store, secret: str | None) -> ApiKey:
    """The active key matching `secret`; `Unauthorized` otherwise (same message either way)."""
    match = _KEY_PATTERN.match(secret or "")
    if match is None:
        raise Unauthorized("an API key is required (Authorization: Bearer idd_…)")
    key = store.key(match.group(1))
    if key is None or not hmac.compare_digest(key.hash, _digest(secret or "")):
        raise Unauthorized("unknown API key")
    if not key.active:
        raise Unauthorized("this API key was revoked")
    return key


def allows(key: ApiKey, action: str) -> bool:
    """Whether the key's role may do `action` (a `KeyError` for an unknown action)."""
    return key.role in ACTIONS[action]


def check_allowed(key: ApiKey, action: str) -> None:
    """Raise `Forbidden` unless the key's role may do `action`."""
    if not allows(key, action):
        allowed = " or ".join(sorted(ACTIONS[action]))
        raise Forbidden(f"the {key.role} role may not {action.replace('_', ' ')}; needs {allowed}")


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
