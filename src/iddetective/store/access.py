"""API keys and the audit log, for both stores (written once over the store's `sql`,
store/dialect.py). Nothing else touches these rows, so their writes take no writer lock in
PostgreSQL (`write("none")`)."""

from __future__ import annotations

from ..entities import ApiKey, AuditEntry
from ..errors import LastAdminKey, NotFound
from .dialect import Row, Sql, timestamp

__all__ = ["INSERT_AUDIT", "REVOKE_KEY", "Access"]

#: Append an entry to the audit log.
INSERT_AUDIT = (
    "INSERT INTO audit (at, actor, kind, query_sha256, query_text, results) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
#: Revoke a key (parameters: the time, the key's id), unless it is the last active admin
#: key, so that nobody is left able to manage keys (the PostgreSQL store locks the active
#: admin keys first: under READ COMMITTED two revokes at once could each see the other active).
REVOKE_KEY = (
    "UPDATE api_key SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL "
    "AND (role <> 'admin' OR EXISTS (SELECT 1 FROM api_key AS other "
    "WHERE other.role = 'admin' AND other.revoked_at IS NULL AND other.id <> api_key.id))"
)
_KEY_COLUMNS = "id, role, label, created_at, revoked_at, hash"


class Access:
    """API key and audit methods of both stores."""

    sql: Sql

    def add_key(self, key: ApiKey) -> None:
        """Store a new API key (its hash only)."""
        with self.sql.write("none"):
            self.sql.execute(
                "INSERT INTO api_key (id, hash, role, label, created_at) VALUES (?, ?, ?, ?, ?)",
                (key.id, key.hash, key.role, key.label, key.created_at),
            )

    def keys(self) -> list[ApiKey]:
        """Every API key, oldest first."""
        rows = self.sql.rows(f"SELECT {_KEY_COLUMNS} FROM api_key ORDER BY created_at, id")
        return [self._api_key(r) for r in rows]

    def key(self, key_id: str) -> ApiKey | None:
        """The API key with this id, if there is one."""
        rows = self.sql.rows(f"SELECT {_KEY_COLUMNS} FROM api_key WHERE id = ?", (key_id,))
        return self._api_key(rows[0]) if rows else None

    def revoke_key(self, key_id: str) -> ApiKey:
        """Revoke a key, unless it is the last active admin key (LastAdminKey)."""
        with self.sql.write("none"):
            # Two revokes at once must not each see the other's admin key still active.
            self.sql.rows(
                "SELECT id FROM api_key WHERE role = 'admin' AND revoked_at IS NULL"
                + self.sql.FOR_UPDATE
            )
            self.sql.execute(REVOKE_KEY, (timestamp(), key_id))
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
        with self.sql.write("none"):
            self.sql.execute(INSERT_AUDIT, entry)

    def _audit_event(
        self, kind: str, actor: str, token: str, results: int, people: int | None = None
    ) -> None:
        """Write one privacy event (an erasure, an opt-out ...) to the audit log, inside the
        write transaction that makes it: named by its opaque `token`, never by a person."""
        self.sql.execute(
            "INSERT INTO audit (at, actor, kind, query_sha256, query_text, results, people) "
            "VALUES (?, ?, ?, NULL, ?, ?, ?)",
            (timestamp(), actor, kind, token, results, people),
        )

    def audit(self, limit: int, before: int | None = None) -> list[AuditEntry]:
        """The latest `limit` audit entries (those before the id `before`), newest first."""
        rows = self.sql.rows(
            "SELECT id, at, actor, kind, query_sha256, query_text, results, people FROM audit "
            "WHERE id < ? ORDER BY id DESC LIMIT ?",
            (before if before is not None else 2**62, limit),
        )
        return [
            AuditEntry(r[0], self.sql.time(r[1]), r[2], r[3], r[4], r[5], r[6], r[7]) for r in rows
        ]

    def _api_key(self, row: Row) -> ApiKey:
        return ApiKey(
            row[0], row[1], row[2], self.sql.time(row[3]), self.sql.time_or_none(row[4]), row[5]
        )
