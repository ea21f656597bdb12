"""The server catalogue: PostgreSQL with pgvector (embeddings) and pg_trgm (substring search).

It behaves as the SQLite store does (store/sqlite.py is the reference; the contract suite in
tests/test_store_contract.py runs against both), for many writers on many machines: every
write is one transaction; photos are unique by SHA-256 and inserted with `ON CONFLICT`, so
two writers saving the same bytes store one photo; writes that change who is who take a
transaction-scoped advisory lock, where SQLite takes its one write lock (store/postgres_sql.py
says which). Readers use autocommit statements and only ever see committed data.

The URL is libpq's: `postgresql://user:password@host:port/database` (docs/scaling.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import psycopg
from psycopg import errors

from ..entities import IndexedPhoto, KnownPhoto, Outcome, SaveResult
from ..errors import StoreError
from ..urls import masked_url
from .access import Access
from .checking import Checking
from .clusters import Clusters
from .dialect import Lock, check_version
from .erasing import Erasing
from .photos import Photos
from .postgres_dialect import PostgresDialect
from .postgres_migrations import MIGRATIONS, migrate, schema_version
from .postgres_sql import PHOTO_LOCK_CLASS
from .postgres_text import PostgresText
from .privacy import Privacy
from .saving import Saving

__all__ = ["PostgresStore"]


class PostgresStore(
    PostgresText,
    Privacy,
    Erasing,
    Saving,
    Clusters,
    Checking,
    Photos,
    Access,
    PostgresDialect,
):
    """`Store` over one PostgreSQL database (pgvector and pg_trgm installed in it)."""

    def __init__(self, url: str, *, readonly: bool = False) -> None:
        self._dsn = str(url)
        self.url = masked_url(self._dsn)
        self.readonly = readonly
        try:
            self._db = psycopg.connect(self._dsn, autocommit=True)
        except psycopg.Error as error:
            raise StoreError(f"cannot connect to {self.url}: {error}") from None
        try:
            self._check_schema()
            self._configure(self._db)
        except BaseException:
            self._close_all()
            raise

    # -- connection and schema -----------------------------------------------------------------
    def _check_schema(self) -> None:
        if not self.readonly:
            migrate(self._db, self.url)
        check_version(schema_version(self._db), len(MIGRATIONS), self.url)

    def close(self) -> None:
        self._close_all()

    # -- ingestion -----------------------------------------------------------------------------
    def save(self, outcomes: Sequence[Outcome]) -> list[SaveResult]:
        # A label may create a person: that takes the catalogue's exclusive lock. Plain photos
        # only need their SHA-256 to be unique, so savers of those run side by side.
        labelled = any(
            isinstance(o, IndexedPhoto | KnownPhoto) and o.label is not None for o in outcomes
        )
        lock: Lock = "exclusive" if labelled else "shared"
        return self._retrying(lambda: self._save_all(outcomes, lock), lock)

    def _save_all(self, outcomes: Sequence[Outcome], lock: Lock) -> list[SaveResult]:
        if lock == "shared":
            self._lock_photos(outcomes)
        results = [self._save_one(outcome) for outcome in outcomes]
        if any(r.status == "indexed" and r.faces for r in results):
            self._bump_epoch()
        return results

    def _lock_photos(self, outcomes: Sequence[Outcome]) -> None:
        """Lock the batch's SHA-256s and paths, in the order of their hashes: savers sharing
        one wait for each other here, before either holds a row the other needs."""
        keys = {o.file.path for o in outcomes}
        keys |= {o.sha256 for o in outcomes if isinstance(o, IndexedPhoto | KnownPhoto)}
        self._db.execute(
            "SELECT pg_advisory_xact_lock(%s, h) FROM (SELECT DISTINCT hashtext(k) AS h "
            "FROM unnest(%s::text[]) AS k ORDER BY h) AS hashes",
            (PHOTO_LOCK_CLASS, sorted(keys)),
        )

    # -- privacy -------------------------------------------------------------------------------
    def compact(self) -> None:
        """Rewrite the storage so deleted data is gone from the files, not only unlinked."""
        # Deleted rows stay in their pages, marked dead, until the table is rewritten; the
        # write-ahead log keeps them until a checkpoint recycles it (backups and replicas are
        # the operator's to age out: docs/scaling.md).
        vacuum = f"VACUUM (FULL, ANALYZE) {', '.join(_TABLES)}"
        self._reconnecting(lambda: self._db.execute(vacuum))
        # Only superusers and pg_checkpoint members may; the server checkpoints on its own.
        with contextlib.suppress(errors.InsufficientPrivilege):
            self._reconnecting(lambda: self._db.execute("CHECKPOINT"))

    # -- checking ------------------------------------------------------------------------------
    def _engine_problems(self) -> list[str]:
        """None to find from here: PostgreSQL checks its own pages (data checksums, amcheck)
        and the schema enforces what SQLite's foreign key check looks for."""
        return []


#: Every table of the catalogue, rewritten by `compact`.
_TABLES = (
    "person",
    "alias",
    "account",
    "list",
    "list_member",
    "relation",
    "person_text",
    "photo",
    "photo_file",
    "face",
    "face_cluster",
    "face_rejection",
    "failure",
    "optout",
    "erased_label",
    "erase_secret",
    "audit",
    "edit",
    "api_key",
    "meta",
)
