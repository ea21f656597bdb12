"""Erasure's deletions, the opt-out registry and retention in the PostgreSQL store
(docs/privacy.md; what erasing does is written once for both stores in store/erasing.py).

As in the SQLite store (store/sqlite_privacy.py): opted-out faces are kept as embeddings in
their own table, never returned by any read of the catalogue. `compact` rewrites the tables
(VACUUM FULL), so deleted rows are gone from the table files, not only marked dead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from datetime import timedelta

import numpy as np
from psycopg import errors

from .. import distances
from ..entities import OptOut, PhotoAnalysis, PhotoRef
from ..errors import NotFound
from .erasing import new_token
from .postgres_sql import PostgresBase, iso, now, vectors_of

__all__ = ["PostgresPrivacy"]

OPTOUT = distances.OPTOUT_THRESHOLD

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


class PostgresPrivacy(PostgresBase):
    """Privacy methods of `PostgresStore` (a mixin over the store's connection)."""

    _photos: Callable[[Iterable[int]], dict[int, PhotoRef]]
    _audit_event: Callable[..., None]

    def _delete_faces(self, face_ids: list[int]) -> tuple[list[int], tuple[PhotoRef, ...]]:
        """Delete faces; returns the photos they were in, and those left with no face (also
        deleted)."""
        touched = sorted(
            {
                r[0]
                for r in self._all(
                    "DELETE FROM face WHERE id = ANY(%s) RETURNING photo_id", (face_ids,)
                )
            }
        )
        self._db.execute(
            "UPDATE photo SET face_count = (SELECT count(*) FROM face "
            "WHERE face.photo_id = photo.id) WHERE id = ANY(%s)",
            (touched,),
        )
        emptied = [
            r[0]
            for r in self._all(
                "SELECT id FROM photo WHERE id = ANY(%s) AND face_count = 0 ORDER BY id",
                (touched,),
            )
        ]
        photos = self._photos(emptied)
        self._db.execute("DELETE FROM photo WHERE id = ANY(%s)", (emptied,))
        if face_ids:
            self._bump_epoch()
        return touched, tuple(photos[i] for i in emptied)

    # -- the opt-out registry --------------------------------------------------------------
    def add_optout(self, model: str, embeddings: np.ndarray, actor: str) -> OptOut:
        """Keep faces' embeddings (one, or n x d) in the blocklist under one token."""
        vectors = np.asarray(embeddings, dtype=np.float32).reshape(-1, np.shape(embeddings)[-1])
        with self._write() as db:
            token = new_token("optout")
            self._audit_event("optout", actor, token, len(vectors))
            created = now()
            with db.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO optout (token, model, embedding, created_at) "
                    "VALUES (%s, %s, %s, %s)",
                    [(token, model, vector, created) for vector in vectors],
                )
        return OptOut(token, iso(created), len(vectors))

    def optouts(self) -> list[OptOut]:
        """The opt-outs, oldest first: tokens, times and face counts, never the embeddings."""
        rows = self._all(
            "SELECT token, min(created_at), count(*) FROM optout GROUP BY token ORDER BY min(id)"
        )
        return [OptOut(r[0], iso(r[1]), r[2]) for r in rows]

    def remove_optout(self, token: str, actor: str) -> OptOut:
        """Withdraw an opt-out (the person asked to be findable again)."""
        with self._write() as db:
            row = self._one(
                "SELECT token, min(created_at), count(*) FROM optout WHERE token = %s "
                "GROUP BY token",
                (token,),
            )
            if row is None:
                raise NotFound(f"no opt-out has the token {token!r}")
            db.execute("DELETE FROM optout WHERE token = %s", (token,))
            self._audit_event("optout_removed", actor, new_token("optout_removed"), row[2])
        return OptOut(row[0], iso(row[1]), row[2])

    def optout_embeddings(self, model: str) -> np.ndarray:
        """The blocked embeddings of `model` (n x d float32) for matching, never for display."""
        rows = self._binary("SELECT embedding FROM optout WHERE model = %s ORDER BY id", (model,))
        return vectors_of(rows, 0)

    def opted_out(self, analysis: PhotoAnalysis) -> list[bool]:
        """For each face of `analysis`: is it within the opt-out threshold of a blocked face?"""
        blocked = self.optout_embeddings(analysis.model)
        if not len(blocked) or not analysis.faces:
            return [False] * len(analysis.faces)
        vectors = np.stack([face.embedding for face in analysis.faces])
        nearest = distances.euclidean_many(vectors, blocked).min(axis=1)
        return [bool(d <= OPTOUT) for d in nearest]

    # -- retention ---------------------------------------------------------------------------
    def purge_audit(self, older_than_days: int) -> int:
        """Delete audit entries older than this many days; returns how many."""
        cutoff = now() - timedelta(days=older_than_days)
        with self._write("none") as db:
            return db.execute("DELETE FROM audit WHERE at < %s", (cutoff,)).rowcount

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
