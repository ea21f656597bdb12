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

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import psycopg

from ..entities import (
    ApiKey,
    AuditEntry,
    Box,
    Failure,
    FileStat,
    IndexedPhoto,
    KnownPhoto,
    Outcome,
    PersonRef,
    PersonSummary,
    PhotoRef,
    Provenance,
    Review,
    SaveResult,
    Stats,
    StoredFace,
    StoredFile,
)
from ..errors import AmbiguousPerson, LastAdminKey, NotFound, StoreError
from ..urls import masked_url
from .checking import Checking
from .clusters import Clusters
from .dialect import REVOKE_KEY
from .erasing import Erasing
from .postgres_dialect import PostgresDialect
from .postgres_migrations import MIGRATIONS, migrate, schema_version
from .postgres_people import PostgresPeople
from .postgres_privacy import PostgresPrivacy
from .postgres_sql import (
    NOCASE,
    PHOTO_LOCK_CLASS,
    Lock,
    iso,
    iso_or_none,
    now,
    vectors_of,
)
from .saving import Saving

__all__ = ["PostgresStore"]


class PostgresStore(
    PostgresPeople, PostgresPrivacy, Erasing, Saving, Clusters, Checking, PostgresDialect
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
            self._db.close()
            raise

    # -- connection and schema -----------------------------------------------------------------
    def _check_schema(self) -> None:
        if not self.readonly:
            migrate(self._db, self.url)
        version = schema_version(self._db)
        if version > len(MIGRATIONS):
            raise StoreError(
                f"{self.url} has schema version {version}, newer than this iddetective "
                f"understands ({len(MIGRATIONS)}); upgrade iddetective"
            )
        if version < len(MIGRATIONS):
            raise StoreError(f"{self.url} needs migrating; open it once for writing")

    def close(self) -> None:
        self._db.close()

    # -- ingestion -----------------------------------------------------------------------------
    def file_record(self, path: str) -> StoredFile | None:
        row = self._one(
            "SELECT f.size, f.mtime_ns, p.sha256, 0 AS kind FROM photo_file f "
            "JOIN photo p ON p.id = f.photo_id WHERE f.path = %(path)s "
            "UNION ALL SELECT size, mtime_ns, NULL, 1 FROM failure WHERE path = %(path)s "
            "ORDER BY kind LIMIT 1",
            {"path": path},
        )
        if row is None:
            return None
        return StoredFile(FileStat(path, row[0], row[1]), row[2])

    def has_photo(self, sha256: str) -> bool:
        return self._one("SELECT 1 FROM photo WHERE sha256 = %s", (sha256,)) is not None

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

    def _photo_id(self, outcome: IndexedPhoto | KnownPhoto) -> tuple[int, bool]:
        """The photo's id, and whether this call stored it (with its faces)."""
        existing = self._value("SELECT id FROM photo WHERE sha256 = %s", (outcome.sha256,))
        if existing is not None:
            return int(existing), False
        assert isinstance(outcome, IndexedPhoto), "known photos are checked by _save_one"
        analysis = outcome.analysis
        origin = outcome.provenance or Provenance()
        inserted = self._value(
            "INSERT INTO photo (sha256, width, height, face_count, ingested_at, source, "
            "added_by, basis) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (sha256) DO NOTHING RETURNING id",
            (
                outcome.sha256,
                analysis.width,
                analysis.height,
                len(analysis.faces),
                now(),
                origin.source or None,
                origin.added_by or None,
                origin.basis or None,
            ),
        )
        if inserted is None:
            # Another writer stored the same bytes since our look (and committed: ON CONFLICT
            # waited for it), with their faces.
            other = self._value("SELECT id FROM photo WHERE sha256 = %s", (outcome.sha256,))
            return int(other), False
        photo_id = int(inserted)
        with self._db.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO face (photo_id, box_left, box_top, box_right, box_bottom, score, "
                "landmarks, model, embedding, sharpness) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        photo_id,
                        f.box.left,
                        f.box.top,
                        f.box.right,
                        f.box.bottom,
                        float(f.score),
                        json.dumps(f.landmarks),
                        analysis.model,
                        np.asarray(f.embedding, dtype=np.float32),
                        f.sharpness,
                    )
                    for f in analysis.faces
                ],
            )
        return photo_id, True

    def forget_missing_files(self, roots: Iterable[str]) -> int:
        forgotten = 0
        with self._write():
            for root in roots:
                prefix = root.rstrip(os.sep) + os.sep
                for table in ("photo_file", "failure"):
                    rows = self._all(
                        f"SELECT path FROM {table} WHERE path = %s OR starts_with(path, %s)",
                        (root, prefix),
                    )
                    gone = [r[0] for r in rows if not os.path.lexists(r[0])]
                    self._db.execute(f"DELETE FROM {table} WHERE path = ANY(%s)", (gone,))
                    forgotten += len(gone) if table == "photo_file" else 0
            self._delete_orphan_photos()
        return forgotten

    def _delete_orphan_photos(self, candidates: Sequence[int] | None = None) -> None:
        query = (
            "DELETE FROM photo WHERE NOT EXISTS "
            "(SELECT 1 FROM photo_file WHERE photo_file.photo_id = photo.id)"
        )
        if candidates is None:
            deleted = self._db.execute(query).rowcount
        else:
            ids = [int(i) for i in candidates]
            deleted = self._db.execute(f"{query} AND id = ANY(%s)", (ids,)).rowcount
        if deleted:
            self._bump_epoch()

    def forget_failures(self, prefix: str) -> int:
        with self._write() as db:
            return db.execute("DELETE FROM failure WHERE starts_with(path, %s)", (prefix,)).rowcount

    def remove_photo(self, ref: str) -> PhotoRef:
        with self._write() as db:
            photo = self._photo_by_ref(ref)
            db.execute("DELETE FROM photo WHERE id = %s", (photo.id,))
            self._bump_epoch()
        return photo

    def photo_provenance(self, photo_ids: Sequence[int]) -> dict[int, Provenance]:
        """Where each photo came from (its first path when no other source was recorded)."""
        rows = self._all(
            "SELECT p.id, p.source, p.added_by, p.basis, min(f.path) FROM photo p "
            "LEFT JOIN photo_file f ON f.photo_id = p.id WHERE p.id = ANY(%s) GROUP BY p.id",
            ([int(i) for i in photo_ids],),
        )
        return {r[0]: Provenance(r[1] or r[4] or "", r[2] or "", r[3] or "") for r in rows}

    def _photo_by_ref(self, ref: str) -> PhotoRef:
        found = self._value(
            "SELECT photo_id, 0 AS kind FROM photo_file WHERE path = %s "
            "UNION ALL SELECT id, 1 FROM photo WHERE sha256 = %s ORDER BY kind LIMIT 1",
            (ref, ref.lower()),
        )
        if found is None:
            raise NotFound(f"no stored photo has the path or SHA-256 {ref!r}")
        return self._photos([found])[found]

    # -- people --------------------------------------------------------------------------------
    def resolve_person(self, ref: str) -> PersonRef:
        row = self._one("SELECT id, name FROM person WHERE id = %s", (ref,))
        if row:
            return PersonRef(row[0], row[1])
        rows = self._all(
            f"SELECT id, name FROM person WHERE lower(name) = {NOCASE} ORDER BY id", (ref,)
        )
        if not rows:
            raise NotFound(f"no person has the id or name {ref!r}")
        if len(rows) > 1:
            raise AmbiguousPerson(ref, [(r[0], r[1]) for r in rows])
        return PersonRef(rows[0][0], rows[0][1])

    def people(self) -> list[PersonSummary]:
        rows = self._all(
            "SELECT p.id, p.name, count(f.id), count(DISTINCT f.photo_id) FROM person p "
            "LEFT JOIN face f ON f.person_id = p.id GROUP BY p.id ORDER BY p.name, p.id"
        )
        return [PersonSummary(r[0], r[1], r[2], r[3]) for r in rows]

    def faces_of_person(self, person_id: str) -> list[StoredFace]:
        ids = [r[0] for r in self._all("SELECT id FROM face WHERE person_id = %s", (person_id,))]
        faces = self.faces(ids)
        return [faces[i] for i in sorted(faces)]

    def photo(self, ref: str) -> PhotoRef:
        return self._photo_by_ref(ref)

    # -- faces ---------------------------------------------------------------------------------
    def faces_epoch(self) -> int:
        return int(self._value("SELECT value FROM meta WHERE key = 'faces_epoch'"))

    def embeddings(self, model: str, batch: int = 65536) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        last = 0
        while True:
            rows = self._binary(
                "SELECT id, embedding FROM face WHERE model = %s AND id > %s ORDER BY id LIMIT %s",
                (model, last, batch),
            )
            if not rows:
                return
            ids, vectors = _id_vectors(rows)
            yield ids, vectors
            last = int(ids[-1])

    def face_ids(self, model: str) -> np.ndarray:
        rows = self._all("SELECT id FROM face WHERE model = %s ORDER BY id", (model,))
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def embeddings_of(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = self._binary(
            "SELECT id, embedding FROM face WHERE id = ANY(%s) ORDER BY id",
            ([int(i) for i in ids],),
        )
        return _id_vectors(rows)

    def faces(self, ids: Sequence[int]) -> dict[int, StoredFace]:
        rows = self._all(
            "SELECT f.id, f.photo_id, f.box_left, f.box_top, f.box_right, f.box_bottom, "
            "p.id, p.name FROM face f LEFT JOIN person p ON p.id = f.person_id "
            "WHERE f.id = ANY(%s)",
            ([int(i) for i in ids],),
        )
        photos = self._photos(r[1] for r in rows)
        return {
            r[0]: StoredFace(
                r[0],
                photos[r[1]],
                Box(r[2], r[3], r[4], r[5]),
                PersonRef(r[6], r[7]) if r[6] else None,
            )
            for r in rows
        }

    def face_ids_of_people(self, person_ids: Sequence[str]) -> np.ndarray:
        rows = self._all(
            "SELECT id FROM face WHERE person_id = ANY(%s) ORDER BY id", (list(person_ids),)
        )
        return np.array([r[0] for r in rows], dtype=np.int64)

    def _photos(self, ids: Iterable[int]) -> dict[int, PhotoRef]:
        rows = self._all(
            "SELECT p.id, p.sha256, p.width, p.height, "
            "array_agg(f.path) FILTER (WHERE f.path IS NOT NULL) "
            "FROM photo p LEFT JOIN photo_file f ON f.photo_id = p.id "
            "WHERE p.id = ANY(%s) GROUP BY p.id",
            (sorted({int(i) for i in ids}),),
        )
        return {r[0]: PhotoRef(r[0], r[1], tuple(sorted(r[4] or ())), r[2], r[3]) for r in rows}

    # -- reports -------------------------------------------------------------------------------
    def failures(self) -> list[Failure]:
        rows = self._all(
            "SELECT path, reason, failed_at FROM failure ORDER BY failed_at DESC, path"
        )
        return [Failure(r[0], r[1], iso(r[2])) for r in rows]

    def reviews(self) -> list[Review]:
        # SQLite takes the person of any one named face (a bare column in GROUP BY); this
        # takes the first one's.
        rows = self._all(
            "SELECT DISTINCT ON (p.id) p.id, p.review, p.face_count, pe.id, pe.name "
            "FROM photo p LEFT JOIN face f ON f.photo_id = p.id AND f.person_id IS NOT NULL "
            "LEFT JOIN person pe ON pe.id = f.person_id "
            "WHERE p.review IS NOT NULL ORDER BY p.id, f.id"
        )
        photos = self._photos(r[0] for r in rows)
        return [
            Review(photos[r[0]], PersonRef(r[3], r[4]) if r[3] else None, r[2], r[1]) for r in rows
        ]

    def stats(self) -> Stats:
        row = self._one(
            "SELECT (SELECT count(*) FROM photo), "
            "(SELECT count(*) FROM photo WHERE face_count = 0), "
            "(SELECT count(*) FROM face), "
            "(SELECT count(*) FROM face WHERE person_id IS NULL), "
            "(SELECT count(*) FROM person), "
            "(SELECT count(*) FROM failure), "
            "(SELECT count(*) FROM photo WHERE review IS NOT NULL)"
        )
        assert row is not None
        photos, without_face, faces, unknown, people, failed, to_review = map(int, row)
        return Stats(
            photos=photos,
            photos_without_face=without_face,
            faces=faces,
            unknown_faces=unknown,
            people=people,
            failed=failed,
            to_review=to_review,
            data_bytes=0,
        )

    def _engine_problems(self) -> list[str]:
        """None to find from here: PostgreSQL checks its own pages (data checksums, amcheck)
        and the schema enforces what SQLite's foreign key check looks for."""
        return []

    # -- API keys and audit --------------------------------------------------------------------
    def add_key(self, key: ApiKey) -> None:
        with self._write("none") as db:
            db.execute(
                "INSERT INTO api_key (id, hash, role, label, created_at) "
                "VALUES (%s, %s, %s, %s, %s)",
                (key.id, key.hash, key.role, key.label, key.created_at),
            )

    def keys(self) -> list[ApiKey]:
        rows = self._all(f"SELECT {_KEY_COLUMNS} FROM api_key ORDER BY created_at, id")
        return [_api_key(r) for r in rows]

    def key(self, key_id: str) -> ApiKey | None:
        row = self._one(f"SELECT {_KEY_COLUMNS} FROM api_key WHERE id = %s", (key_id,))
        return _api_key(row) if row else None

    def revoke_key(self, key_id: str) -> ApiKey:
        with self._write("none") as db:
            # Two revokes at once must not each see the other's admin key still active.
            db.execute(
                "SELECT id FROM api_key WHERE role = 'admin' AND revoked_at IS NULL FOR UPDATE"
            )
            db.execute(REVOKE_KEY.replace("?", "%s"), (now(), key_id))
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
        with self._write("none") as db:
            db.execute(
                "INSERT INTO audit (at, actor, kind, query_sha256, query_text, results) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                (now(), actor, kind, query_sha256, query_text, results),
            )

    def audit(self, limit: int, before: int | None = None) -> list[AuditEntry]:
        rows = self._all(
            "SELECT id, at, actor, kind, query_sha256, query_text, results, people FROM audit "
            "WHERE id < %s ORDER BY id DESC LIMIT %s",
            (before if before is not None else 2**62, limit),
        )
        return [AuditEntry(r[0], iso(r[1]), r[2], r[3], r[4], r[5], r[6], r[7]) for r in rows]


_KEY_COLUMNS = "id, role, label, created_at, revoked_at, hash"


def _api_key(row: tuple[Any, ...]) -> ApiKey:
    return ApiKey(row[0], row[1], row[2], iso(row[3]), iso_or_none(row[4]), row[5])


def _id_vectors(rows: list[tuple[Any, ...]]) -> tuple[np.ndarray, np.ndarray]:
    if not rows:
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    return ids, vectors_of(rows, 1)
