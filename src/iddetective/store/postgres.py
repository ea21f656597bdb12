"""The server catalogue: PostgreSQL with pgvector (embeddings) and pg_trgm (substring search).

It behaves as the SQLite store does (store/sqlite.py is the reference; the contract suite in
tests/test_store_contract.py runs against both), for many writers on many machines: every
write is one transaction; photos are unique by SHA-256 and inserted with `ON CONFLICT`, so
two writers saving the same bytes store one photo; writes that change who is who take a
transaction-scoped advisory lock, where SQLite takes its one write lock (store/postgres_sql.py
says which). Readers use autocommit statements and only ever see committed data. The
statements are `SqlStore`'s (sql_store.py), run by `PostgresSql`; people's text is searched
with pg_trgm (postgres_text.py).

The URL is libpq's: `postgresql://user:password@host:port/database` (docs/scaling.md).
"""

from __future__ import annotations

import psycopg

from ..errors import StoreError
from ..urls import masked_url
from .dialect import check_version
from .postgres_migrations import MIGRATIONS, migrate, schema_version
from .postgres_sql import POOL_SIZE, PoolSize, PostgresSql, vector_oid
from .postgres_text import PostgresText
from .sql_store import SqlStore

__all__ = ["PostgresStore"]


class PostgresStore(SqlStore):
    """`Store` over one PostgreSQL database (pgvector and pg_trgm installed in it), on a pool
    of at least `pool[0]` and at most `pool[1]` connections."""

    sql: PostgresSql
    text: PostgresText

    def __init__(self, url: str, *, readonly: bool = False, pool: PoolSize = POOL_SIZE) -> None:
        self.url = masked_url(str(url))
        self.readonly = readonly
        try:
            db = psycopg.connect(str(url), autocommit=True)
        except psycopg.Error as error:
            raise StoreError(f"cannot connect to {self.url}: {error}") from None
        with db:  # migrated and checked on a connection of its own, before the pool opens any
            if not readonly:
                migrate(db, self.url)
            check_version(schema_version(db), len(MIGRATIONS), self.url)
            vector_oid(db, self.url)
        sql = PostgresSql(str(url), self.url, readonly=readonly, pool=pool)
        super().__init__(sql, PostgresText(sql))
