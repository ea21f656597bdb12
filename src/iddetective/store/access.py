"""API keys and the audit log, for both stores (written once over each store's SQL primitives,
store/dialect.py). Nothing else touches these rows, so their writes take no writer lock in
PostgreSQL (`_write("none")`)."""

from __future__ import annotations

from ..entities import ApiKey, AuditEntry
from ..errors import LastAdminKey, NotFound
from .dialect import REVOKE_KEY, Dialect, Row, timestamp

__all__ = ["INSERT_AUDIT", "Access"]

#: Append an entry to the audit log.
INSERT_AUDIT = (
    "INSERT INTO audit (at, actor, kind, query_sha256, query_text, results) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
_KEY_COLUMNS = "id, role, label, created_at, revoked_at, hash"


class Access(Dialect):
    """API key and audit methods of both stores (over the store's primitives)."""

    def add_key(self, key: ApiKey) -> None:
        """Store a new API key (its hash only)."""
        with self._write("none"):
            self._execute(
                "INSERT INTO api_key (id, hash, role, label, created_at) VALUES (?, ?, ?, ?, ?)",
                (key.id, key.hash, key.role, key.label, key.created_at),
            )

    def keys(self) -> list[ApiKey]:
        """Every API key, oldest first."""
        rows = self._rows(f"SELECT {_KEY_COLUMNS} FROM api_key ORDER BY created_at, id")
        return [self._api_key(r) for r in rows]

    def key(self, key_id: str) -> ApiKey | None:
        """The API key with this id, if there is one."""
        rows = self._rows(f"SELECT {_KEY_COLUMNS} FROM api_key WHERE id = ?", (key_id,))
        return self._api_key(rows[0]) if rows else None

    def revoke_key(self, key_id: str) -> ApiKey:
        """Revoke a key, unless it is the last active admin key (LastAdminKey)."""
        with self._write("none"):
            # Two revokes at once must not each see the other's admin key still active.
            self._rows(
                "SELECT id FROM api_key WHERE role = 'admin' AND revoked_at IS NULL"
                + self.FOR_UPDATE
            )
            self._execute(REVOKE_KEY, (timestamp(), key_id))
        key = self.key(key_id)
        if key is None:
            raise NotFound(f"no API key has the id {key_id!r}")
        if key.active:
            raise LastAdminKey(key_id)  # the only key REVOKE_KEY leaves active
        return key

    def record_search(
        self,
        actor: str,
        kind: str,
        results: int,
        query_sha256: str | None = None,
        query_text: str | None = None,
    ) -> None:
        """Append a search to the audit log."""
        self._append_audit((timestamp(), actor, kind, query_sha256, query_text, results))

    def _append_audit(self, entry: Row) -> None:
        """Write one audit entry (the columns of `INSERT_AUDIT`)."""
        with self._write("none"):
            self._execute(INSERT_AUDIT, entry)

    def audit(self, limit: int, before: int | None = None) -> list[AuditEntry]:
        """The latest `limit` audit entries (those before the id `before`), newest first."""
        rows = self._rows(
            "SELECT id, at, actor, kind, query_sha256, query_text, results, people FROM audit "
            "WHERE id < ? ORDER BY id DESC LIMIT ?",
            (before if before is not None else 2**62, limit),
        )
        return [
            AuditEntry(r[0], self._time(r[1]), r[2], r[3], r[4], r[5], r[6], r[7]) for r in rows
        ]

    def _api_key(self, row: Row) -> ApiKey:
        return ApiKey(
            row[0], row[1], row[2], self._time(row[3]), self._time_or_none(row[4]), row[5]
        )
