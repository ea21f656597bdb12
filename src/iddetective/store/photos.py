"""Photos, their files and faces, and the reports over them, for both stores (written once over
the store's `sql`, store/dialect.py).

A photo is unique by SHA-256 and has one `photo_file` row per path it was seen at; a failed
file has a `failure` row instead. Every transaction that adds or removes faces bumps the
catalogue's face epoch (`_bump_epoch`), which is how a vector index knows it must catch up.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np

from ..entities import (
    Box,
    Failure,
    FileStat,
    IndexedPhoto,
    KnownPhoto,
    PersonRef,
    PhotoRef,
    Provenance,
    Review,
    Stats,
    StoredFace,
    StoredFile,
)
from ..errors import NotFound
from .dialect import Sql, timestamp

__all__ = ["Photos"]


class Photos:
    """Photo, file, face and report methods of both stores."""

    sql: Sql
    model_dimension: Callable[[str], int | None]

    # -- files and photos ------------------------------------------------------------------
    def file_record(self, path: str) -> StoredFile | None:
        """What the store recorded of the file at `path` (a photo's or a failure's)."""
        rows = self.sql.rows(
            "SELECT f.size, f.mtime_ns, p.sha256, 0 AS kind FROM photo_file f "
            "JOIN photo p ON p.id = f.photo_id WHERE f.path = ? "
            "UNION ALL SELECT size, mtime_ns, NULL, 1 FROM failure WHERE path = ? "
            "ORDER BY kind LIMIT 1",
            (path, path),
        )
        if not rows:
            return None
        return StoredFile(FileStat(path, rows[0][0], rows[0][1]), rows[0][2])

    def has_photo(self, sha256: str) -> bool:
        """Whether a photo with these bytes is stored."""
        return bool(self.sql.rows("SELECT 1 FROM photo WHERE sha256 = ?", (sha256,)))

    def _photo_id(self, outcome: IndexedPhoto | KnownPhoto) -> tuple[int, bool]:
        """The photo's id, and whether this call stored it (with its faces)."""
        existing = self.sql.scalar("SELECT id FROM photo WHERE sha256 = ?", (outcome.sha256,))
        if existing is not None:
            return int(existing), False
        assert isinstance(outcome, IndexedPhoto), "known photos are checked by _save_one"
        analysis = outcome.analysis
        origin = outcome.provenance or Provenance()
        inserted = self.sql.scalar(
            "INSERT INTO photo (sha256, width, height, face_count, ingested_at, source, "
            "added_by, basis) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (sha256) DO NOTHING RETURNING id",
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
        if inserted is None:
            # Another PostgreSQL writer stored the same bytes since our look (and committed:
            # ON CONFLICT waited for it), with their faces.
            other = self.sql.scalar("SELECT id FROM photo WHERE sha256 = ?", (outcome.sha256,))
            return int(other), False
        photo_id = int(inserted)
        # The vectors' dimension was checked against their model's by `save`.
        self.sql.execute_many(
            "INSERT INTO face (photo_id, box_left, box_top, box_right, box_bottom, score, "
            "landmarks, model, embedding, sharpness) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                    self.sql.vector(np.asarray(f.embedding, dtype=np.float32)),
                    f.sharpness,
                )
                for f in analysis.faces
            ],
        )
        return photo_id, True

    def _bump_epoch(self) -> None:
        self.sql.execute("UPDATE meta SET value = value + 1 WHERE key = 'faces_epoch'")

    def forget_missing_files(self, roots: Iterable[str]) -> int:
        """Forget the recorded files under `roots` that are gone from disk, and photos left
        with no file; the number of photo files forgotten."""
        forgotten = 0
        with self.sql.write():
            for root in roots:
                prefix = root.rstrip(os.sep) + os.sep
                for table in ("photo_file", "failure"):
                    paths = self.sql.firsts(
                        f"SELECT path FROM {table} WHERE path = ? "
                        "OR substr(path, 1, CAST(? AS integer)) = ?",
                        (root, len(prefix), prefix),
                    )
                    gone = [(path,) for path in paths if not os.path.lexists(path)]
                    self.sql.execute_many(f"DELETE FROM {table} WHERE path = ?", gone)
                    forgotten += len(gone) if table == "photo_file" else 0
            self._delete_orphan_photos()
        return forgotten

    def _delete_orphan_photos(self, candidates: Sequence[int] | None = None) -> None:
        query = (
            "DELETE FROM photo WHERE NOT EXISTS "
            "(SELECT 1 FROM photo_file WHERE photo_file.photo_id = photo.id)"
        )
        if candidates is None:
            deleted = self.sql.execute(query)
        else:
            deleted = self.sql.execute_in(f"{query} AND id IN ({{marks}})", map(int, candidates))
        if deleted:
            self._bump_epoch()

    def forget_failures(self, prefix: str) -> int:
        """Forget the recorded failures of paths starting with `prefix`; how many."""
        with self.sql.write():
            return self.sql.execute(
                "DELETE FROM failure WHERE substr(path, 1, CAST(? AS integer)) = ?",
                (len(prefix), prefix),
            )

    def remove_photo(self, ref: str) -> PhotoRef:
        """Remove a photo (by path or SHA-256) with its faces."""
        with self.sql.write():
            photo = self._photo_by_ref(ref)
            self.sql.execute("DELETE FROM photo WHERE id = ?", (photo.id,))
            self._bump_epoch()
        return photo

    def photo_provenance(self, photo_ids: Sequence[int]) -> dict[int, Provenance]:
        """Where each photo came from (its first path when no other source was recorded)."""
        rows = self.sql.rows_in(
            "SELECT p.id, p.source, p.added_by, p.basis, min(f.path) FROM photo p "
            "LEFT JOIN photo_file f ON f.photo_id = p.id WHERE p.id IN ({marks}) GROUP BY p.id",
            map(int, photo_ids),
        )
        return {r[0]: Provenance(r[1] or r[4] or "", r[2] or "", r[3] or "") for r in rows}

    def photo(self, ref: str) -> PhotoRef:
        """A stored photo by one of its paths or its SHA-256."""
        return self._photo_by_ref(ref)

    def _photo_by_ref(self, ref: str) -> PhotoRef:
        found = self.sql.scalar(
            "SELECT photo_id, 0 AS kind FROM photo_file WHERE path = ? "
            "UNION ALL SELECT id, 1 FROM photo WHERE sha256 = ? ORDER BY kind LIMIT 1",
            (ref, ref.lower()),
        )
        if found is None:
            raise NotFound(f"no stored photo has the path or SHA-256 {ref!r}")
        return self._photos([found])[found]

    def _photos(self, ids: Iterable[int]) -> dict[int, PhotoRef]:
        wanted = sorted({int(i) for i in ids})
        paths: dict[int, list[str]] = {}
        for photo_id, path in self.sql.rows_in(
            "SELECT photo_id, path FROM photo_file WHERE photo_id IN ({marks})", wanted
        ):
            paths.setdefault(photo_id, []).append(path)
        rows = self.sql.rows_in(
            "SELECT id, sha256, width, height FROM photo WHERE id IN ({marks})", wanted
        )
        return {
            r[0]: PhotoRef(r[0], r[1], tuple(sorted(paths.get(r[0], ()))), r[2], r[3]) for r in rows
        }

    # -- faces -----------------------------------------------------------------------------
    def faces_epoch(self) -> int:
        """The catalogue's face epoch (bumped by every change of its faces)."""
        return int(self.sql.scalar("SELECT value FROM meta WHERE key = 'faces_epoch'"))

    def embeddings(self, model: str, batch: int = 65536) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, vectors) of every face of `model`, in id order, `batch` at a time."""
        dimension, last = self.model_dimension(model), 0
        while True:
            ids, vectors = self._id_vectors(
                "SELECT id, embedding FROM face WHERE model = ? AND id > ? ORDER BY id LIMIT ?",
                (model, last, batch),
                dimension,
            )
            if not len(ids):
                return
            yield ids, vectors
            last = int(ids[-1])

    def face_ids(self, model: str) -> np.ndarray:
        """The ids of every face of `model`, rising."""
        ids = self.sql.firsts("SELECT id FROM face WHERE model = ? ORDER BY id", (model,))
        return np.array(ids, dtype=np.int64)

    def embeddings_of(
        self, ids: np.ndarray, model: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of these faces that exist (of `model`, if given), in id order;
        without a model, faces of models of different dimensions raise `StoreError`."""
        wanted = (int(i) for i in ids)
        if model is None:
            rows, vectors = self.sql.vector_rows_in(
                "SELECT id, embedding FROM face WHERE id IN ({marks}) ORDER BY id", wanted, 1
            )
        else:
            rows, vectors = self.sql.vector_rows_in(
                "SELECT id, embedding FROM face WHERE model = ? AND id IN ({marks}) ORDER BY id",
                wanted,
                1,
                self.model_dimension(model),
                before=(model,),
            )
        return np.array([r[0] for r in rows], dtype=np.int64), vectors

    def _id_vectors(
        self, sql: str, params: Sequence[object], dimension: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        rows, vectors = self.sql.vector_rows(sql, params, 1, dimension)
        return np.array([r[0] for r in rows], dtype=np.int64), vectors

    def faces(self, ids: Sequence[int]) -> dict[int, StoredFace]:
        """These faces (those that exist), by id, with their photos and people."""
        rows = self.sql.rows_in(
            "SELECT f.id, f.photo_id, f.box_left, f.box_top, f.box_right, f.box_bottom, "
            "p.id, p.name FROM face f LEFT JOIN person p ON p.id = f.person_id "
            "WHERE f.id IN ({marks})",
            (int(i) for i in ids),
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

    def faces_of_person(
        self, person_id: str, limit: int | None = None, offset: int = 0
    ) -> list[StoredFace]:
        """The person's faces in id order: all, or the page of `limit` after `offset`."""
        page = "" if limit is None else " LIMIT ? OFFSET ?"
        params = (person_id,) if limit is None else (person_id, limit, offset)
        ids = self.sql.firsts(f"SELECT id FROM face WHERE person_id = ? ORDER BY id{page}", params)
        faces = self.faces(ids)
        return [faces[i] for i in ids if i in faces]

    def face_ids_of_people(self, person_ids: Sequence[str]) -> np.ndarray:
        """The ids of every face of these people, rising."""
        rows = self.sql.rows_in("SELECT id FROM face WHERE person_id IN ({marks})", person_ids)
        return np.array(sorted(r[0] for r in rows), dtype=np.int64)

    # -- reports ---------------------------------------------------------------------------
    def failures(self) -> list[Failure]:
        """The files that failed, latest first."""
        rows = self.sql.rows(
            "SELECT path, reason, failed_at FROM failure ORDER BY failed_at DESC, path"
        )
        return [Failure(r[0], r[1], self.sql.time(r[2])) for r in rows]

    def reviews(self) -> list[Review]:
        """The photos flagged for review, with the person of their first named face."""
        rows = self.sql.rows(
            "SELECT p.id, p.review, p.face_count, pe.id, pe.name FROM photo p "
            "LEFT JOIN person pe ON pe.id = (SELECT f.person_id FROM face f "
            "WHERE f.photo_id = p.id AND f.person_id IS NOT NULL ORDER BY f.id LIMIT 1) "
            "WHERE p.review IS NOT NULL ORDER BY p.id"
        )
        photos = self._photos(r[0] for r in rows)
        return [
            Review(photos[r[0]], PersonRef(r[3], r[4]) if r[3] else None, r[2], r[1]) for r in rows
        ]

    def stats(self) -> Stats:
        """Counts of the catalogue's photos, faces, people, failures and reviews."""
        row = self.sql.rows(
            "SELECT (SELECT count(*) FROM photo), "
            "(SELECT count(*) FROM photo WHERE face_count = 0), "
            "(SELECT count(*) FROM face), "
            "(SELECT count(*) FROM face WHERE person_id IS NULL), "
            "(SELECT count(*) FROM person), "
            "(SELECT count(*) FROM failure), "
            "(SELECT count(*) FROM photo WHERE review IS NOT NULL)"
        )[0]
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
