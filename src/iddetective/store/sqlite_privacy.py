"""Erasure, the opt-out registry and retention in the SQLite store (docs/privacy.md).

Erasing removes rows in one transaction and the audit log records it under an opaque token;
`compact` then rewrites the file so the bytes are gone, not only unlinked. Opted-out faces
are kept as embeddings in their own table, never returned by any read of the catalogue.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta

import numpy as np

from .. import distances
from ..entities import Erasure, OptOut, PhotoAnalysis, PhotoRef
from ..errors import NotFound
from .dialect import timestamp
from .sqlite_sql import blob_vectors, chunks

__all__ = ["SqlitePrivacy"]

OPTOUT = distances.OPTOUT_THRESHOLD


class SqlitePrivacy:
    """Privacy methods of `SqliteStore` (a mixin: it uses the store's connection)."""

    _db: sqlite3.Connection
    _write: Callable[[], AbstractContextManager[sqlite3.Connection]]
    _photos: Callable[[Iterator[int]], dict[int, PhotoRef]]
    _bump_epoch: Callable[[], None]
    _delete_person_text: Callable[[str], None]
    forget_edits_of: Callable[[str], int]

    def erase_person(self, person_id: str, actor: str) -> Erasure:
        """Remove the person, their faces, and photos left with no face, in one transaction.

        The audit log gets one `erase` entry naming an opaque token, never the person.
        """
        with self._write() as db:
            if db.execute("SELECT 1 FROM person WHERE id = ?", (person_id,)).fetchone() is None:
                raise NotFound(f"no person has the id {person_id!r}")
            faces = [
                r[0] for r in db.execute("SELECT id FROM face WHERE person_id = ?", (person_id,))
            ]
            emptied = self._delete_faces(faces)
            self._delete_person_text(person_id)
            self.forget_edits_of(person_id)
            db.execute("DELETE FROM person WHERE id = ?", (person_id,))
            token = self._audit_token("erase", actor, len(faces))
        return Erasure(token, tuple(sorted(faces)), emptied)

    def erase_faces(self, face_ids: Sequence[int], actor: str, kind: str) -> Erasure:
        """Remove these faces, and photos left with no face; audited as `kind` by token."""
        with self._write():
            emptied = self._delete_faces(list(face_ids))
            token = self._audit_token(kind, actor, len(face_ids))
        return Erasure(token, tuple(sorted(int(i) for i in face_ids)), emptied)

    def _delete_faces(self, face_ids: list[int]) -> tuple[PhotoRef, ...]:
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
        return tuple(photos[i] for i in emptied)

    def _audit_token(self, kind: str, actor: str, results: int) -> str:
        token = f"{kind}_{secrets.token_hex(8)}"
        self._db.execute(
            "INSERT INTO audit (at, actor, kind, query_sha256, query_text, results) "
            "VALUES (?, ?, ?, NULL, ?, ?)",
            (timestamp(), actor, kind, token, results),
        )
        return token

    # -- the opt-out registry --------------------------------------------------------------
    def add_optout(self, model: str, embedding: np.ndarray, actor: str) -> OptOut:
        """Keep a face's embedding in the blocklist; returns its record (token and time)."""
        vector = np.asarray(embedding, dtype="<f4")
        with self._write() as db:
            token = self._audit_token("optout", actor, 1)
            created = timestamp()
            db.execute(
                "INSERT INTO optout (token, model, embedding, created_at) VALUES (?, ?, ?, ?)",
                (token, model, vector.tobytes(), created),
            )
        return OptOut(token, created)

    def optouts(self) -> list[OptOut]:
        """The opt-outs, oldest first: tokens and times only, never the embeddings."""
        rows = self._db.execute("SELECT token, created_at FROM optout ORDER BY id").fetchall()
        return [OptOut(r[0], r[1]) for r in rows]

    def remove_optout(self, token: str, actor: str) -> OptOut:
        """Withdraw an opt-out (the person asked to be findable again)."""
        with self._write() as db:
            row = db.execute(
                "SELECT token, created_at FROM optout WHERE token = ?", (token,)
            ).fetchone()
            if row is None:
                raise NotFound(f"no opt-out has the token {token!r}")
            db.execute("DELETE FROM optout WHERE token = ?", (token,))
            self._audit_token("optout_removed", actor, 1)
        return OptOut(row[0], row[1])

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
