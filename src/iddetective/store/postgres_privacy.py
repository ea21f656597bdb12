"""Erasure, the opt-out registry and retention in the PostgreSQL store (docs/privacy.md).

As in the SQLite store (store/sqlite_privacy.py): erasing removes rows in one transaction and
the audit log records it under an opaque token; opted-out faces are kept as embeddings in
their own table, never returned by any read of the catalogue. `compact` rewrites the tables
(VACUUM FULL), so deleted rows are gone from the table files, not only marked dead.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta

import numpy as np
from psycopg import errors

from .. import distances
from ..entities import Erasure, OptOut, PhotoAnalysis, PhotoRef
from ..errors import NotFound
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
    "audit",
    "edit",
    "api_key",
    "meta",
)


class PostgresPrivacy(PostgresBase):
    """Privacy methods of `PostgresStore` (a mixin over the store's connection)."""

    _photos: Callable[[Iterable[int]], dict[int, PhotoRef]]
    _delete_person_text: Callable[[str], None]
    forget_edits_of: Callable[[str], int]

    def erase_person(self, person_id: str, actor: str) -> Erasure:
        """Remove the person, their faces, and photos left with no face, in one transaction.

        The audit log gets one `erase` entry naming an opaque token, never the person.
        """
        with self._write() as db:
            if self._one("SELECT 1 FROM person WHERE id = %s", (person_id,)) is None:
                raise NotFound(f"no person has the id {person_id!r}")
            faces = [
                r[0] for r in self._all("SELECT id FROM face WHERE person_id = %s", (person_id,))
            ]
            emptied = self._delete_faces(faces)
            self._delete_person_text(person_id)
            self.forget_edits_of(person_id)
            db.execute("DELETE FROM person WHERE id = %s", (person_id,))
            token = self._audit_token("erase", actor, len(faces))
        return Erasure(token, tuple(sorted(faces)), emptied)

    def erase_faces(self, face_ids: Sequence[int], actor: str, kind: str) -> Erasure:
        """Remove these faces, and photos left with no face; audited as `kind` by token."""
        with self._write():
            emptied = self._delete_faces([int(i) for i in face_ids])
            token = self._audit_token(kind, actor, len(face_ids))
        return Erasure(token, tuple(sorted(int(i) for i in face_ids)), emptied)

    def _delete_faces(self, face_ids: list[int]) -> tuple[PhotoRef, ...]:
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
        return tuple(photos[i] for i in emptied)

    def _audit_token(self, kind: str, actor: str, results: int) -> str:
        token = f"{kind}_{secrets.token_hex(8)}"
        self._db.execute(
            "INSERT INTO audit (at, actor, kind, query_sha256, query_text, results) "
            "VALUES (%s, %s, %s, NULL, %s, %s)",
            (now(), actor, kind, token, results),
        )
        return token

    # -- the opt-out registry --------------------------------------------------------------
    def add_optout(self, model: str, embedding: np.ndarray, actor: str) -> OptOut:
        """Keep a face's embedding in the blocklist; returns its record (token and time)."""
        vector = np.asarray(embedding, dtype=np.float32).reshape(-1)
        with self._write() as db:
            token = self._audit_token("optout", actor, 1)
            created = now()
            db.execute(
                "INSERT INTO optout (token, model, embedding, created_at) VALUES (%s, %s, %s, %s)",
                (token, model, vector, created),
            )
        return OptOut(token, iso(created))

    def optouts(self) -> list[OptOut]:
        """The opt-outs, oldest first: tokens and times only, never the embeddings."""
        rows = self._all("SELECT token, created_at FROM optout ORDER BY id")
        return [OptOut(r[0], iso(r[1])) for r in rows]

    def remove_optout(self, token: str, actor: str) -> OptOut:
        """Withdraw an opt-out (the person asked to be findable again)."""
        with self._write() as db:
            row = self._one("SELECT token, created_at FROM optout WHERE token = %s", (token,))
            if row is None:
                raise NotFound(f"no opt-out has the token {token!r}")
            db.execute("DELETE FROM optout WHERE token = %s", (token,))
            self._audit_token("optout_removed", actor, 1)
        return OptOut(row[0], iso(row[1]))

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
