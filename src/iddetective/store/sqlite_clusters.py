"""Clusters of unnamed faces and the recorded edits of who is who, in the SQLite store.

A face nobody has named has a `face_cluster` row once clustering has considered it: its
cluster, or NULL when it is below the quality bar. Naming a cluster, merging two people,
moving faces to another person (a split) and rejecting a face from a person each run in one
transaction and write an `edit` row whose `changes` hold every face's state before and after
(and, for a merge, the merged person's rows), which is what `undo_edit` puts back. An undo
is refused when a later edit has changed one of the same faces since.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

import numpy as np

from ..entities import Box, Cluster, Edit, PersonRef, PhotoRef, StoredFace, UnnamedFaces
from ..errors import NotFound, UsageError
from .sqlite_sql import chunks, select_in

__all__ = ["SqliteClusters"]

#: Faces shown with each cluster in listings.
SAMPLE_FACES = 6
#: A face's cluster state when it has no `face_cluster` row (not considered yet).
UNCONSIDERED = "unconsidered"

FaceState = tuple[str | None, Any]  # (person id, cluster id | None | UNCONSIDERED)


def _unnamed(rows: Sequence[sqlite3.Row]) -> UnnamedFaces:
    vectors = [np.frombuffer(r["embedding"], dtype="<f4") for r in rows]
    return UnnamedFaces(
        ids=np.array([r["id"] for r in rows], dtype=np.int64),
        photos=np.array([r["photo_id"] for r in rows], dtype=np.int64),
        vectors=np.stack(vectors) if vectors else np.zeros((0, 0), np.float32),
        boxes=tuple(
            Box(r["box_left"], r["box_top"], r["box_right"], r["box_bottom"]) for r in rows
        ),
        sharpness=tuple(r["sharpness"] for r in rows),
    )


class SqliteClusters:
    """Cluster and edit methods of `SqliteStore` (a mixin: it uses the store's connection)."""

    _db: sqlite3.Connection
    _write: Callable[[], AbstractContextManager[sqlite3.Connection]]
    _photos: Callable[[Iterable[int]], dict[int, PhotoRef]]
    _write_person_text: Callable[[str], None]
    _delete_person_text: Callable[[str], None]
    faces: Callable[[Sequence[int]], dict[int, StoredFace]]

    # -- clustering ------------------------------------------------------------------------
    def unnamed_faces(self, model: str, only_new: bool) -> UnnamedFaces:
        """Faces of `model` with no person (only those clustering has not considered yet
        when `only_new`), in id order."""
        new = "AND NOT EXISTS (SELECT 1 FROM face_cluster c WHERE c.face_id = f.id)"
        rows = self._db.execute(
            "SELECT f.id, f.photo_id, f.embedding, f.box_left, f.box_top, f.box_right, "
            "f.box_bottom, f.sharpness FROM face f WHERE f.person_id IS NULL AND f.model = ? "
            f"{new if only_new else ''} ORDER BY f.id",
            (model,),
        ).fetchall()
        return _unnamed(rows)

    def cluster_of_faces(self, face_ids: Sequence[int]) -> dict[int, tuple[int | None, int]]:
        """(cluster, photo) of each of these faces that has no person (cluster None: not
        clustered); faces with a person are left out."""
        rows = select_in(
            self._db,
            "SELECT f.id, f.photo_id, c.cluster_id FROM face f LEFT JOIN face_cluster c "
            "ON c.face_id = f.id WHERE f.person_id IS NULL AND f.id IN ({marks})",
            (int(i) for i in face_ids),
        )
        return {r["id"]: (r["cluster_id"], r["photo_id"]) for r in rows}

    def photos_of_clusters(self, cluster_ids: Iterable[int]) -> dict[int, set[int]]:
        """The photos that have a face in each of these clusters."""
        rows = select_in(
            self._db,
            "SELECT c.cluster_id, f.photo_id FROM face_cluster c JOIN face f ON f.id = c.face_id "
            "WHERE c.cluster_id IN ({marks})",
            sorted(set(cluster_ids)),
        )
        found: dict[int, set[int]] = {}
        for r in rows:
            found.setdefault(r["cluster_id"], set()).add(r["photo_id"])
        return found

    def cluster_members(self, cluster_ids: Sequence[int]) -> dict[int, list[int]]:
        """The faces in each of these clusters."""
        rows = select_in(
            self._db,
            "SELECT cluster_id, face_id FROM face_cluster WHERE cluster_id IN ({marks})",
            cluster_ids,
        )
        found: dict[int, list[int]] = {}
        for r in rows:
            found.setdefault(r["cluster_id"], []).append(r["face_id"])
        return found

    def set_clusters(self, assignments: Sequence[tuple[int, int | None]], replace: bool) -> int:
        """Record (face, cluster or None) pairs; with `replace`, every other unnamed face's
        cluster row is dropped first (a full re-clustering). Faces that got a person
        meanwhile are skipped. Returns the rows written."""
        with self._write() as db:
            if replace:
                db.execute("DELETE FROM face_cluster")
            written = 0
            for chunk in chunks(list(assignments)):
                before = db.total_changes
                db.executemany(
                    "INSERT INTO face_cluster (face_id, cluster_id) SELECT id, ? FROM face "
                    "WHERE id = ? AND person_id IS NULL ON CONFLICT (face_id) DO UPDATE "
                    "SET cluster_id = excluded.cluster_id",
                    [(cluster, face) for face, cluster in chunk],
                )
                written += db.total_changes - before
        return written

    def new_cluster_ids(self, count: int) -> int:
        """Reserve `count` fresh cluster ids; the first of them."""
        with self._write() as db:
            last = db.execute(
                "UPDATE meta SET value = value + ? WHERE key = 'next_cluster' RETURNING value",
                (count,),
            ).fetchone()[0]
        return int(last) - count

    def clusters(self, min_size: int = 2, limit: int = 100, offset: int = 0) -> list[Cluster]:
        """Clusters of at least `min_size` faces, largest first, with a few faces each."""
        rows = self._db.execute(
            "SELECT cluster_id, count(*) AS size FROM face_cluster WHERE cluster_id IS NOT NULL "
            "GROUP BY cluster_id HAVING count(*) >= ? ORDER BY size DESC, cluster_id "
            "LIMIT ? OFFSET ?",
            (min_size, limit, offset),
        ).fetchall()
        return [self._cluster(r["cluster_id"], r["size"], SAMPLE_FACES) for r in rows]

    def cluster(self, cluster_id: int) -> Cluster:
        """One cluster with all its faces; `NotFound` when no face is in it."""
        size = self._db.execute(
            "SELECT count(*) FROM face_cluster WHERE cluster_id = ?", (cluster_id,)
        ).fetchone()[0]
        if not size:
            raise NotFound(f"no cluster has the id {cluster_id} (iddetective clusters lists them)")
        return self._cluster(cluster_id, size, size)

    def _cluster(self, cluster_id: int, size: int, shown: int) -> Cluster:
        ids = [
            r[0]
            for r in self._db.execute(
                "SELECT face_id FROM face_cluster WHERE cluster_id = ? ORDER BY face_id LIMIT ?",
                (cluster_id, shown),
            )
        ]
        found = self.faces(ids)
        return Cluster(cluster_id, size, tuple(found[i] for i in ids))

    def cluster_stats(self) -> tuple[int, int, int]:
        """(clusters of 2+ faces, faces in them, faces below the quality bar)."""
        row = self._db.execute(
            "SELECT count(*), coalesce(sum(size), 0) FROM (SELECT count(*) AS size FROM "
            "face_cluster WHERE cluster_id IS NOT NULL GROUP BY cluster_id HAVING size > 1)"
        ).fetchone()
        poor = self._db.execute(
            "SELECT count(*) FROM face_cluster WHERE cluster_id IS NULL"
        ).fetchone()[0]
        return int(row[0]), int(row[1]), int(poor)

    # -- edits -----------------------------------------------------------------------------
    def name_cluster(
        self, cluster_id: int, person_id: str | None, new_name: str | None, actor: str
    ) -> Edit:
        """Give the cluster's faces to a person (`person_id`, or a new person `new_name`).
        Faces once rejected from that person stay in the cluster."""
        with self._write() as db:
            faces = [
                r[0]
                for r in db.execute(
                    "SELECT face_id FROM face_cluster WHERE cluster_id = ?", (cluster_id,)
                )
            ]
            if not faces:
                raise NotFound(f"no cluster has the id {cluster_id}")
            person = self._target(person_id, new_name, actor, f"cluster {cluster_id}")
            kept = self._not_rejected(faces, person.id)
            changes = self._move(kept, person.id)
            named = f"{person.name} ({person.id})"
            summary = f"named cluster {cluster_id} ({_faces(len(kept))}) {named}"
            if len(kept) < len(faces):
                summary += f"; {_faces(len(faces) - len(kept))} once rejected from them stayed"
            return self._record(
                "name-cluster", summary, actor, changes, created=new_name is not None and person
            )

    def move_faces(
        self, face_ids: Sequence[int], person_id: str | None, new_name: str | None, actor: str
    ) -> Edit:
        """Move faces (named or not) to another person or to a new person `new_name`: a
        split when they come from one person. Faces rejected from the target are refused."""
        with self._write():
            faces = self._existing_faces(face_ids)
            person = self._target(person_id, new_name, actor, "faces moved by hand")
            refused = sorted(set(faces) - set(self._not_rejected(faces, person.id)))
            if refused:
                raise UsageError(
                    f"faces {', '.join(map(str, refused))} were rejected from {person.name} "
                    f"({person.id}); undo that rejection first"
                )
            changes = self._move(faces, person.id)
            summary = f"moved {_faces(len(faces))} to {person.name} ({person.id})"
            return self._record(
                "move-faces", summary, actor, changes, created=new_name is not None and person
            )

    def reject_faces(self, face_ids: Sequence[int], actor: str) -> Edit:
        """Take faces from the person they are given to; they never rejoin that person on
        their own (clustering considers them again as unnamed faces)."""
        with self._write() as db:
            faces = self._existing_faces(face_ids)
            states = self._states(faces)
            unnamed = [face for face in faces if states[face][0] is None]
            if unnamed:
                raise UsageError(
                    f"faces {', '.join(map(str, unnamed))} belong to nobody: nothing to reject"
                )
            rejections = [(face, str(states[face][0])) for face in faces]
            db.executemany(
                "INSERT OR IGNORE INTO face_rejection (face_id, person_id) VALUES (?, ?)",
                rejections,
            )
            changes = self._move(faces, None)
            people = [self._person_row(p) for p in sorted({p for _, p in rejections})]
            named = ", ".join(f"{row['name']} ({row['id']})" for row in people)
            summary = f"rejected {_faces(len(faces))} from {named}"
            return self._record("reject-faces", summary, actor, changes, rejections=rejections)

    def merge_people(self, target_id: str, source_id: str, actor: str) -> Edit:
        """Fold `source_id` into `target_id`: faces, name (as an alias), aliases, accounts,
        lists and relations; the source person is gone until the edit is undone."""
        if target_id == source_id:
            raise UsageError("a person cannot be merged with themselves")
        with self._write() as db:
            target, source = self._person_row(target_id), self._person_row(source_id)
            snapshot = self._snapshot(source_id)
            faces = [
                r[0] for r in db.execute("SELECT id FROM face WHERE person_id = ?", (source_id,))
            ]
            changes = self._move(faces, target_id)
            added = self._fold_details(source, target_id, snapshot)
            db.execute("DELETE FROM person WHERE id = ?", (source_id,))
            self._delete_person_text(source_id)
            self._write_person_text(target_id)
            summary = (
                f"merged {source['name']} ({source_id}) into {target['name']} ({target_id}): "
                f"{_faces(len(faces))}"
            )
            return self._record(
                "merge-people", summary, actor, changes, merged=snapshot, added=added
            )

    def undo_edit(self, edit_id: int, actor: str) -> Edit:
        """Put back what edit `edit_id` changed; recorded as an edit of its own."""
        with self._write() as db:
            row = db.execute("SELECT * FROM edit WHERE id = ?", (edit_id,)).fetchone()
            if row is None:
                raise NotFound(f"no edit has the id {edit_id} (iddetective edits lists them)")
            if row["undone_at"]:
                raise UsageError(f"edit {edit_id} was already undone at {row['undone_at']}")
            if row["kind"] == "undo":
                raise UsageError(f"edit {edit_id} is an undo; it cannot be undone in turn")
            changes = json.loads(row["changes"])
            self._check_unchanged(edit_id, changes["faces"])
            self._undo(changes)
            now = _now()
            db.execute(
                "UPDATE edit SET undone_at = ?, undone_by = ? WHERE id = ?", (now, actor, edit_id)
            )
            faces = [[f, after, before] for f, before, after in changes["faces"]]
            return self._record(
                "undo", f"undid edit {edit_id}: {row['summary']}", actor, faces, undid=edit_id
            )

    def edits(self, limit: int = 100) -> list[Edit]:
        """The most recent edits, newest first."""
        rows = self._db.execute("SELECT * FROM edit ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [_edit(r) for r in rows]

    def forget_edits_of(self, person_id: str) -> int:
        """Delete every recorded edit that mentions this person (their erasure)."""
        cursor = self._db.execute(
            "DELETE FROM edit WHERE changes LIKE ? OR summary LIKE ?",
            (f'%"{person_id}"%', f"%({person_id})%"),
        )
        return cursor.rowcount

    # -- the parts of an edit --------------------------------------------------------------
    def _target(
        self, person_id: str | None, new_name: str | None, actor: str, source: str
    ) -> PersonRef:
        if (person_id is None) == (new_name is None):
            raise UsageError("give either an existing person or a new name, not both")
        if person_id is not None:
            row = self._person_row(person_id)
            return PersonRef(row["id"], row["name"])
        name = (new_name or "").strip()
        if not name:
            raise UsageError("a new person needs a name that is not empty")
        created = "p_" + secrets.token_hex(8)
        now = _now()
        self._db.execute(
            "INSERT INTO person (id, name, created_at, updated_at, source, added_by) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (created, name, now, now, source, actor),
        )
        self._write_person_text(created)
        return PersonRef(created, name)

    def _person_row(self, person_id: str) -> sqlite3.Row:
        row = self._db.execute("SELECT * FROM person WHERE id = ?", (person_id,)).fetchone()
        if row is None:
            raise NotFound(f"no person has the id {person_id!r}")
        return row

    def _existing_faces(self, face_ids: Sequence[int]) -> list[int]:
        wanted = sorted({int(i) for i in face_ids})
        if not wanted:
            raise UsageError("no faces given")
        found = {
            r[0] for r in select_in(self._db, "SELECT id FROM face WHERE id IN ({marks})", wanted)
        }
        missing = [face for face in wanted if face not in found]
        if missing:
            raise NotFound(f"no face has the id {', '.join(map(str, missing))}")
        return wanted

    def _not_rejected(self, faces: Sequence[int], person_id: str) -> list[int]:
        rejected = {
            r[0]
            for r in select_in(
                self._db,
                "SELECT face_id FROM face_rejection WHERE person_id = ? AND face_id IN ({marks})",
                faces,
                before=(person_id,),
            )
        }
        return [face for face in faces if face not in rejected]

    def _states(self, faces: Sequence[int]) -> dict[int, FaceState]:
        rows = select_in(
            self._db,
            "SELECT f.id, f.person_id, c.face_id AS considered, c.cluster_id FROM face f "
            "LEFT JOIN face_cluster c ON c.face_id = f.id WHERE f.id IN ({marks})",
            faces,
        )
        return {
            r["id"]: (r["person_id"], r["cluster_id"] if r["considered"] else UNCONSIDERED)
            for r in rows
        }

    def _move(self, faces: Sequence[int], person_id: str | None) -> list[list[Any]]:
        """Give faces to a person (None: to nobody, not considered by clustering yet);
        the [face, before, after] states for the record."""
        before = self._states(faces)
        after: FaceState = (person_id, UNCONSIDERED)
        self._set_states({face: after for face in faces})
        return [[face, list(before[face]), list(after)] for face in faces]

    def _set_states(self, states: dict[int, FaceState]) -> None:
        db = self._db
        for face, (person_id, cluster) in states.items():
            db.execute("UPDATE face SET person_id = ? WHERE id = ?", (person_id, face))
            if cluster == UNCONSIDERED or person_id is not None:
                db.execute("DELETE FROM face_cluster WHERE face_id = ?", (face,))
            else:
                db.execute(
                    "INSERT INTO face_cluster (face_id, cluster_id) VALUES (?, ?) "
                    "ON CONFLICT (face_id) DO UPDATE SET cluster_id = excluded.cluster_id",
                    (face, cluster),
                )

    def _check_unchanged(self, edit_id: int, faces: list[list[Any]]) -> None:
        now = self._states([face for face, _, _ in faces])
        for face, _, after in faces:
            if face not in now:
                raise UsageError(f"edit {edit_id} cannot be undone: face {face} was removed since")
            if list(now[face]) != list(after):
                later = self._db.execute(
                    "SELECT max(id) FROM edit WHERE id > ? AND undone_at IS NULL "
                    "AND kind <> 'undo' AND changes LIKE ?",
                    (edit_id, f"%[{face}, %"),
                ).fetchone()[0]
                by = f" by edit {later}; undo that first" if later else " since"
                raise UsageError(f"edit {edit_id} cannot be undone: face {face} was changed{by}")

    def _undo(self, changes: dict[str, Any]) -> None:
        merged = changes.get("merged")
        if merged:
            self._restore(merged, changes.get("added", {}))
        self._set_states({face: tuple(before) for face, before, _ in changes["faces"]})
        for face, person in changes.get("rejections", []):
            self._db.execute(
                "DELETE FROM face_rejection WHERE face_id = ? AND person_id = ?", (face, person)
            )
        created = changes.get("created")
        if created:
            still = self._db.execute(
                "SELECT count(*) FROM face WHERE person_id = ?", (created,)
            ).fetchone()[0]
            if not still:
                self._delete_person_text(created)
                self._db.execute("DELETE FROM person WHERE id = ?", (created,))

    def _snapshot(self, person_id: str) -> dict[str, Any]:
        """Every row of a person a merge folds into another, to put back on undo."""
        db = self._db
        person = dict(self._person_row(person_id))
        return {
            "person": person,
            "aliases": [
                r[0] for r in db.execute("SELECT name FROM alias WHERE person_id = ?", (person_id,))
            ],
            "accounts": [
                r[0] for r in db.execute("SELECT id FROM account WHERE person_id = ?", (person_id,))
            ],
            "lists": [
                r[0]
                for r in db.execute(
                    "SELECT list_id FROM list_member WHERE person_id = ?", (person_id,)
                )
            ],
            "relations": [
                list(r)
                for r in db.execute(
                    "SELECT person_id, other_id, kind FROM relation "
                    "WHERE person_id = ? OR other_id = ?",
                    (person_id, person_id),
                )
            ],
            "rejections": [
                r[0]
                for r in db.execute(
                    "SELECT face_id FROM face_rejection WHERE person_id = ?", (person_id,)
                )
            ],
        }

    def _fold_details(
        self, source: sqlite3.Row, target_id: str, snapshot: dict[str, Any]
    ) -> dict[str, Any]:
        """Give the source's name, aliases, accounts, lists and relations to the target;
        what was added to the target (and was not there before), for the undo."""
        db = self._db
        source_id = source["id"]
        aliases = [name for name in [source["name"], *snapshot["aliases"]]]
        added_aliases = []
        for name in dict.fromkeys(aliases):
            cursor = db.execute(
                "INSERT OR IGNORE INTO alias (person_id, name) "
                "SELECT ?, ? WHERE ? <> (SELECT name FROM person WHERE id = ?)",
                (target_id, name, name, target_id),
            )
            if cursor.rowcount:
                added_aliases.append(name)
        db.execute("UPDATE account SET person_id = ? WHERE person_id = ?", (target_id, source_id))
        added_lists = []
        for list_id in snapshot["lists"]:
            cursor = db.execute(
                "INSERT OR IGNORE INTO list_member (list_id, person_id) VALUES (?, ?)",
                (list_id, target_id),
            )
            if cursor.rowcount:
                added_lists.append(list_id)
        added_relations = []
        for person, other, kind in snapshot["relations"]:
            person = target_id if person == source_id else person
            other = target_id if other == source_id else other
            if person == other:
                continue  # a relation between the two merged people
            cursor = db.execute(
                "INSERT OR IGNORE INTO relation (person_id, other_id, kind) VALUES (?, ?, ?)",
                (person, other, kind),
            )
            if cursor.rowcount:
                added_relations.append([person, other, kind])
        added_rejections = []
        for face in snapshot["rejections"]:
            cursor = db.execute(
                "INSERT OR IGNORE INTO face_rejection (face_id, person_id) VALUES (?, ?)",
                (face, target_id),
            )
            if cursor.rowcount:
                added_rejections.append(face)
        return {
            "target": target_id,
            "aliases": added_aliases,
            "lists": added_lists,
            "relations": added_relations,
            "rejections": added_rejections,
        }

    def _restore(self, snapshot: dict[str, Any], added: dict[str, Any]) -> None:
        """Undo a merge's folding: the source person and their rows come back, what the
        target got from them goes."""
        db = self._db
        target_id = added["target"]
        person = snapshot["person"]
        columns = ", ".join(person)
        db.execute(
            f"INSERT INTO person ({columns}) VALUES ({', '.join('?' * len(person))})",
            list(person.values()),
        )
        source_id = person["id"]
        db.executemany(
            "DELETE FROM alias WHERE person_id = ? AND name = ?",
            [(target_id, name) for name in added["aliases"]],
        )
        db.executemany(
            "INSERT OR IGNORE INTO alias (person_id, name) VALUES (?, ?)",
            [(source_id, name) for name in snapshot["aliases"]],
        )
        db.executemany(
            "UPDATE account SET person_id = ? WHERE id = ?",
            [(source_id, account) for account in snapshot["accounts"]],
        )
        db.executemany(
            "DELETE FROM list_member WHERE list_id = ? AND person_id = ?",
            [(list_id, target_id) for list_id in added["lists"]],
        )
        db.executemany(
            "INSERT OR IGNORE INTO list_member (list_id, person_id) VALUES (?, ?)",
            [(list_id, source_id) for list_id in snapshot["lists"]],
        )
        db.executemany(
            "DELETE FROM relation WHERE person_id = ? AND other_id = ? AND kind = ?",
            [tuple(r) for r in added["relations"]],
        )
        db.executemany(
            "INSERT OR IGNORE INTO relation (person_id, other_id, kind) VALUES (?, ?, ?)",
            [tuple(r) for r in snapshot["relations"]],
        )
        db.executemany(
            "DELETE FROM face_rejection WHERE face_id = ? AND person_id = ?",
            [(face, target_id) for face in added["rejections"]],
        )
        db.executemany(
            "INSERT OR IGNORE INTO face_rejection (face_id, person_id) VALUES (?, ?)",
            [(face, source_id) for face in snapshot["rejections"]],
        )
        self._write_person_text(source_id)
        self._write_person_text(target_id)

    def _record(
        self,
        kind: str,
        summary: str,
        actor: str,
        faces: list[list[Any]],
        created: PersonRef | bool | None = None,
        **extra: Any,
    ) -> Edit:
        changes: dict[str, Any] = {"faces": faces, **extra}
        if isinstance(created, PersonRef):
            changes["created"] = created.id
        cursor = self._db.execute(
            "INSERT INTO edit (at, actor, kind, summary, changes) VALUES (?, ?, ?, ?, ?) "
            "RETURNING *",
            (_now(), actor, kind, summary, json.dumps(changes)),
        )
        return _edit(cursor.fetchone())


def _edit(row: sqlite3.Row) -> Edit:
    faces = len(json.loads(row["changes"])["faces"])
    return Edit(
        row["id"],
        row["at"],
        row["actor"],
        row["kind"],
        row["summary"],
        faces,
        row["undone_at"],
        row["undone_by"],
    )


def _faces(count: int) -> str:
    return "1 face" if count == 1 else f"{count} faces"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
