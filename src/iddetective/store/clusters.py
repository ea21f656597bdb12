"""Clusters of unnamed faces and the recorded edits of who is who, for both stores (written
once over the store's `sql`, store/dialect.py).

A face nobody has named has a `face_cluster` row once clustering has considered it: its
cluster, or NULL when it is below the quality bar. Naming a cluster, merging two people,
moving faces to another person (a split) and rejecting a face from a person each run in one
transaction and write an `edit` row whose `changes` (JSON text) hold every face's state before
and after (and, for a merge, the merged person's rows), which is what `undo_edit` puts back.
An undo is refused when a later edit has changed one of the same faces since.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from ..entities import Box, Cluster, Edit, PersonRef, StoredFace, UnnamedFaces
from ..errors import NotFound, UsageError
from .dialect import Sql, timestamp
from .person_text import TextSearch

__all__ = ["Clusters"]

#: Faces shown with each cluster in listings.
SAMPLE_FACES = 6
#: A face's cluster state when it has no `face_cluster` row (not considered yet).
UNCONSIDERED = "unconsidered"

FaceState = tuple[str | None, Any]  # (person id, cluster id | None | UNCONSIDERED)


class Clusters:
    """Cluster and edit methods of both stores."""

    sql: Sql
    text: TextSearch
    _write_person_text: Callable[[str], None]
    faces: Callable[[Sequence[int]], dict[int, StoredFace]]
    model_dimension: Callable[[str], int | None]

    # -- clustering ------------------------------------------------------------------------
    def unnamed_faces(self, model: str, only_new: bool) -> UnnamedFaces:
        """Faces of `model` with no person (only those clustering has not considered yet
        when `only_new`), in id order."""
        new = "AND NOT EXISTS (SELECT 1 FROM face_cluster c WHERE c.face_id = f.id)"
        rows, vectors = self.sql.vector_rows(
            "SELECT f.id, f.photo_id, f.embedding, f.box_left, f.box_top, f.box_right, "
            "f.box_bottom, f.sharpness FROM face f WHERE f.person_id IS NULL AND f.model = ? "
            f"{new if only_new else ''} ORDER BY f.id",
            (model,),
            2,
            self.model_dimension(model),
        )
        return UnnamedFaces(
            ids=np.array([r[0] for r in rows], dtype=np.int64),
            photos=np.array([r[1] for r in rows], dtype=np.int64),
            vectors=vectors,
            boxes=tuple(Box(r[3], r[4], r[5], r[6]) for r in rows),
            sharpness=tuple(r[7] for r in rows),
        )

    def cluster_of_faces(self, face_ids: Sequence[int]) -> dict[int, tuple[int | None, int]]:
        """(cluster, photo) of each of these faces that has no person (cluster None: not
        clustered); faces with a person are left out."""
        rows = self.sql.rows_in(
            "SELECT f.id, f.photo_id, c.cluster_id FROM face f LEFT JOIN face_cluster c "
            "ON c.face_id = f.id WHERE f.person_id IS NULL AND f.id IN ({marks})",
            [int(i) for i in face_ids],
        )
        return {r[0]: (r[2], r[1]) for r in rows}

    def photos_of_clusters(self, cluster_ids: Iterable[int]) -> dict[int, set[int]]:
        """The photos that have a face in each of these clusters."""
        rows = self.sql.rows_in(
            "SELECT c.cluster_id, f.photo_id FROM face_cluster c JOIN face f ON f.id = c.face_id "
            "WHERE c.cluster_id IN ({marks})",
            sorted({int(i) for i in cluster_ids}),
        )
        found: dict[int, set[int]] = {}
        for cluster, photo in rows:
            found.setdefault(cluster, set()).add(photo)
        return found

    def cluster_members(self, cluster_ids: Sequence[int]) -> dict[int, list[int]]:
        """The faces in each of these clusters."""
        rows = self.sql.rows_in(
            "SELECT cluster_id, face_id FROM face_cluster WHERE cluster_id IN ({marks}) "
            "ORDER BY cluster_id, face_id",
            [int(i) for i in cluster_ids],
        )
        found: dict[int, list[int]] = {}
        for cluster, face in rows:
            found.setdefault(cluster, []).append(face)
        return found

    def set_clusters(self, assignments: Sequence[tuple[int, int | None]], replace: bool) -> int:
        """Record (face, cluster or None) pairs; with `replace`, every other unnamed face's
        cluster row is dropped first (a full re-clustering). Faces that got a person
        meanwhile are skipped. Returns the rows written."""
        with self.sql.write():
            if replace:
                self.sql.execute("DELETE FROM face_cluster")
            return self.sql.execute_many(
                "INSERT INTO face_cluster (face_id, cluster_id) SELECT id, CAST(? AS bigint) "
                "FROM face WHERE id = ? AND person_id IS NULL ON CONFLICT (face_id) "
                "DO UPDATE SET cluster_id = excluded.cluster_id",
                [(cluster, int(face)) for face, cluster in assignments],
            )

    def new_cluster_ids(self, count: int) -> int:
        """Reserve `count` fresh cluster ids; the first of them."""
        with self.sql.write():
            last = self.sql.scalar(
                "UPDATE meta SET value = value + ? WHERE key = 'next_cluster' RETURNING value",
                (count,),
            )
        return int(last) - count

    def clusters(self, min_size: int = 2, limit: int = 100, offset: int = 0) -> list[Cluster]:
        """Clusters of at least `min_size` faces, largest first, with a few faces each."""
        rows = self.sql.rows(
            "SELECT cluster_id, count(*) AS size FROM face_cluster WHERE cluster_id IS NOT NULL "
            "GROUP BY cluster_id HAVING count(*) >= ? ORDER BY size DESC, cluster_id "
            "LIMIT ? OFFSET ?",
            (min_size, limit, offset),
        )
        return [self._cluster(cluster, size, SAMPLE_FACES) for cluster, size in rows]

    def cluster(self, cluster_id: int) -> Cluster:
        """One cluster with all its faces; `NotFound` when no face is in it."""
        size = self.sql.scalar(
            "SELECT count(*) FROM face_cluster WHERE cluster_id = ?", (cluster_id,)
        )
        if not size:
            raise NotFound(f"no cluster has the id {cluster_id} (iddetective clusters lists them)")
        return self._cluster(cluster_id, int(size), int(size))

    def _cluster(self, cluster_id: int, size: int, shown: int) -> Cluster:
        ids = self.sql.firsts(
            "SELECT face_id FROM face_cluster WHERE cluster_id = ? ORDER BY face_id LIMIT ?",
            (cluster_id, shown),
        )
        found = self.faces(ids)
        return Cluster(cluster_id, size, tuple(found[i] for i in ids))

    def cluster_stats(self) -> tuple[int, int, int]:
        """(clusters of 2+ faces, faces in them, faces below the quality bar)."""
        ((clusters, faces),) = self.sql.rows(
            "SELECT count(*), coalesce(sum(size), 0) FROM (SELECT count(*) AS size FROM "
            "face_cluster WHERE cluster_id IS NOT NULL GROUP BY cluster_id "
            "HAVING count(*) > 1) AS sizes"
        )
        poor = self.sql.scalar("SELECT count(*) FROM face_cluster WHERE cluster_id IS NULL")
        return int(clusters), int(faces), int(poor)

    # -- edits -----------------------------------------------------------------------------
    def name_cluster(
        self, cluster_id: int, person_id: str | None, new_name: str | None, actor: str
    ) -> Edit:
        """Give the cluster's faces to a person (`person_id`, or a new person `new_name`).
        Faces once rejected from that person stay in the cluster."""
        with self.sql.write():
            faces = self.sql.firsts(
                "SELECT face_id FROM face_cluster WHERE cluster_id = ? ORDER BY face_id",
                (cluster_id,),
            )
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
        with self.sql.write():
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
        with self.sql.write():
            faces = self._existing_faces(face_ids)
            states = self._states(faces)
            unnamed = [face for face in faces if states[face][0] is None]
            if unnamed:
                raise UsageError(
                    f"faces {', '.join(map(str, unnamed))} belong to nobody: nothing to reject"
                )
            rejections = [(face, str(states[face][0])) for face in faces]
            self.sql.execute_many(
                "INSERT INTO face_rejection (face_id, person_id) VALUES (?, ?) "
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
        with self.sql.write():
            target, source = self._person_row(target_id), self._person_row(source_id)
            snapshot = self._snapshot(source_id)
            faces = self.sql.firsts(
                "SELECT id FROM face WHERE person_id = ? ORDER BY id", (source_id,)
            )
            changes = self._move(faces, target_id)
            added = self._fold_details(source, target_id, snapshot)
            self.sql.execute("DELETE FROM person WHERE id = ?", (source_id,))
            self.text.delete(source_id)
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
        with self.sql.write():
            rows = self.sql.dict_rows("SELECT * FROM edit WHERE id = ?", (edit_id,))
            if not rows:
                raise NotFound(f"no edit has the id {edit_id} (iddetective edits lists them)")
            row = rows[0]
            if row["undone_at"]:
                undone = _shown(row["undone_at"])
                raise UsageError(f"edit {edit_id} was already undone at {undone}")
            if row["kind"] == "undo":
                raise UsageError(f"edit {edit_id} is an undo; it cannot be undone in turn")
            changes = json.loads(row["changes"])
            self._check_unchanged(edit_id, changes["faces"])
            self._undo(changes)
            self.sql.execute(
                "UPDATE edit SET undone_at = ?, undone_by = ? WHERE id = ?",
                (timestamp(), actor, edit_id),
            )
            faces = [[f, after, before] for f, before, after in changes["faces"]]
            return self._record(
                "undo", f"undid edit {edit_id}: {row['summary']}", actor, faces, undid=edit_id
            )

    def edits(self, limit: int = 100) -> list[Edit]:
        """The most recent edits, newest first."""
        rows = self.sql.dict_rows("SELECT * FROM edit ORDER BY id DESC LIMIT ?", (limit,))
        return [_edit(r) for r in rows]

    def forget_edits_of(self, person_id: str) -> int:
        """Delete every recorded edit that mentions this person (their erasure)."""
        return self.sql.execute(
            "DELETE FROM edit WHERE changes LIKE ? OR summary LIKE ?",
            (f'%"{person_id}"%', f"%({person_id})%"),
        )

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
        now = timestamp()
        self.sql.execute(
            "INSERT INTO person (id, name, created_at, updated_at, source, added_by) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (created, name, now, now, source, actor),
        )
        self._write_person_text(created)
        return PersonRef(created, name)

    def _person_row(self, person_id: str) -> dict[str, Any]:
        rows = self.sql.dict_rows("SELECT * FROM person WHERE id = ?", (person_id,))
        if not rows:
            raise NotFound(f"no person has the id {person_id!r}")
        return rows[0]

    def _existing_faces(self, face_ids: Sequence[int]) -> list[int]:
        wanted = sorted({int(i) for i in face_ids})
        if not wanted:
            raise UsageError("no faces given")
        found = {
            r[0] for r in self.sql.rows_in("SELECT id FROM face WHERE id IN ({marks})", wanted)
        }
        missing = [face for face in wanted if face not in found]
        if missing:
            raise NotFound(f"no face has the id {', '.join(map(str, missing))}")
        return wanted

    def _not_rejected(self, faces: Sequence[int], person_id: str) -> list[int]:
        rejected = {
            r[0]
            for r in self.sql.rows_in(
                "SELECT face_id FROM face_rejection WHERE person_id = ? AND face_id IN ({marks})",
                faces,
                (person_id,),
            )
        }
        return [face for face in faces if face not in rejected]

    def _states(self, faces: Sequence[int]) -> dict[int, FaceState]:
        rows = self.sql.rows_in(
            "SELECT f.id, f.person_id, c.face_id, c.cluster_id FROM face f "
            "LEFT JOIN face_cluster c ON c.face_id = f.id WHERE f.id IN ({marks})",
            [int(face) for face in faces],
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
        self.sql.execute_many("UPDATE face SET person_id = ? WHERE id = ?", people)
        self.sql.execute_many("DELETE FROM face_cluster WHERE face_id = ?", unclustered)
        self.sql.execute_many(
            "INSERT INTO face_cluster (face_id, cluster_id) VALUES (?, CAST(? AS bigint)) "
            "ON CONFLICT (face_id) DO UPDATE SET cluster_id = excluded.cluster_id",
            clustered,
        )

    def _check_unchanged(self, edit_id: int, faces: list[list[Any]]) -> None:
        current = self._states([face for face, _, _ in faces])
        for face, _, after in faces:
            if face not in current:
                raise UsageError(f"edit {edit_id} cannot be undone: face {face} was removed since")
            if list(current[face]) != list(after):
                later = self.sql.scalar(
                    "SELECT max(id) FROM edit WHERE id > ? AND undone_at IS NULL "
                    "AND kind <> 'undo' AND changes LIKE ?",
                    (edit_id, f"%[{face}, %"),
                )
                by = f" by edit {later}; undo that first" if later else " since"
                raise UsageError(f"edit {edit_id} cannot be undone: face {face} was changed{by}")

    def _undo(self, changes: dict[str, Any]) -> None:
        merged = changes.get("merged")
        if merged:
            self._restore(merged, changes.get("added", {}))
        self._set_states({face: (before[0], before[1]) for face, before, _ in changes["faces"]})
        self.sql.execute_many(
            "DELETE FROM face_rejection WHERE face_id = ? AND person_id = ?",
            [tuple(r) for r in changes.get("rejections", [])],
        )
        created = changes.get("created")
        if created:
            still = self.sql.scalar("SELECT count(*) FROM face WHERE person_id = ?", (created,))
            if not still:
                self.text.delete(created)
                self.sql.execute("DELETE FROM person WHERE id = ?", (created,))

    def _snapshot(self, person_id: str) -> dict[str, Any]:
        """Every row of a person a merge folds into another, to put back on undo."""

        def firsts(query: str) -> list[Any]:
            return self.sql.firsts(query, (person_id,))

        return {
            "person": {c: _shown(v) for c, v in self._person_row(person_id).items()},
            "aliases": firsts("SELECT name FROM alias WHERE person_id = ? ORDER BY name"),
            "accounts": firsts("SELECT id FROM account WHERE person_id = ? ORDER BY id"),
            "lists": firsts("SELECT list_id FROM list_member WHERE person_id = ? ORDER BY list_id"),
            "relations": [
                list(r)
                for r in self.sql.rows(
                    "SELECT person_id, other_id, kind FROM relation "
                    "WHERE person_id = ? OR other_id = ? ORDER BY person_id, other_id, kind",
                    (person_id, person_id),
                )
            ],
            "rejections": firsts(
                "SELECT face_id FROM face_rejection WHERE person_id = ? ORDER BY face_id"
            ),
        }

    def _fold_details(
        self, source: dict[str, Any], target_id: str, snapshot: dict[str, Any]
    ) -> dict[str, Any]:
        """Give the source's name, aliases, accounts, lists and relations to the target;
        what was added to the target (and was not there before), for the undo."""
        source_id = source["id"]
        self.sql.execute(
            "UPDATE account SET person_id = ? WHERE person_id = ?", (target_id, source_id)
        )
        relations = []
        for person, other, kind in snapshot["relations"]:
            person = target_id if person == source_id else person
            other = target_id if other == source_id else other
            if person != other:  # else a relation between the two merged people
                relations.append([person, other, kind])
        return {
            "target": target_id,
            "aliases": self._added(
                "INSERT INTO alias (person_id, name) SELECT ?, CAST(? AS text) "
                "WHERE CAST(? AS text) <> (SELECT name FROM person WHERE id = ?) "
                "ON CONFLICT DO NOTHING",
                dict.fromkeys([source["name"], *snapshot["aliases"]]),
                lambda name: (target_id, name, name, target_id),
            ),
            "lists": self._added(
                "INSERT INTO list_member (list_id, person_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
                snapshot["lists"],
                lambda list_id: (list_id, target_id),
            ),
            "relations": self._added(
                "INSERT INTO relation (person_id, other_id, kind) VALUES (?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                relations,
                tuple,
            ),
            "rejections": self._added(
                "INSERT INTO face_rejection (face_id, person_id) VALUES (?, ?) "
                "ON CONFLICT DO NOTHING",
                snapshot["rejections"],
                lambda face: (face, target_id),
            ),
        }

    def _added(
        self, insert: str, items: Iterable[Any], params: Callable[[Any], Sequence[Any]]
    ) -> list[Any]:
        """The items whose row `insert` added (it does nothing for a row already there)."""
        return [item for item in items if self.sql.execute(insert, params(item))]

    def _restore(self, snapshot: dict[str, Any], added: dict[str, Any]) -> None:
        """Undo a merge's folding: the source person and their rows come back, what the
        target got from them goes."""
        target_id = added["target"]
        person = snapshot["person"]
        source_id = person["id"]
        columns = ", ".join(_quoted(column) for column in person)
        self.sql.execute(
            f"INSERT INTO person ({columns}) VALUES ({', '.join('?' * len(person))})",
            list(person.values()),
        )
        steps: list[tuple[str, list[Sequence[Any]]]] = [
            (
                "DELETE FROM alias WHERE person_id = ? AND name = ?",
                [(target_id, name) for name in added["aliases"]],
            ),
            (
                "INSERT INTO alias (person_id, name) VALUES (?, ?) ON CONFLICT DO NOTHING",
                [(source_id, name) for name in snapshot["aliases"]],
            ),
            (
                "UPDATE account SET person_id = ? WHERE id = ?",
                [(source_id, account) for account in snapshot["accounts"]],
            ),
            (
                "DELETE FROM list_member WHERE list_id = ? AND person_id = ?",
                [(list_id, target_id) for list_id in added["lists"]],
            ),
            (
                "INSERT INTO list_member (list_id, person_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
                [(list_id, source_id) for list_id in snapshot["lists"]],
            ),
            (
                "DELETE FROM relation WHERE person_id = ? AND other_id = ? AND kind = ?",
                [tuple(r) for r in added["relations"]],
            ),
            (
                "INSERT INTO relation (person_id, other_id, kind) VALUES (?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                [tuple(r) for r in snapshot["relations"]],
            ),
            (
                "DELETE FROM face_rejection WHERE face_id = ? AND person_id = ?",
                [(face, target_id) for face in added["rejections"]],
            ),
            (
                "INSERT INTO face_rejection (face_id, person_id) VALUES (?, ?) "
                "ON CONFLICT DO NOTHING",
                [(face, source_id) for face in snapshot["rejections"]],
            ),
        ]
        for statement, rows in steps:
            self.sql.execute_many(statement, rows)
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
        (row,) = self.sql.dict_rows(
            "INSERT INTO edit (at, actor, kind, summary, changes) VALUES (?, ?, ?, ?, ?) "
            "RETURNING *",
            (timestamp(), actor, kind, summary, json.dumps(changes)),
        )
        return _edit(row)


def _edit(row: dict[str, Any]) -> Edit:
    faces = len(json.loads(row["changes"])["faces"])
    return Edit(
        row["id"],
        _shown(row["at"]),
        row["actor"],
        row["kind"],
        row["summary"],
        faces,
        _shown(row["undone_at"]),
        row["undone_by"],
    )


def _faces(count: int) -> str:
    return "1 face" if count == 1 else f"{count} faces"


def _shown(value: Any) -> Any:
    """A stored value as the catalogue shows it: PostgreSQL's times (datetimes) as ISO 8601
    text in UTC, as SQLite stores them; anything else as it is."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="seconds")
    return value


def _quoted(name: str) -> str:
    """A column name quoted as both databases read an identifier."""
    return '"' + name.replace('"', '""') + '"'
