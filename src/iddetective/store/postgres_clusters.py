"""Clusters of unnamed faces and the recorded edits of who is who, in the PostgreSQL store.

The same rows and the same records as the SQLite store's (store/sqlite_clusters.py, which
says how they work): a `face_cluster` row per face clustering has considered, a
`face_rejection` per face taken from a person, and an `edit` per change of who is who whose
`changes` (JSON text) hold every face's state before and after, which `undo_edit` puts back.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

import numpy as np
from psycopg import sql

from ..entities import Box, Cluster, Edit, PersonRef, PhotoRef, StoredFace, UnnamedFaces
from ..errors import NotFound, UsageError
from .postgres_sql import PostgresBase, iso, iso_or_none, now, vectors_of

__all__ = ["PostgresClusters"]

#: Faces shown with each cluster in listings.
SAMPLE_FACES = 6
#: A face's cluster state when it has no `face_cluster` row (not considered yet).
UNCONSIDERED = "unconsidered"

FaceState = tuple[str | None, Any]  # (person id, cluster id | None | UNCONSIDERED)


class PostgresClusters(PostgresBase):
    """Cluster and edit methods of `PostgresStore` (a mixin over the store's connection)."""

    _photos: Callable[[Iterable[int]], dict[int, PhotoRef]]
    _write_person_text: Callable[[str], None]
    _delete_person_text: Callable[[str], None]
    faces: Callable[[Sequence[int]], dict[int, StoredFace]]

    # -- clustering ------------------------------------------------------------------------
    def unnamed_faces(self, model: str, only_new: bool) -> UnnamedFaces:
        """Faces of `model` with no person (only those clustering has not considered yet
        when `only_new`), in id order."""
        new = "AND NOT EXISTS (SELECT 1 FROM face_cluster c WHERE c.face_id = f.id)"
        rows = self._binary(
            "SELECT f.id, f.photo_id, f.embedding, f.box_left, f.box_top, f.box_right, "
            "f.box_bottom, f.sharpness FROM face f WHERE f.person_id IS NULL AND f.model = %s "
            f"{new if only_new else ''} ORDER BY f.id",
            (model,),
        )
        return UnnamedFaces(
            ids=np.array([r[0] for r in rows], dtype=np.int64),
            photos=np.array([r[1] for r in rows], dtype=np.int64),
            vectors=vectors_of(rows, 2),
            boxes=tuple(Box(r[3], r[4], r[5], r[6]) for r in rows),
            sharpness=tuple(r[7] for r in rows),
        )

    def cluster_of_faces(self, face_ids: Sequence[int]) -> dict[int, tuple[int | None, int]]:
        """(cluster, photo) of each of these faces that has no person (cluster None: not
        clustered); faces with a person are left out."""
        rows = self._all(
            "SELECT f.id, f.photo_id, c.cluster_id FROM face f LEFT JOIN face_cluster c "
            "ON c.face_id = f.id WHERE f.person_id IS NULL AND f.id = ANY(%s)",
            ([int(i) for i in face_ids],),
        )
        return {r[0]: (r[2], r[1]) for r in rows}

    def photos_of_clusters(self, cluster_ids: Iterable[int]) -> dict[int, set[int]]:
        """The photos that have a face in each of these clusters."""
        rows = self._all(
            "SELECT c.cluster_id, f.photo_id FROM face_cluster c JOIN face f ON f.id = c.face_id "
            "WHERE c.cluster_id = ANY(%s)",
            (sorted({int(i) for i in cluster_ids}),),
        )
        found: dict[int, set[int]] = {}
        for cluster, photo in rows:
            found.setdefault(cluster, set()).add(photo)
        return found

    def cluster_members(self, cluster_ids: Sequence[int]) -> dict[int, list[int]]:
        """The faces in each of these clusters."""
        rows = self._all(
            "SELECT cluster_id, face_id FROM face_cluster WHERE cluster_id = ANY(%s) "
            "ORDER BY cluster_id, face_id",
            ([int(i) for i in cluster_ids],),
        )
        found: dict[int, list[int]] = {}
        for cluster, face in rows:
            found.setdefault(cluster, []).append(face)
        return found

    def set_clusters(self, assignments: Sequence[tuple[int, int | None]], replace: bool) -> int:
        """Record (face, cluster or None) pairs; with `replace`, every other unnamed face's
        cluster row is dropped first (a full re-clustering). Faces that got a person
        meanwhile are skipped. Returns the rows written."""
        with self._write() as db:
            if replace:
                db.execute("DELETE FROM face_cluster")
            with db.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO face_cluster (face_id, cluster_id) SELECT id, %s::bigint "
                    "FROM face WHERE id = %s AND person_id IS NULL ON CONFLICT (face_id) "
                    "DO UPDATE SET cluster_id = excluded.cluster_id",
                    [(cluster, int(face)) for face, cluster in assignments],
                )
                # psycopg adds up the rows of every statement of an executemany.
                return max(cursor.rowcount, 0)

    def new_cluster_ids(self, count: int) -> int:
        """Reserve `count` fresh cluster ids; the first of them."""
        with self._write():
            last = self._value(
                "UPDATE meta SET value = value + %s WHERE key = 'next_cluster' RETURNING value",
                (count,),
            )
        return int(last) - count

    def clusters(self, min_size: int = 2, limit: int = 100, offset: int = 0) -> list[Cluster]:
        """Clusters of at least `min_size` faces, largest first, with a few faces each."""
        rows = self._all(
            "SELECT cluster_id, count(*) AS size FROM face_cluster WHERE cluster_id IS NOT NULL "
            "GROUP BY cluster_id HAVING count(*) >= %s ORDER BY size DESC, cluster_id "
            "LIMIT %s OFFSET %s",
            (min_size, limit, offset),
        )
        return [self._cluster(r[0], r[1], SAMPLE_FACES) for r in rows]

    def cluster(self, cluster_id: int) -> Cluster:
        """One cluster with all its faces; `NotFound` when no face is in it."""
        size = int(
            self._value("SELECT count(*) FROM face_cluster WHERE cluster_id = %s", (cluster_id,))
        )
        if not size:
            raise NotFound(f"no cluster has the id {cluster_id} (iddetective clusters lists them)")
        return self._cluster(cluster_id, size, size)

    def _cluster(self, cluster_id: int, size: int, shown: int) -> Cluster:
        ids = [
            r[0]
            for r in self._all(
                "SELECT face_id FROM face_cluster WHERE cluster_id = %s ORDER BY face_id LIMIT %s",
                (cluster_id, shown),
            )
        ]
        found = self.faces(ids)
        return Cluster(cluster_id, size, tuple(found[i] for i in ids))

    def cluster_stats(self) -> tuple[int, int, int]:
        """(clusters of 2+ faces, faces in them, faces below the quality bar)."""
        row = self._one(
            "SELECT count(*), coalesce(sum(size), 0) FROM (SELECT count(*) AS size FROM "
            "face_cluster WHERE cluster_id IS NOT NULL GROUP BY cluster_id "
            "HAVING count(*) > 1) AS sizes"
        )
        assert row is not None
        poor = self._value("SELECT count(*) FROM face_cluster WHERE cluster_id IS NULL")
        return int(row[0]), int(row[1]), int(poor)

    # -- edits -----------------------------------------------------------------------------
    def name_cluster(
        self, cluster_id: int, person_id: str | None, new_name: str | None, actor: str
    ) -> Edit:
        """Give the cluster's faces to a person (`person_id`, or a new person `new_name`).
        Faces once rejected from that person stay in the cluster."""
        with self._write():
            faces = [
                r[0]
                for r in self._all(
                    "SELECT face_id FROM face_cluster WHERE cluster_id = %s ORDER BY face_id",
                    (cluster_id,),
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
            with db.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO face_rejection (face_id, person_id) VALUES (%s, %s) "
                    "ON CONFLICT DO NOTHING",
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
                r[0]
                for r in self._all(
                    "SELECT id FROM face WHERE person_id = %s ORDER BY id", (source_id,)
                )
            ]
            changes = self._move(faces, target_id)
            added = self._fold_details(source, target_id, snapshot)
            db.execute("DELETE FROM person WHERE id = %s", (source_id,))
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
            rows = self._dicts("SELECT * FROM edit WHERE id = %s", (edit_id,))
            if not rows:
                raise NotFound(f"no edit has the id {edit_id} (iddetective edits lists them)")
            row = rows[0]
            if row["undone_at"]:
                undone = iso(row["undone_at"])
                raise UsageError(f"edit {edit_id} was already undone at {undone}")
            if row["kind"] == "undo":
                raise UsageError(f"edit {edit_id} is an undo; it cannot be undone in turn")
            changes = json.loads(row["changes"])
            self._check_unchanged(edit_id, changes["faces"])
            self._undo(changes)
            db.execute(
                "UPDATE edit SET undone_at = %s, undone_by = %s WHERE id = %s",
                (now(), actor, edit_id),
            )
            faces = [[f, after, before] for f, before, after in changes["faces"]]
            return self._record(
                "undo", f"undid edit {edit_id}: {row['summary']}", actor, faces, undid=edit_id
            )

    def edits(self, limit: int = 100) -> list[Edit]:
        """The most recent edits, newest first."""
        rows = self._dicts("SELECT * FROM edit ORDER BY id DESC LIMIT %s", (limit,))
        return [_edit(r) for r in rows]

    def forget_edits_of(self, person_id: str) -> int:
        """Delete every recorded edit that mentions this person (their erasure)."""
        return self._db.execute(
            "DELETE FROM edit WHERE changes LIKE %s OR summary LIKE %s",
            (f'%"{person_id}"%', f"%({person_id})%"),
        ).rowcount

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
        at = now()
        self._db.execute(
            "INSERT INTO person (id, name, created_at, updated_at, source, added_by) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            (created, name, at, at, source, actor),
        )
        self._write_person_text(created)
        return PersonRef(created, name)

    def _person_row(self, person_id: str) -> dict[str, Any]:
        rows = self._dicts("SELECT * FROM person WHERE id = %s", (person_id,))
        if not rows:
            raise NotFound(f"no person has the id {person_id!r}")
        return rows[0]

    def _existing_faces(self, face_ids: Sequence[int]) -> list[int]:
        wanted = sorted({int(i) for i in face_ids})
        if not wanted:
            raise UsageError("no faces given")
        found = {r[0] for r in self._all("SELECT id FROM face WHERE id = ANY(%s)", (wanted,))}
        missing = [face for face in wanted if face not in found]
        if missing:
            raise NotFound(f"no face has the id {', '.join(map(str, missing))}")
        return wanted

    def _not_rejected(self, faces: Sequence[int], person_id: str) -> list[int]:
        rejected = {
            r[0]
            for r in self._all(
                "SELECT face_id FROM face_rejection WHERE person_id = %s AND face_id = ANY(%s)",
                (person_id, list(faces)),
            )
        }
        return [face for face in faces if face not in rejected]

    def _states(self, faces: Sequence[int]) -> dict[int, FaceState]:
        rows = self._all(
            "SELECT f.id, f.person_id, c.face_id, c.cluster_id FROM face f "
            "LEFT JOIN face_cluster c ON c.face_id = f.id WHERE f.id = ANY(%s)",
            ([int(face) for face in faces],),
        )
        return {r[0]: (r[1], r[3] if r[2] is not None else UNCONSIDERED) for r in rows}

    def _move(self, faces: Sequence[int], person_id: str | None) -> list[list[Any]]:
        """Give faces to a person (None: to nobody, not considered by clustering yet);
        the [face, before, after] states for the record."""
        before = self._states(faces)
        after: FaceState = (person_id, UNCONSIDERED)
        self._set_states({face: after for face in faces})
        return [[face, list(before[face]), list(after)] for face in faces]

    def _set_states(self, states: dict[int, FaceState]) -> None:
        people = [(person_id, face) for face, (person_id, _) in states.items()]
        unclustered = [
            (face,)
            for face, (person_id, cluster) in states.items()
            if cluster == UNCONSIDERED or person_id is not None
        ]
        clustered = [
            (face, cluster)
            for face, (person_id, cluster) in states.items()
            if cluster != UNCONSIDERED and person_id is None
        ]
        with self._db.cursor() as cursor:
            cursor.executemany("UPDATE face SET person_id = %s WHERE id = %s", people)
            cursor.executemany("DELETE FROM face_cluster WHERE face_id = %s", unclustered)
            cursor.executemany(
                "INSERT INTO face_cluster (face_id, cluster_id) VALUES (%s, %s::bigint) "
                "ON CONFLICT (face_id) DO UPDATE SET cluster_id = excluded.cluster_id",
                clustered,
            )

    def _check_unchanged(self, edit_id: int, faces: list[list[Any]]) -> None:
        current = self._states([face for face, _, _ in faces])
        for face, _, after in faces:
            if face not in current:
                raise UsageError(f"edit {edit_id} cannot be undone: face {face} was removed since")
            if list(current[face]) != list(after):
                later = self._value(
                    "SELECT max(id) FROM edit WHERE id > %s AND undone_at IS NULL "
                    "AND kind <> 'undo' AND changes LIKE %s",
                    (edit_id, f"%[{face}, %"),
                )
                by = f" by edit {later}; undo that first" if later else " since"
                raise UsageError(f"edit {edit_id} cannot be undone: face {face} was changed{by}")

    def _undo(self, changes: dict[str, Any]) -> None:
        merged = changes.get("merged")
        if merged:
            self._restore(merged, changes.get("added", {}))
        self._set_states({face: (before[0], before[1]) for face, before, _ in changes["faces"]})
        with self._db.cursor() as cursor:
            cursor.executemany(
                "DELETE FROM face_rejection WHERE face_id = %s AND person_id = %s",
                [tuple(r) for r in changes.get("rejections", [])],
            )
        created = changes.get("created")
        if created:
            still = self._value("SELECT count(*) FROM face WHERE person_id = %s", (created,))
            if not still:
                self._delete_person_text(created)
                self._db.execute("DELETE FROM person WHERE id = %s", (created,))

    def _snapshot(self, person_id: str) -> dict[str, Any]:
        """Every row of a person a merge folds into another, to put back on undo."""
        person = {
            column: iso(value) if isinstance(value, datetime) else value
            for column, value in self._person_row(person_id).items()
        }

        def firsts(query: str, params: tuple[Any, ...] = (person_id,)) -> list[Any]:
            return [r[0] for r in self._all(query, params)]

        return {
            "person": person,
            "aliases": firsts("SELECT name FROM alias WHERE person_id = %s ORDER BY name"),
            "accounts": firsts("SELECT id FROM account WHERE person_id = %s ORDER BY id"),
            "lists": firsts(
                "SELECT list_id FROM list_member WHERE person_id = %s ORDER BY list_id"
            ),
            "relations": [
                list(r)
                for r in self._all(
                    "SELECT person_id, other_id, kind FROM relation "
                    "WHERE person_id = %s OR other_id = %s ORDER BY person_id, other_id, kind",
                    (person_id, person_id),
                )
            ],
            "rejections": firsts(
                "SELECT face_id FROM face_rejection WHERE person_id = %s ORDER BY face_id"
            ),
        }

    def _fold_details(
        self, source: dict[str, Any], target_id: str, snapshot: dict[str, Any]
    ) -> dict[str, Any]:
        """Give the source's name, aliases, accounts, lists and relations to the target;
        what was added to the target (and was not there before), for the undo."""
        db = self._db
        source_id = source["id"]
        added_aliases = []
        for name in dict.fromkeys([source["name"], *snapshot["aliases"]]):
            cursor = db.execute(
                "INSERT INTO alias (person_id, name) SELECT %(target)s, %(name)s::text "
                "WHERE %(name)s::text <> (SELECT name FROM person WHERE id = %(target)s) "
                "ON CONFLICT DO NOTHING",
                {"target": target_id, "name": name},
            )
            if cursor.rowcount:
                added_aliases.append(name)
        db.execute("UPDATE account SET person_id = %s WHERE person_id = %s", (target_id, source_id))
        added_lists = []
        for list_id in snapshot["lists"]:
            cursor = db.execute(
                "INSERT INTO list_member (list_id, person_id) VALUES (%s, %s) "
                "ON CONFLICT DO NOTHING",
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
                "INSERT INTO relation (person_id, other_id, kind) VALUES (%s, %s, %s) "
                "ON CONFLICT DO NOTHING",
                (person, other, kind),
            )
            if cursor.rowcount:
                added_relations.append([person, other, kind])
        added_rejections = []
        for face in snapshot["rejections"]:
            cursor = db.execute(
                "INSERT INTO face_rejection (face_id, person_id) VALUES (%s, %s) "
                "ON CONFLICT DO NOTHING",
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
        target_id = added["target"]
        person = snapshot["person"]
        source_id = person["id"]
        self._db.execute(
            sql.SQL("INSERT INTO person ({}) VALUES ({})").format(
                sql.SQL(", ").join(map(sql.Identifier, person)),
                sql.SQL(", ").join(sql.Placeholder() * len(person)),
            ),
            list(person.values()),
        )
        steps: list[tuple[str, list[tuple[Any, ...]]]] = [
            (
                "DELETE FROM alias WHERE person_id = %s AND name = %s",
                [(target_id, name) for name in added["aliases"]],
            ),
            (
                "INSERT INTO alias (person_id, name) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                [(source_id, name) for name in snapshot["aliases"]],
            ),
            (
                "UPDATE account SET person_id = %s WHERE id = %s",
                [(source_id, account) for account in snapshot["accounts"]],
            ),
            (
                "DELETE FROM list_member WHERE list_id = %s AND person_id = %s",
                [(list_id, target_id) for list_id in added["lists"]],
            ),
            (
                "INSERT INTO list_member (list_id, person_id) VALUES (%s, %s) "
                "ON CONFLICT DO NOTHING",
                [(list_id, source_id) for list_id in snapshot["lists"]],
            ),
            (
                "DELETE FROM relation WHERE person_id = %s AND other_id = %s AND kind = %s",
                [tuple(r) for r in added["relations"]],
            ),
            (
                "INSERT INTO relation (person_id, other_id, kind) VALUES (%s, %s, %s) "
                "ON CONFLICT DO NOTHING",
                [tuple(r) for r in snapshot["relations"]],
            ),
            (
                "DELETE FROM face_rejection WHERE face_id = %s AND person_id = %s",
                [(face, target_id) for face in added["rejections"]],
            ),
            (
                "INSERT INTO face_rejection (face_id, person_id) VALUES (%s, %s) "
                "ON CONFLICT DO NOTHING",
                [(face, source_id) for face in snapshot["rejections"]],
            ),
        ]
        with self._db.cursor() as cursor:
            for statement, rows in steps:
                cursor.executemany(statement, rows)
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
        (row,) = self._dicts(
            "INSERT INTO edit (at, actor, kind, summary, changes) VALUES (%s, %s, %s, %s, %s) "
            "RETURNING *",
            (now(), actor, kind, summary, json.dumps(changes)),
        )
        return _edit(row)


def _edit(row: dict[str, Any]) -> Edit:
    faces = len(json.loads(row["changes"])["faces"])
    return Edit(
        row["id"],
        iso(row["at"]),
        row["actor"],
        row["kind"],
        row["summary"],
        faces,
        iso_or_none(row["undone_at"]),
        row["undone_by"],
    )


def _faces(count: int) -> str:
    return "1 face" if count == 1 else f"{count} faces"
