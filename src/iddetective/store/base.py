"""The `Store` seam: the catalogue of people, photos, faces and failures.

The store is the source of truth; vector indexes are rebuilt from it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from ..entities import (
    ApiKey,
    AuditEntry,
    Cluster,
    Edit,
    Erasure,
    Failure,
    FoundPerson,
    OptOut,
    Outcome,
    PersonProfile,
    PersonRecord,
    PersonRef,
    PersonSummary,
    PhotoAnalysis,
    PhotoRef,
    Provenance,
    Review,
    SaveResult,
    Stats,
    StoredFace,
    StoredFile,
    StoredModel,
    UnnamedFaces,
)
from ..faces.model_cards import ModelCard
from ..matching.calibration import Calibration
from ..query.language import Query

__all__ = [
    "AccessStore",
    "CalibrationStore",
    "ClusterStore",
    "ModelCardStore",
    "PeopleStore",
    "PhotoStore",
    "PrivacyStore",
    "Store",
]


@runtime_checkable
class PhotoStore(Protocol):
    """Photos, their files and faces, and reports over them (store/photos.py, saving.py,
    checking.py)."""

    def stored_files(self) -> Iterator[StoredFile]:
        """Every file of every stored photo as indexed (size, mtime, SHA-256), by path."""
        ...

    def integrity_problems(self) -> list[str]:
        """What is wrong inside the database itself (empty when it is intact)."""
        ...

    def file_record(self, path: str) -> StoredFile | None:
        """The size and mtime the file at `path` had when it was last stored (or failed)."""
        ...

    def has_photo(self, sha256: str) -> bool:
        """Whether a photo with these bytes is already stored."""
        ...

    def save(self, outcomes: Sequence[Outcome]) -> list[SaveResult]:
        """Store a batch of ingestion outcomes in one transaction; idempotent by SHA-256."""
        ...

    def forget_missing_files(self, roots: Iterable[str]) -> int:
        """Forget files under `roots` that no longer exist; photos left with no file go too."""
        ...

    def forget_failures(self, prefix: str) -> int:
        """Forget recorded failures whose path starts with `prefix` (old manifest rows)."""
        ...

    def remove_photo(self, ref: str) -> PhotoRef:
        """Remove one photo (by path or SHA-256) with its faces; returns what was removed."""
        ...

    def photo_provenance(self, photo_ids: Sequence[int]) -> dict[int, Provenance]:
        """Where each photo came from, who added it, on what basis."""
        ...

    def photo(self, ref: str) -> PhotoRef:
        """The stored photo with this path or SHA-256; `NotFound` if there is none."""
        ...

    def faces_epoch(self) -> int:
        """A counter bumped by every transaction that adds or removes faces (not labels)."""
        ...

    def embeddings(self, model: str, batch: int = 65536) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """All (face ids int64, embeddings float32) of one model, in batches, ids ascending."""
        ...

    def face_ids(self, model: str) -> np.ndarray:
        """Ids of every face embedded with `model` (int64, ascending)."""
        ...

    def embeddings_of(
        self, ids: np.ndarray, model: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(ids, embeddings) of these faces, ids ascending; ids that do not exist (or, given a
        `model`, are faces of another) are left out. Without a model, faces of models of
        different dimensions raise `StoreError`."""
        ...

    def models(self) -> list[StoredModel]:
        """Every embedding model the catalogue has stored a vector of (faces or opt-outs),
        with the dimension recorded for it, in the order they were first seen."""
        ...

    def model_dimension(self, model: str) -> int | None:
        """The dimension recorded for `model`'s vectors; None before its first is stored."""
        ...

    def faces(self, ids: Sequence[int]) -> dict[int, StoredFace]:
        """The faces with these ids (missing ids are left out)."""
        ...

    def faces_of_person(
        self, person_id: str, limit: int | None = None, offset: int = 0
    ) -> list[StoredFace]:
        """The faces assigned to the person, oldest first: all of them, or the page of
        `limit` after `offset`."""
        ...

    def face_ids_of_people(self, person_ids: Sequence[str]) -> np.ndarray:
        """Ids of every face assigned to one of these people (int64, ascending)."""
        ...

    def failures(self) -> list[Failure]:
        """Files and manifest rows that could not be indexed, newest first."""
        ...

    def reviews(self) -> list[Review]:
        """Labelled photos whose label went to one of several faces, or could not be applied."""
        ...

    def stats(self) -> Stats:
        """Catalogue size (data_bytes is filled in by the caller that knows the directory)."""
        ...


@runtime_checkable
class PeopleStore(Protocol):
    """The people catalogue and its search (store/people.py, people_query.py)."""

    def resolve_person(self, ref: str) -> PersonRef:
        """The person with id `ref`, or the only person named `ref` (case-insensitive).

        Raises `NotFound`, or `AmbiguousPerson` listing the candidates.
        """
        ...

    def people(self) -> list[PersonSummary]:
        """Every person, by name."""
        ...

    def person_summary(self, person_id: str) -> PersonSummary:
        """The person with this id and how many faces and photos they have; `NotFound`."""
        ...

    def upsert_person(self, record: PersonRecord) -> tuple[PersonRef, bool]:
        """Create or update the person with `record.external_id`: (person, created).

        Name and notes are replaced; aliases, accounts and lists are added, never removed.
        An account that belongs to someone else is a `UsageError`; nothing is written then.
        """
        ...

    def add_relation(self, person_id: str, other_id: str, kind: str) -> bool:
        """Relate two people (relations read both ways); False if they already were."""
        ...

    def person_by_external_id(self, external_id: str) -> PersonRef | None:
        """The person imported with this external id, if any."""
        ...

    def profile(self, person_id: str) -> PersonProfile:
        """Aliases, accounts, lists and relations of a person."""
        ...

    def people_matching(self, query: Query) -> list[PersonRef]:
        """The people a parsed query's filter selects (everyone if it has none), by name.

        Unknown lists or people named in it raise `QueryError` pointing at them.
        """
        ...

    def find(self, text: str, limit: int) -> list[FoundPerson]:
        """People whose name, alias or handle contains `text` (folded: case, accents, script).

        Best first: the whole value, then its start, a word's start, anywhere inside.
        """
        ...


@runtime_checkable
class ClusterStore(Protocol):
    """Clusters of unnamed faces and the recorded edits of who is who (store/clusters.py)."""

    def unnamed_faces(self, model: str, only_new: bool) -> UnnamedFaces:
        """Faces of `model` with no person; only those clustering has not considered yet
        when `only_new`."""
        ...

    def cluster_of_faces(self, face_ids: Sequence[int]) -> dict[int, tuple[int | None, int]]:
        """(cluster or None, photo) of each of these faces that has no person."""
        ...

    def photos_of_clusters(self, cluster_ids: Iterable[int]) -> dict[int, set[int]]:
        """The photos that have a face in each of these clusters."""
        ...

    def cluster_members(self, cluster_ids: Sequence[int]) -> dict[int, list[int]]:
        """The faces in each of these clusters."""
        ...

    def set_clusters(self, assignments: Sequence[tuple[int, int | None]], replace: bool) -> int:
        """Record (face, cluster or None: below the quality bar); `replace` drops every
        other cluster row first. Faces that have a person are skipped."""
        ...

    def new_cluster_ids(self, count: int) -> int:
        """Reserve `count` fresh cluster ids; returns the first."""
        ...

    def clusters(self, min_size: int = 2, limit: int = 100, offset: int = 0) -> list[Cluster]:
        """Clusters of at least `min_size` faces, largest first, a few faces each."""
        ...

    def cluster(self, cluster_id: int) -> Cluster:
        """One cluster with all its faces."""
        ...

    def cluster_stats(self) -> tuple[int, int, int]:
        """(clusters of 2+ faces, faces in them, faces below the quality bar)."""
        ...

    def name_cluster(
        self, cluster_id: int, person_id: str | None, new_name: str | None, actor: str
    ) -> Edit:
        """Give a cluster's faces to a person or to a new person; recorded."""
        ...

    def move_faces(
        self, face_ids: Sequence[int], person_id: str | None, new_name: str | None, actor: str
    ) -> Edit:
        """Move faces to a person or a new person (a split); recorded."""
        ...

    def reject_faces(self, face_ids: Sequence[int], actor: str) -> Edit:
        """Take faces from their person for good (unless undone); recorded."""
        ...

    def merge_people(self, target_id: str, source_id: str, actor: str) -> Edit:
        """Fold one person into another; recorded."""
        ...

    def undo_edit(self, edit_id: int, actor: str) -> Edit:
        """Put back what an edit changed; recorded as an edit of its own."""
        ...

    def edits(self, limit: int = 100) -> list[Edit]:
        """Recorded edits, newest first."""
        ...

    def forget_edits_of(self, person_id: str) -> int:
        """Delete the recorded edits that mention a person (erasure)."""
        ...


@runtime_checkable
class PrivacyStore(Protocol):
    """Erasure, the opt-out registry and retention (store/erasing.py, store/privacy.py)."""

    def erase_person(self, person_id: str, actor: str, unnamed: Sequence[int] = ()) -> Erasure:
        """Remove the person, their faces, those of `unnamed` that still have no person (and
        were not rejected from them), and photos left with no face, in one transaction.

        Their names and external id are kept as keyed hashes so no later label names them;
        audit query texts and review notes that mention them are redacted. The audit log gets
        one `erase` entry naming an opaque token, never the person.
        """
        ...

    def erase_faces(self, face_ids: Sequence[int], actor: str, kind: str) -> Erasure:
        """Remove these faces, and photos left with no face; audited as `kind` by token, with
        how many faces of how many named people."""
        ...

    def erasable_unnamed(self, person_id: str, face_ids: Sequence[int]) -> list[int]:
        """Those of `face_ids` that have no person and were not rejected from this one."""
        ...

    def compact(self) -> None:
        """Rewrite the storage so deleted data is gone from the files, not only unlinked."""
        ...

    def add_optout(
        self, model: str, embeddings: np.ndarray, actor: str, *, within: float
    ) -> OptOut:
        """Keep faces' embeddings (one, or n x d) in the blocklist under one token (audited
        by it), each blocking the faces of `model` at most `within` from it."""
        ...

    def optouts(self) -> list[OptOut]:
        """The opt-outs: tokens, times and face counts only, never the embeddings."""
        ...

    def remove_optout(self, token: str, actor: str) -> OptOut:
        """Withdraw an opt-out; `NotFound` for an unknown token."""
        ...

    def optout_embeddings(self, model: str) -> np.ndarray:
        """The blocked embeddings of `model`, for matching only."""
        ...

    def opted_out(self, analysis: PhotoAnalysis) -> list[bool]:
        """For each face of `analysis`: is it within the reach of a blocked face?"""
        ...

    def purge_audit(self, older_than_days: int) -> int:
        """Delete audit entries older than this many days; returns how many."""
        ...


@runtime_checkable
class CalibrationStore(Protocol):
    """The calibration tables made for this catalogue, one per model (store/calibrations.py)."""

    def calibration(self, model: str) -> Calibration | None:
        """The table made for `model` in this catalogue, or None."""
        ...

    def save_calibration(self, table: Calibration, actor: str) -> None:
        """Keep `table` as its model's, in place of any earlier one (audited)."""
        ...


@runtime_checkable
class ModelCardStore(Protocol):
    """The ONNX embedders the operator added to this catalogue (store/model_cards.py)."""

    def model_card(self, name: str) -> ModelCard | None:
        """The card named `name`, or None."""
        ...

    def model_cards(self) -> list[ModelCard]:
        """Every card, by name."""
        ...

    def save_model_card(self, card: ModelCard, actor: str) -> None:
        """Keep a new card (one of the same name is refused; audited)."""
        ...

    def remove_model_card(self, name: str, actor: str) -> ModelCard:
        """Remove a card, refused while faces of its model are stored (audited)."""
        ...


@runtime_checkable
class AccessStore(Protocol):
    """API keys and the audit log (store/access.py)."""

    def add_key(self, key: ApiKey) -> None:
        """Store a new API key (its hash, never the secret)."""
        ...

    def keys(self) -> list[ApiKey]:
        """Every API key, revoked ones included, oldest first."""
        ...

    def key(self, key_id: str) -> ApiKey | None:
        """The key with this id, or None."""
        ...

    def revoke_key(self, key_id: str) -> ApiKey:
        """Revoke a key (idempotent); `NotFound` for an unknown id."""
        ...

    def record_search(
        self,
        actor: str,
        kind: str,
        results: int,
        query_sha256: str | None = None,
        query_text: str | None = None,
    ) -> None:
        """Append one search to the audit log."""
        ...

    def audit(self, limit: int, before: int | None = None) -> list[AuditEntry]:
        """Audit entries newest first, `limit` of them, with ids below `before` if given."""
        ...


@runtime_checkable
class Store(
    PhotoStore,
    PeopleStore,
    ClusterStore,
    PrivacyStore,
    AccessStore,
    CalibrationStore,
    ModelCardStore,
    Protocol,
):
    """A catalogue backend: every part above. Every write is atomic; readers only see
    committed data."""

    def close(self) -> None:
        """Release connections and files."""
        ...
