"""The embedding models of the catalogue, for both stores (written once over the store's `sql`,
store/dialect.py): every stored vector records its model, and each model the dimension of its
vectors.

A model's dimension is recorded in the `model` table with its first vector (a face's or an
opt-out's), in the transaction storing it; a later vector of another length is refused with a
`StoreError` naming the model and both dimensions, so reads of one model's vectors always
stack. On PostgreSQL that first vector also gets the model its own HNSW index
(postgres_sql.py's `index_model`).
"""

from __future__ import annotations

from ..entities import StoredModel
from ..errors import StoreError
from .dialect import Sql, timestamp

__all__ = ["EmbeddingModels"]


class EmbeddingModels:
    """The models of both stores' vectors and their dimensions."""

    sql: Sql

    def models(self) -> list[StoredModel]:
        """Every model the catalogue has stored a vector of, in the order first seen."""
        rows = self.sql.rows("SELECT name, dimension, first_seen FROM model ORDER BY id")
        return [StoredModel(r[0], int(r[1]), self.sql.time(r[2])) for r in rows]

    def model_dimension(self, model: str) -> int | None:
        """The dimension recorded for `model`'s vectors; None before its first is stored."""
        found = self.sql.scalar("SELECT dimension FROM model WHERE name = ?", (model,))
        return None if found is None else int(found)

    def _record_model(self, model: str, dimension: int) -> None:
        """Inside a write that stores a vector of `model` with `dimension` numbers: record the
        model with its first vector, or refuse a vector whose length is not the one recorded."""
        recorded = self.model_dimension(model)
        if recorded is None:
            inserted = self.sql.scalar(
                "INSERT INTO model (name, dimension, first_seen) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO NOTHING RETURNING id",
                (model, dimension, timestamp()),
            )
            if inserted is not None:
                self.sql.index_model(int(inserted), model, dimension)
                return
            # Another PostgreSQL writer recorded it since our look (and committed: ON
            # CONFLICT waited for it).
            recorded = self.model_dimension(model)
        _refuse_another(model, dimension, recorded)


def _refuse_another(model: str, dimension: int, recorded: int | None) -> None:
    if recorded is not None and recorded != dimension:
        raise StoreError(
            f"refused a {dimension}-dimensional vector of the model {model!r}: the "
            f"catalogue records that model's vectors as {recorded}-dimensional"
        )
