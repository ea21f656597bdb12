"""Erasure's deletions, the opt-out registry and retention in the SQLite store
(docs/privacy.md; what erasing does is written once for both stores in store/erasing.py).

`compact` rewrites the file so the bytes of erased rows are gone, not only unlinked. Opted-out faces
are kept as embeddings in their own table, never returned by any read of the catalogue.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta

import numpy as np

from .. import distances
from ..entities import OptOut, PhotoAnalysis, PhotoRef
from ..errors import NotFound
from .dialect import timestamp
from .erasing import new_token
from .sqlite_sql import blob_vectors, chunks

__all__ = ["SqlitePrivacy"]

OPTOUT = distances.OPTOUT_THRESHOLD


class SqlitePrivacy:
    """Privacy methods of `SqliteStore` (a mixin: it uses the store's connection)."""

    _db: sqlite3.Connection
    _write: Callable[[], AbstractContextManager[sqlite3.Connection]]
    _photos: Callable[[Iterable[int]], dict[int, PhotoRef]]
    _bump_epoch: Callable[[], None]
    _audit_event: Callable[..., None]

    def _delete_faces(self, face_ids: list[int]) -> tuple[list[int], tuple[PhotoRef, ...]]:
        """Delete faces; returns the photos they were in, and those left with no face (also
        deleted)."""
        db = self._db
        touched: set[int] = set()
        for chunk in chunks(face_ids):
            marks = ",".join("?" * len(chunk))
            touched |= {
                r[0] for r in db.execute(f"SELECT photo_id FROM face WHERE id IN ({marks})", chunk)
            }
            db.execute(f"DELETE FROM face WHERE id IN ({marks})", chunk)
        emptied: list[int] = []
        for chunk in chunks(sorted(touched)):
            marks = ",".join("?" * len(chunk))
            db.execute(
                f"UPDATE photo SET face_count = (SELECT count(*) FROM face "
                f"WHERE face.photo_id = photo.id) WHERE id IN ({marks})",
                chunk,
            )
            emptied += [
                r[0]
                for r in db.execute(
                    f"SELECT id FROM photo WHERE id IN ({marks}) AND face_count = 0", chunk
                )
            ]
        photos = self._photos(iter(emptied))
        db.executemany("DELETE FROM photo WHERE id = ?", [(i,) for i in emptied])
        if face_ids:
            self._bump_epoch()
        return sorted(touched), tuple(photos[i] for i in emptied)

    # -- the opt-out registry --------------------------------------------------------------
    def add_optout(self, model: str, embeddings: np.ndarray, actor: str) -> OptOut:
        """Keep faces' embeddings (one, or n x d) in the blocklist under one token."""
        vectors = np.asarray(embeddings, dtype="<f4").reshape(-1, np.shape(embeddings)[-1])
        with self._write() as db:
            token = new_token("optout")
            self._audit_event("optout", actor, token, len(vectors))
            created = timestamp()
            db.executemany(
                "INSERT INTO optout (token, model, embedding, created_at) VALUES (?, ?, ?, ?)",
                [(token, model, vector.tobytes(), created) for vector in vectors],
            )
        return OptOut(token, created, len(vectors))

    def optouts(self) -> list[OptOut]:
        """The opt-outs, oldest first: tokens, times and face counts, never the embeddings."""
        rows = self._db.execute(
            "SELECT token, min(created_at), count(*) FROM optout GROUP BY token ORDER BY min(id)"
        ).fetchall()
        return [OptOut(r[0], r[1], r[2]) for r in rows]

    def remove_optout(self, token: str, actor: str) -> OptOut:
        """Withdraw an opt-out (the person asked to be findable again)."""
        with self._write() as db:
            row = db.execute(
                "SELECT token, min(created_at), count(*) FROM optout WHERE token = ? "
                "GROUP BY token",
                (token,),
            ).fetchone()
            if row is None:
                raise NotFound(f"no opt-out has the token {token!r}")
            db.execute("DELETE FROM optout WHERE token = ?", (token,))
            self._audit_event("optout_removed", actor, new_token("optout_removed"), row[2])
        return OptOut(row[0], row[1], row[2])

    def optout_embeddings(self, model: str) -> np.ndarray:
        """The blocked embeddings of `model` (n x d float32) for matching, never for display."""
        rows = self._db.execute(
            "SELECT embedding FROM optout WHERE model = ? ORDER BY id", (model,)
        ).fetchall()
        return blob_vectors([r[0] for r in rows])

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
        cutoff = (datetime.now(UTC) - timedelta(days=older_than_days)).isoformat(timespec="seconds")
        with self._write() as db:
            return db.execute("DELETE FROM audit WHERE at < ?", (cutoff,)).rowcount

    def compact(self) -> None:
        """Rewrite the storage so deleted data is gone from the files, not only unlinked."""
        # Deleted rows linger in free pages and the WAL until both are rewritten, and the
        # text index keeps deleted trigrams in old segments until they are merged.
        self._db.execute("INSERT INTO person_text (person_text) VALUES ('optimize')")
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.execute("VACUUM")
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
