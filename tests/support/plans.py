"""What PostgreSQL plans for the queries of a pgvector index."""

from __future__ import annotations

import numpy as np
from psycopg import sql

from iddetective.vector_index.pgvector import PgvectorIndex

__all__ = ["hnsw_plan"]


def hnsw_plan(index: PgvectorIndex, query: np.ndarray) -> str:
    """The plan (one line) of the statement `index` runs to ask HNSW for the 5 nearest faces
    to `query`, with sorting disabled: the small tables of the tests are cheaper to scan and
    sort, so this shows that the HNSW index can answer the statement (its expression and
    condition match the index's), which the planner then does once a model's rows are many
    (docs/scaling.md shows such a plan)."""
    statement, params = index.nearest_statement(query, 5)
    index._db.execute("SET enable_sort = off")
    try:
        rows = index._db.execute(sql.SQL("EXPLAIN ") + statement, params).fetchall()
    finally:
        index._db.execute("RESET enable_sort")
    return " ".join(row[0] for row in rows)
