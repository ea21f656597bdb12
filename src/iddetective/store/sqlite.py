"""The embedded catalogue: one SQLite file in WAL mode, with versioned migrations.

One writer at a time (SQLite's own lock, waited on with a busy timeout); readers see only
committed data. Every `save` is one transaction, so a killed process leaves either the whole
batch or none of it.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

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
from .checking import Checking
from .clusters import Clusters
from .dialect import REVOKE_KEY, timestamp
from .erasing import Erasing
from .migrations import MIGRATIONS
from .saving import Saving
from .sqlite_file import checked_connect, create_whole, refuse_foreign
from .sqlite_people import SqlitePeople
from .sqlite_privacy import SqlitePrivacy
from .sqlite_sql import SqliteDialect, blob_vectors, select_in

__all__ = ["SqliteStore"]

BUSY_TIMEOUT_SECONDS = 60.0


class SqliteStore(
    SqlitePeople, SqlitePrivacy, Erasing, Saving, Clusters, Checking, SqliteDialect
):
    """`Store` over one SQLite file."""

    def __init__(self, path: Path | str, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        if self.path.exists() or self.path.is_symlink():
            refuse_foreign(self.path)
        elif readonly:
            raise NotFound(f"no catalogue at {self.path}")
        else:
            self._make_folder()
            create_whole(self.path, self._build)
        self._db = self._connect()
        try:
            if not readonly:
                self._migrate()
            self._check_version()
        except BaseException:
            self._db.close()
            raise

    # -- connection and schema -----------------------------------------------------------------
    def _make_folder(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(f"cannot create {self.path.parent}: {error.strerror}") from None

    def _build(self, db: sqlite3.Connection) -> None:
        """The schema of a new catalogue, on the file `create_whole` links into place."""
        _configure(db, readonly=False)
        self._db = db
        self._migrate()

    def _connect(self) -> sqlite3.Connection:
        # Threads may share the connection (the web app serialises its calls with a lock).
        db = checked_connect(
            self.path,
            readonly=self.readonly,
            timeout=BUSY_TIMEOUT_SECONDS,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            _refuse_other_databases(db, self.path)  # before anything writes to it
            _configure(db, self.readonly)
        except BaseException:
            db.close()
            raise
        return db

    def _migrate(self) -> None:
        if self._db.execute("PRAGMA user_version").fetchone()[0] >= len(MIGRATIONS):
            return  # readers must not queue behind a running writer for nothing
        with self._write():
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in _statements(script):
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {number}")
            stale = self._db.execute("SELECT 1 FROM meta WHERE key = 'person_text_stale'")
            if stale.fetchone():
                self._rebuild_person_text()
                self._db.execute("DELETE FROM meta WHERE key = 'person_text_stale'")

    def _check_version(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise StoreError(
                f"{self.path} has schema version {version}, newer than this iddetective "
                f"understands ({len(MIGRATIONS)}); upgrade iddetective"
            )
        if version < len(MIGRATIONS):
            raise StoreError(f"{self.path} needs migrating; open it once for writing")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            if self._db.in_transaction:  # SQLite rolls back by itself on a full disk
                self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()

    # -- ingestion -----------------------------------------------------------------------------
    def file_record(self, path: str) -> StoredFile | None:
        row = self._db.execute(
            "SELECT f.size, f.mtime_ns, p.sha256 FROM photo_file f "
            "JOIN photo p ON p.id = f.photo_id WHERE f.path = ? "
            "UNION ALL SELECT size, mtime_ns, NULL FROM failure WHERE path = ? LIMIT 1",
            (path, path),
        ).fetchone()
        if row is None:
            return None
        return StoredFile(FileStat(path, row[0], row[1]), row[2])

    def has_photo(self, sha256: str) -> bool:
        found = self._db.execute("SELECT 1 FROM photo WHERE sha256 = ?", (sha256,)).fetchone()
        return found is not None

    def save(self, outcomes: Sequence[Outcome]) -> list[SaveResult]:
        with self._write():
            results = [self._save_one(outcome) for outcome in outcomes]
            if any(r.status == "indexed" and r.faces for r in results):
                self._bump_epoch()
        return results

    def _photo_id(self, outcome: IndexedPhoto | KnownPhoto) -> tuple[int, bool]:
        row = self._db.execute(
            "SELECT id FROM photo WHERE sha256 = ?", (outcome.sha256,)
        ).fetchone()
        if row:
            return row["id"], False
        assert isinstance(outcome, IndexedPhoto), "known photos are checked by _save_one"
        analysis = outcome.analysis
        origin = outcome.provenance or Provenance()
        cursor = self._db.execute(
            "INSERT INTO photo (sha256, width, height, face_count, ingested_at, source, "
            "added_by, basis) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                outcome.sha256,
                analysis.width,
                analysis.height,
                len(analysis.faces),
                timestamp(),
                origin.source or None,
                origin.added_by or None,
                origin.basis or None,
            ),
        )
        photo_id = int(cursor.lastrowid or 0)
        self._db.executemany(
            "INSERT INTO face (photo_id, box_left, box_top, box_right, box_bottom, score, "
            "landmarks, model, embedding, sharpness) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    photo_id,
                    f.box.left,
                    f.box.top,
                    f.box.right,
                    f.box.bottom,
                    f.score,
                    json.dumps(f.landmarks),
                    analysis.model,
                    np.asarray(f.embedding, dtype="<f4").tobytes(),
                    f.sharpness,
                )
                for f in analysis.faces
            ],
        )
        return photo_id, True

    def _bump_epoch(self) -> None:
        self._db.execute("UPDATE meta SET value = value + 1 WHERE key = 'faces_epoch'")

    def forget_missing_files(self, roots: Iterable[str]) -> int:
        forgotten = 0
        with self._write():
            for root in roots:
                prefix = root.rstrip(os.sep) + os.sep
                for table in ("photo_file", "failure"):
                    rows = self._db.execute(
                        f"SELECT path FROM {table} WHERE path = ? OR substr(path, 1, ?) = ?",
                        (root, len(prefix), prefix),
                    ).fetchall()
                    gone = [(r["path"],) for r in rows if not os.path.lexists(r["path"])]
                    self._db.executemany(f"DELETE FROM {table} WHERE path = ?", gone)
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
            marks = ",".join("?" * len(candidates))
            deleted = self._db.execute(f"{query} AND id IN ({marks})", list(candidates)).rowcount
        if deleted:
            self._bump_epoch()

    def forget_failures(self, prefix: str) -> int:
        with self._write():
            return self._db.execute(
                "DELETE FROM failure WHERE substr(path, 1, ?) = ?", (len(prefix), prefix)
            ).rowcount

    def remove_photo(self, ref: str) -> PhotoRef:
        with self._write():
            photo = self._photo_by_ref(ref)
            self._db.execute("DELETE FROM photo WHERE id = ?", (photo.id,))
            self._bump_epoch()
        return photo

    def photo_provenance(self, photo_ids: Sequence[int]) -> dict[int, Provenance]:
        """Where each photo came from (its first path when no other source was recorded)."""
        rows = select_in(
            self._db,
            "SELECT p.id, p.source, p.added_by, p.basis, min(f.path) FROM photo p "
            "LEFT JOIN photo_file f ON f.photo_id = p.id WHERE p.id IN ({marks}) GROUP BY p.id",
            photo_ids,
        )
        return {r[0]: Provenance(r[1] or r[4] or "", r[2] or "", r[3] or "") for r in rows}

    def _photo_by_ref(self, ref: str) -> PhotoRef:
        row = self._db.execute(
            "SELECT photo_id FROM photo_file WHERE path = ? "
            "UNION ALL SELECT id FROM photo WHERE sha256 = ? LIMIT 1",
            (ref, ref.lower()),
        ).fetchone()
        if row is None:
            raise NotFound(f"no stored photo has the path or SHA-256 {ref!r}")
        return self._photos([row[0]])[row[0]]

    def _photos(self, ids: Iterable[int]) -> dict[int, PhotoRef]:
        rows = select_in(
            self._db,
            "SELECT p.id, p.sha256, p.width, p.height, group_concat(f.path, char(0)) "
            "FROM photo p LEFT JOIN photo_file f ON f.photo_id = p.id "
            "WHERE p.id IN ({marks}) GROUP BY p.id",
            ids,
        )
        photos: dict[int, PhotoRef] = {}
        for row in rows:
            paths = tuple(sorted(row[4].split("\0"))) if row[4] else ()
            photos[row[0]] = PhotoRef(row[0], row[1], paths, row[2], row[3])
        return photos

    # -- people --------------------------------------------------------------------------------
    def resolve_person(self, ref: str) -> PersonRef:
        row = self._db.execute("SELECT id, name FROM person WHERE id = ?", (ref,)).fetchone()
        if row:
            return PersonRef(row["id"], row["name"])
        rows = self._db.execute(
            "SELECT id, name FROM person WHERE name = ? COLLATE NOCASE ORDER BY id", (ref,)
        ).fetchall()
        if not rows:
            raise NotFound(f"no person has the id or name {ref!r}")
        if len(rows) > 1:
            raise AmbiguousPerson(ref, [(r["id"], r["name"]) for r in rows])
        return PersonRef(rows[0]["id"], rows[0]["name"])

    def people(self) -> list[PersonSummary]:
        rows = self._db.execute(
            "SELECT p.id, p.name, count(f.id), count(DISTINCT f.photo_id) FROM person p "
            "LEFT JOIN face f ON f.person_id = p.id GROUP BY p.id ORDER BY p.name, p.id"
        ).fetchall()
        return [PersonSummary(r[0], r[1], r[2], r[3]) for r in rows]

    def faces_of_person(self, person_id: str) -> list[StoredFace]:
        ids = [
            r[0] for r in self._db.execute("SELECT id FROM face WHERE person_id = ?", (person_id,))
        ]
        faces = self.faces(ids)
        return [faces[i] for i in sorted(faces)]

    def photo(self, ref: str) -> PhotoRef:
        return self._photo_by_ref(ref)

    # -- faces ---------------------------------------------------------------------------------
    def faces_epoch(self) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'faces_epoch'").fetchone()
        return int(row[0])

    def embeddings(self, model: str, batch: int = 65536) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        last = 0
        while True:
            rows = self._db.execute(
                "SELECT id, embedding FROM face WHERE model = ? AND id > ? ORDER BY id LIMIT ?",
                (model, last, batch),
            ).fetchall()
            if not rows:
                return
            ids, vectors = _id_vectors(rows)
            yield ids, vectors
            last = int(ids[-1])

    def face_ids(self, model: str) -> np.ndarray:
        rows = self._db.execute("SELECT id FROM face WHERE model = ? ORDER BY id", (model,))
        return np.fromiter((r[0] for r in rows), dtype=np.int64)

    def embeddings_of(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        found = select_in(
            self._db,
            "SELECT id, embedding FROM face WHERE id IN ({marks}) ORDER BY id",
            (int(i) for i in ids),
        )
        return _id_vectors(found)

    def faces(self, ids: Sequence[int]) -> dict[int, StoredFace]:
        rows = select_in(
            self._db,
            "SELECT f.id, f.photo_id, f.box_left, f.box_top, f.box_right, f.box_bottom, "
            "p.id AS pid, p.name FROM face f LEFT JOIN person p ON p.id = f.person_id "
            "WHERE f.id IN ({marks})",
            (int(i) for i in ids),
        )
        photos = self._photos(r["photo_id"] for r in rows)
        return {
            r["id"]: StoredFace(
                r["id"],
                photos[r["photo_id"]],
                Box(r["box_left"], r["box_top"], r["box_right"], r["box_bottom"]),
                PersonRef(r["pid"], r["name"]) if r["pid"] else None,
            )
            for r in rows
        }

    def face_ids_of_people(self, person_ids: Sequence[str]) -> np.ndarray:
        rows = select_in(self._db, "SELECT id FROM face WHERE person_id IN ({marks})", person_ids)
        return np.array(sorted(r[0] for r in rows), dtype=np.int64)

    # -- reports -------------------------------------------------------------------------------
    def failures(self) -> list[Failure]:
        rows = self._db.execute(
            "SELECT path, reason, failed_at FROM failure ORDER BY failed_at DESC, path"
        ).fetchall()
        return [Failure(r[0], r[1], r[2]) for r in rows]

    def reviews(self) -> list[Review]:
        rows = self._db.execute(
            "SELECT p.id, p.review, p.face_count, pe.id, pe.name FROM photo p "
            "LEFT JOIN face f ON f.photo_id = p.id AND f.person_id IS NOT NULL "
            "LEFT JOIN person pe ON pe.id = f.person_id "
            "WHERE p.review IS NOT NULL GROUP BY p.id ORDER BY p.id"
        ).fetchall()
        photos = self._photos(r[0] for r in rows)
        return [
            Review(photos[r[0]], PersonRef(r[3], r[4]) if r[3] else None, r[2], r[1]) for r in rows
        ]

    def stats(self) -> Stats:
        one = self._db.execute
        return Stats(
            photos=one("SELECT count(*) FROM photo").fetchone()[0],
            photos_without_face=one("SELECT count(*) FROM photo WHERE face_count = 0").fetchone()[
                0
            ],
            faces=one("SELECT count(*) FROM face").fetchone()[0],
            unknown_faces=one("SELECT count(*) FROM face WHERE person_id IS NULL").fetchone()[0],
            people=one("SELECT count(*) FROM person").fetchone()[0],
            failed=one("SELECT count(*) FROM failure").fetchone()[0],
            to_review=one("SELECT count(*) FROM photo WHERE review IS NOT NULL").fetchone()[0],
            data_bytes=0,
        )

    def _engine_problems(self) -> list[str]:
        pages = [row[0] for row in self._db.execute("PRAGMA integrity_check").fetchall()]
        problems = [f"{self.path}: {text}" for text in pages if text != "ok"]
        for table, rowid, parent, _ in self._db.execute("PRAGMA foreign_key_check").fetchall():
            problems.append(f"{self.path}: {table} row {rowid} refers to a missing {parent}")
        return problems

    # -- API keys and audit --------------------------------------------------------------------
    def add_key(self, key: ApiKey) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO api_key (id, hash, role, label, created_at) VALUES (?, ?, ?, ?, ?)",
                (key.id, key.hash, key.role, key.label, key.created_at),
            )

    def keys(self) -> list[ApiKey]:
        rows = self._db.execute("SELECT * FROM api_key ORDER BY created_at, id").fetchall()
        return [_api_key(r) for r in rows]

    def key(self, key_id: str) -> ApiKey | None:
        row = self._db.execute("SELECT * FROM api_key WHERE id = ?", (key_id,)).fetchone()
        return _api_key(row) if row else None

    def revoke_key(self, key_id: str) -> ApiKey:
        with self._write() as db:
            db.execute(REVOKE_KEY, (timestamp(), key_id))
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
        with self._write() as db:
            db.execute(
                "INSERT INTO audit (at, actor, kind, query_sha256, query_text, results) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (timestamp(), actor, kind, query_sha256, query_text, results),
            )

    def audit(self, limit: int, before: int | None = None) -> list[AuditEntry]:
        rows = self._db.execute(
            "SELECT * FROM audit WHERE id < ? ORDER BY id DESC LIMIT ?",
            (before if before is not None else 2**62, limit),
        ).fetchall()
        return [AuditEntry(**dict(r)) for r in rows]


def _refuse_other_databases(db: sqlite3.Connection, path: Path) -> None:
    """A SQLite file with tables but no schema version is another program's database."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    if version == 0 and tables:
        raise StoreError(
            f"{path} is a SQLite database of another program, not a catalogue; "
            "refusing to open it; nothing was written"
        )


def _configure(db: sqlite3.Connection, readonly: bool) -> None:
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA foreign_keys = ON")
    if not readonly:
        db.execute("PRAGMA journal_mode = WAL")
        # WAL + NORMAL: a killed process never loses a committed transaction.
        db.execute("PRAGMA synchronous = NORMAL")
        # Deleted rows are overwritten with zeros (an erased person must be gone from
        # the file); some SQLite builds default to off.
        db.execute("PRAGMA secure_delete = ON")


def _api_key(row: sqlite3.Row) -> ApiKey:
    return ApiKey(
        row["id"], row["role"], row["label"], row["created_at"], row["revoked_at"], row["hash"]
    )


def _id_vectors(rows: Sequence[sqlite3.Row]) -> tuple[np.ndarray, np.ndarray]:
    if not rows:
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    return ids, blob_vectors([r[1] for r in rows])


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
