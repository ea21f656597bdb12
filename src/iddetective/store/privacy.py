"""The opt-out registry and retention, for both stores (written once over the store's `sql`,
store/dialect.py; docs/privacy.md; erasure is store/erasing.py). Opted-out faces are kept as
embeddings in their own table, never returned by any read of the catalogue. `compact`, which
rewrites the storage so the bytes of erased rows are gone, is each database's own
(`Sql.compact`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np

from ..entities import OptOut, PhotoAnalysis
from ..errors import NotFound, UsageError
from ..matching import distances
from .dialect import Sql, timestamp
from .erasing import new_token

__all__ = ["Privacy"]

class Privacy:
    """Opt-out and retention methods of both stores."""

    sql: Sql
    _audit_event: Callable[..., None]
    model_dimension: Callable[[str], int | None]
    _record_model: Callable[[str, int], None]

    # -- the opt-out registry --------------------------------------------------------------
    def add_optout(
        self, model: str, embeddings: np.ndarray, actor: str, *, within: float
    ) -> OptOut:
        """Keep faces' embeddings (one, or n x d) in the blocklist under one token; each
        blocks every face of `model` at most `within` from it (the model's opt-out
        threshold when the opt-out is made, kept with it)."""
        if not 0 < within <= 2:
            raise UsageError(f"an opt-out's reach must be in (0, 2], not {within}")
        vectors = np.asarray(embeddings, dtype=np.float32).reshape(-1, np.shape(embeddings)[-1])
        with self.sql.write():
            self._record_model(model, vectors.shape[1])
            token = new_token("optout")
            self._audit_event("optout", actor, token, len(vectors))
            created = timestamp()
            self.sql.execute_many(
                "INSERT INTO optout (token, model, embedding, created_at, reach) "
                "VALUES (?, ?, ?, ?, ?)",
                [(token, model, self.sql.vector(v), created, within) for v in vectors],
            )
        return OptOut(token, created, len(vectors))

    def optouts(self) -> list[OptOut]:
        """The opt-outs, oldest first: tokens, times and face counts, never the embeddings."""
        rows = self.sql.rows(
            "SELECT token, min(created_at), count(*) FROM optout GROUP BY token ORDER BY min(id)"
        )
        return [OptOut(r[0], self.sql.time(r[1]), int(r[2])) for r in rows]

    def remove_optout(self, token: str, actor: str) -> OptOut:
        """Withdraw an opt-out (the person asked to be findable again)."""
        with self.sql.write():
            rows = self.sql.rows(
                "SELECT token, min(created_at), count(*) FROM optout WHERE token = ? "
                "GROUP BY token",
                (token,),
            )
            if not rows:
                raise NotFound(f"no opt-out has the token {token!r}")
            self.sql.execute("DELETE FROM optout WHERE token = ?", (token,))
            count = int(rows[0][2])
            self._audit_event("optout_removed", actor, new_token("optout_removed"), count)
        return OptOut(rows[0][0], self.sql.time(rows[0][1]), count)

    def optout_embeddings(self, model: str) -> np.ndarray:
        """The blocked embeddings of `model` (n x d float32) for matching, never for display."""
        _, vectors = self.sql.vector_rows(
            "SELECT embedding FROM optout WHERE model = ? ORDER BY id",
            (model,),
            0,
            self.model_dimension(model),
        )
        return vectors

    def opted_out(self, analysis: PhotoAnalysis) -> list[bool]:
        """For each face of `analysis`: is it within the reach of a blocked face?"""
        rows, blocked = self.sql.vector_rows(
            "SELECT reach, embedding FROM optout WHERE model = ? ORDER BY id",
            (analysis.model,),
            1,
        )
        if not rows or not analysis.faces:
            return [False] * len(analysis.faces)
        reach = np.array([row[0] for row in rows], dtype=np.float32)
        vectors = np.stack([face.embedding for face in analysis.faces])
        within = distances.euclidean_many(vectors, blocked) <= reach[None, :]
        return [bool(hit) for hit in np.any(within, axis=1)]

    # -- retention ---------------------------------------------------------------------------
    def purge_audit(self, older_than_days: int) -> int:
        """Delete audit entries older than this many days; returns how many."""
        cutoff = (datetime.now(UTC) - timedelta(days=older_than_days)).isoformat(timespec="seconds")
        with self.sql.write("none"):
            return self.sql.execute("DELETE FROM audit WHERE at < ?", (cutoff,))
