"""Storing ingestion outcomes, for both stores (written once over the store's `sql`,
store/dialect.py).

A batch is one write transaction (`save`), which PostgreSQL may run again whole; for each
outcome, failures are recorded, opted-out faces dropped before anything of them is stored,
the file's path recorded, and a label given to the photo's largest, most central face,
unless it names an erased person (store/erasing.py).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from ..entities import (
    Box,
    FailedPhoto,
    FileStat,
    IndexedPhoto,
    KnownPhoto,
    Outcome,
    PersonRef,
    PhotoAnalysis,
    Provenance,
    SaveResult,
)
from ..errors import AmbiguousPerson, NotFound
from ..faces.labelling import choose_labelled_face
from .dialect import Lock, timestamp
from .photos import Photos

__all__ = ["Saving"]


class Saving(Photos):
    """`save` in both stores: photos (photos.py) stored from ingestion outcomes."""

    opted_out: Callable[[PhotoAnalysis], list[bool]]
    resolve_person: Callable[[str], PersonRef]
    _write_person_text: Callable[[str], None]
    _erased_label: Callable[[str, str | None], str | None]
    _record_model: Callable[[str, int], None]

    def save(self, outcomes: Sequence[Outcome]) -> list[SaveResult]:
        """Store a batch of ingestion outcomes in one transaction; idempotent by SHA-256."""
        # A label may create a person: that takes the catalogue's exclusive lock. Plain photos
        # only need their SHA-256 to be unique, so savers of those run side by side.
        labelled = any(
            isinstance(o, IndexedPhoto | KnownPhoto) and o.label is not None for o in outcomes
        )
        lock: Lock = "exclusive" if labelled else "shared"
        return self.sql.repeatable_write(lambda: self._save_all(outcomes, lock), lock)

    def _save_all(self, outcomes: Sequence[Outcome], lock: Lock) -> list[SaveResult]:
        if lock == "shared":
            # Savers of the same SHA-256 or path take turns before either holds a row the
            # other needs.
            keys = {o.file.path for o in outcomes}
            keys |= {o.sha256 for o in outcomes if isinstance(o, IndexedPhoto | KnownPhoto)}
            self.sql.lock_keys(keys)
        self._record_models(outcomes)
        results = [self._save_one(outcome) for outcome in outcomes]
        if any(r.status == "indexed" and r.faces for r in results):
            self._bump_epoch()
        return results

    def _record_models(self, outcomes: Sequence[Outcome]) -> None:
        """Check the batch's vectors against their models' recorded dimensions (a StoreError
        refuses the whole batch), recording a model new to the catalogue: first, so that the
        vectors are never compared with a model's opt-outs of another dimension, and so that
        on PostgreSQL the model's index is built (it waits for other writers of faces) before
        this batch writes a face another writer could wait for."""
        shapes = {
            (o.analysis.model, int(np.size(f.embedding)))
            for o in outcomes
            if isinstance(o, IndexedPhoto)
            for f in o.analysis.faces
        }
        for model, dimension in sorted(shapes):
            self._record_model(model, dimension)

    def _save_one(self, outcome: Outcome) -> SaveResult:
        path = outcome.file.path
        if isinstance(outcome, KnownPhoto) and not self.has_photo(outcome.sha256):
            # Removed by another process between the worker's look and now: read it again
            # next run (size -1 never matches, so the file is not skipped as unchanged).
            reason = "its photo was removed from the catalogue during this run; index it again"
            outcome = FailedPhoto(FileStat(path, -1, -1), reason)
        if isinstance(outcome, FailedPhoto):
            self.sql.execute(
                "INSERT INTO failure (path, size, mtime_ns, reason, failed_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (path) DO UPDATE SET size = excluded.size, "
                "mtime_ns = excluded.mtime_ns, reason = excluded.reason, "
                "failed_at = excluded.failed_at",
                (path, outcome.file.size, outcome.file.mtime_ns, outcome.reason, timestamp()),
            )
            return SaveResult(path, "failed", reason=outcome.reason)
        self.sql.execute("DELETE FROM failure WHERE path = ?", (path,))
        outcome, withheld = self._without_opted_out(outcome)
        photo_id, created = self._photo_id(outcome)
        moved = self._record_file(outcome.file, photo_id)
        review = None
        if outcome.label and withheld:
            # The labelled face may be the one withheld: never give its name to a bystander.
            review = self._flag(photo_id, "label not applied: a face in this photo is withheld")
        elif outcome.label:
            known = outcome.provenance if isinstance(outcome, IndexedPhoto) else None
            origin = known or Provenance()
            origin = replace(origin, source=origin.source or path)
            review = self._apply_label(photo_id, outcome.label, origin)
        if not created:
            return SaveResult(path, "duplicate" if moved else "unchanged", review=review)
        faces = int(self.sql.scalar("SELECT face_count FROM photo WHERE id = ?", (photo_id,)))
        return SaveResult(path, "indexed" if faces else "no_face", faces=faces, review=review)

    def _without_opted_out(
        self, outcome: IndexedPhoto | KnownPhoto
    ) -> tuple[IndexedPhoto | KnownPhoto, bool]:
        """The outcome minus opted-out faces (dropped before anything of them is stored), and
        whether any was dropped."""
        if not isinstance(outcome, IndexedPhoto):
            return outcome, False
        blocked = self.opted_out(outcome.analysis)
        kept = tuple(f for f, b in zip(outcome.analysis.faces, blocked, strict=True) if not b)
        return replace(outcome, analysis=replace(outcome.analysis, faces=kept)), any(blocked)

    def _record_file(self, file: FileStat, photo_id: int) -> bool:
        """Record that `file` holds the photo; True unless it was already recorded so."""
        previous = self.sql.scalar("SELECT photo_id FROM photo_file WHERE path = ?", (file.path,))
        self.sql.execute(
            "INSERT INTO photo_file (path, photo_id, size, mtime_ns, seen_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (path) DO UPDATE SET photo_id = excluded.photo_id, "
            "size = excluded.size, mtime_ns = excluded.mtime_ns, seen_at = excluded.seen_at",
            (file.path, photo_id, file.size, file.mtime_ns, timestamp()),
        )
        if previous is not None and previous != photo_id:
            # The file changed and now holds other bytes: its old photo may have no file left.
            self._delete_orphan_photos([previous])
        return previous is None or previous != photo_id

    def _apply_label(self, photo_id: int, label: str, origin: Provenance) -> str | None:
        """Give `label` to the photo's largest, most central face; returns a review reason."""
        faces = self.sql.rows(
            "SELECT id, box_left, box_top, box_right, box_bottom FROM face "
            "WHERE photo_id = ? ORDER BY id",
            (photo_id,),
        )
        if not faces:
            return None
        refused = self._refused_label(label)
        if refused is not None:
            return self._flag(photo_id, refused)
        try:
            person = self._person_for_label(label, origin)
        except AmbiguousPerson as error:
            return self._flag(photo_id, f"label not applied: {error}")
        ((width, height),) = self.sql.rows(
            "SELECT width, height FROM photo WHERE id = ?", (photo_id,)
        )
        boxes = [Box(f[1], f[2], f[3], f[4]) for f in faces]
        chosen = faces[choose_labelled_face(boxes, width, height)][0]
        # No epoch bump: the vector index holds ids and vectors, not who a face is.
        self.sql.execute("UPDATE face SET person_id = ? WHERE id = ?", (person.id, chosen))
        if len(faces) == 1:
            return None
        return self._flag(
            photo_id,
            f"{len(faces)} faces; the label {label!r} went to the largest, most central one",
        )

    def _refused_label(self, label: str) -> str | None:
        """Why `label` may not be applied: it names an erased person (store/erasing.py)."""
        try:
            named: str | None = self.resolve_person(label).id
        except (NotFound, AmbiguousPerson):
            named = None
        erasure = self._erased_label(label, named)
        if erasure is None:
            return None
        # Never the name: the review note must not bring back what the erasure removed.
        return f"label not applied: it names a person who was erased ({erasure})"

    def _flag(self, photo_id: int, reason: str) -> str:
        self.sql.execute("UPDATE photo SET review = ? WHERE id = ?", (reason, photo_id))
        return reason

    def _person_for_label(self, label: str, origin: Provenance) -> PersonRef:
        try:
            return self.resolve_person(label)
        except NotFound:
            person_id = "p_" + secrets.token_hex(8)
            now = timestamp()
            self.sql.execute(
                "INSERT INTO person (id, name, created_at, updated_at, source, added_by, basis) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    person_id,
                    label,
                    now,
                    now,
                    f"label of {origin.source}" if origin.source else "a label",
                    origin.added_by or None,
                    origin.basis or None,
                ),
            )
            self._write_person_text(person_id)
            return PersonRef(person_id, label)
