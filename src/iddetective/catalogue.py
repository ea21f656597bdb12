"""A data directory opened for use: the store, the vector index beside it, and the pipeline.

This is the library's front door; the CLI (and later the HTTP API) call one method each.

Data directory layout (docs/contracts.md):
    catalog.sqlite            the catalogue (plus -wal/-shm files while in use)
    vectors/<index>-<model>…  the vector index, a cache rebuilt from the catalogue
    uploads/ab/<sha256>.jpg   photos uploaded through the HTTP API
    fetched/ab/<sha256>.jpg   photos downloaded from the URLs of an import file
    media/                    thumbnails and face crops, a cache (media.py)
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from . import access
from .checkup import CheckReport, check_data_dir
from .entities import (
    ApiKey,
    AuditEntry,
    Cluster,
    Edit,
    Erasure,
    Failure,
    FileStat,
    FoundPerson,
    IndexedPhoto,
    OptOut,
    PersonProfile,
    PersonRef,
    PersonSummary,
    PhotoAnalysis,
    PhotoRef,
    Provenance,
    Review,
    SaveResult,
    Stats,
    StoredFace,
)
from .errors import NotFound, UsageError
from .faces.imaging import read_photo_bytes
from .faces.model_cards import ModelCard, card_name, new_card
from .faces.pipeline import PipelineSettings, pipeline_for
from .files import FETCHED_DIR, UPLOADS_DIR, keep_photo
from .ingest.indexing import IndexReport, ProgressCallback, Runner, index_plan
from .ingest.local import LocalRunner
from .matching.calibration import (
    Calibration,
    CalibrationError,
    Thresholds,
    resolve_threshold,
    shipped_calibration,
)
from .matching.search import SearchResult, match_faces
from .people import discovery, privacy
from .query.language import Query, parse_query
from .registry import resolve_class
from .settings import Settings
from .sources.fetch import Fetcher, FetchSettings
from .sources.importing import ImportReport, apply_rows, fetch_photos, read_import
from .sources.paths import Plan, plan_sources
from .store import Store
from .store.dialect import timestamp
from .urls import masked_url
from .vector_index import Neighbours, VectorIndex
from .vector_index.keeper import IndexKeeper, IndexProgress

__all__ = [
    "CATALOG_FILE",
    "CLI_ACTOR",
    "Catalogue",
    "QueryAnswer",
    "open_store",
]

CATALOG_FILE = "catalog.sqlite"
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
#: Who the audit log names for searches made from the command line.
CLI_ACTOR = "cli"
VECTORS_DIR = "vectors"


@dataclass(frozen=True)
class QueryAnswer:
    """What a query found: the people its filter selects, and the face search if it had one."""

    query: Query
    people: list[PersonRef]
    search: SearchResult | None


class Catalogue:
    """The catalogue in one data directory.

    Open with `create=True` to make the directory on first use; otherwise a missing catalogue
    is a `NotFound` naming the directory.
    """

    def __init__(
        self,
        data_dir: Path | str,
        *,
        create: bool = False,
        pipeline: PipelineSettings | None = None,
        vector_index: str | None = None,
        index_progress: IndexProgress | None = None,
        db: str | None = None,
        notice: Callable[[str], None] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        #: A PostgreSQL URL when the catalogue lives there (else SQLite in the data directory).
        self.db = db or None
        self.pipeline = pipeline or PipelineSettings()
        #: The vector index: by default faiss IVF in the data directory on SQLite, and
        #: pgvector's HNSW in the catalogue's own table on PostgreSQL (docs/scaling.md).
        self._index_name = vector_index or ("pgvector" if self.db else "ivf")
        #: Told (faces done, faces to do) while the vector index is rebuilt or caught up.
        self.index_progress = index_progress
        #: Told, in one line, of damage found and repaired (a vector index rebuilt ...).
        self.notice = notice or _log_notice
        path = self.data_dir / CATALOG_FILE
        if self.db is None and not create and not path.exists():
            raise NotFound(
                f"no catalogue in {self.data_dir} (run `iddetective index` first, "
                "or pass --data to name another data directory)"
            )
        if self.db is not None:
            self.data_dir.mkdir(parents=True, exist_ok=True)  # vector index and media
        self.store: Store = open_store(self.db or path, readonly=False)
        # A "card:NAME" embedder is the catalogue's card: attached to the settings every
        # process that analyses is given (docs/contracts.md, seams).
        self.pipeline = self._with_card(self.pipeline)
        self._vectors = IndexKeeper(
            self.store,
            self._index_name,
            folder=self.data_dir / VECTORS_DIR,
            pipeline=self.pipeline,
            db=self.db,
            notice=self.notice,
            progress=index_progress,
        )

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> Catalogue:
        """The catalogue `settings` name (data directory, database, vector index, pipeline);
        `options` are the constructor's others (`create`, `index_progress`, `notice`)."""
        options.setdefault("pipeline", settings.pipeline)
        return cls(settings.data_dir, db=settings.db, vector_index=settings.vector_index, **options)

    def _with_card(self, settings: PipelineSettings) -> PipelineSettings:
        try:
            return self.pipeline_with(settings.embedder, settings)
        except BaseException:
            self.store.close()
            raise

    def pipeline_with(
        self, embedder: str, settings: PipelineSettings | None = None
    ) -> PipelineSettings:
        """`settings` (default: this catalogue's) embedding with `embedder`: a registry
        name, or "card:NAME", a card of this catalogue, attached (`UsageError` if absent)."""
        settings = replace(settings or self.pipeline, embedder=embedder, card=None)
        name = card_name(embedder)
        return settings if name is None else settings.with_card(self.store.model_card(name))

    @property
    def model(self) -> str:
        """The name of the embedding model this catalogue's pipeline uses."""
        return pipeline_for(self.pipeline).embedder.name

    def close(self) -> None:
        """Close the store (and the vector index's connection, if it has one)."""
        self._vectors.close()
        self.store.close()

    def __enter__(self) -> Catalogue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- indexing --------------------------------------------------------------------------------
    def index(
        self,
        paths: Sequence[str],
        *,
        people: str | None = None,
        people_from_folders: bool = False,
        workers: int = 1,
        runner: Runner | None = None,
        prune: bool = False,
        retry_failed: bool = False,
        basis: str = "",
        actor: str = CLI_ACTOR,
        progress: ProgressCallback | None = None,
    ) -> IndexReport:
        """Index photos from files and folders (recursively), labelled by manifest or folders.

        `basis` records on what basis the photos are processed (e.g. "staff directory"),
        with `actor`, as their provenance.

        `runner` analyses the photos (ingest.Runner): by default a `LocalRunner` of
        `workers` spawned processes, so a script calling this with `workers` > 1 must guard
        its entry point with `if __name__ == "__main__":`; a `fleet.FleetRunner` has a
        fleet's workers do it (they store into this same catalogue).
        """
        if runner is not None and workers != 1:
            raise UsageError("--workers is for a local run; size the fleet instead")
        plan = plan_sources(paths, people, people_from_folders)
        origin = Provenance(added_by=actor, basis=basis)
        plan.jobs = [replace(job, provenance=job.provenance or origin) for job in plan.jobs]
        report = self._index_plan(
            plan, runner or self._local_runner(workers), retry_failed, progress
        )
        if prune and not report.interrupted:
            report.pruned = self.store.forget_missing_files(plan.roots)
            self.vector_index()
        return report

    def _local_runner(self, workers: int) -> LocalRunner:
        """A `LocalRunner` whose workers read this catalogue, to skip bytes it holds."""
        opener = functools.partial(
            open_store, self.db or self.data_dir / CATALOG_FILE, readonly=True
        )
        return LocalRunner(workers, opener)

    def _index_plan(
        self, plan: Plan, runner: Runner, retry_failed: bool, progress: ProgressCallback | None
    ) -> IndexReport:
        report = index_plan(
            self.store,
            plan,
            self.pipeline,
            runner,
            retry_failed=retry_failed,
            progress=progress,
        )
        report.clustering = discovery.cluster_new(self.store, self.vector_index(), self.model)
        return report

    def import_file(
        self,
        path: str,
        *,
        workers: int = 1,
        fetch: FetchSettings | None = None,
        basis: str = "",
        actor: str = CLI_ACTOR,
        progress: ProgressCallback | None = None,
    ) -> ImportReport:
        """Import people, accounts, lists, relations and photos from a JSONL or CSV file
        (docs/import.md). Idempotent by the rows' ids; every bad row is reported by line.

        Photo URLs are downloaded with `fetch`'s limits and address checks into `fetched/`.
        """
        rows, problems = read_import(path, Provenance(added_by=actor, basis=basis))
        report = ImportReport(problems=problems)
        photos = apply_rows(self.store, rows, report)
        fetcher = Fetcher(fetch or FetchSettings())
        jobs = fetch_photos(photos, fetcher, self.data_dir / FETCHED_DIR, report)
        report.problems.sort(key=lambda problem: problem.line)
        if jobs:
            report.photos = self._index_plan(
                Plan(jobs=jobs), self._local_runner(workers), False, progress
            )
        return report

    def remove_photo(self, ref: str) -> PhotoRef:
        """Remove one photo, named by a path it was indexed from or its SHA-256."""
        try:
            removed = self.store.remove_photo(os.path.abspath(ref))
        except NotFound:
            removed = self.store.remove_photo(ref)
        self.vector_index()
        return removed

    # -- searching -------------------------------------------------------------------------------
    def search_photo(
        self,
        path: str,
        *,
        top: int = 5,
        threshold: float | None = None,
        people: Sequence[str] | None = None,
        actor: str = CLI_ACTOR,
    ) -> SearchResult:
        """Find every face in the photo at `path` and who each one is.

        `people` (ids or unambiguous names) restricts the search to those people's faces.
        """
        data = read_photo_bytes(path)
        analysis = pipeline_for(self.pipeline).analyse(data, path)
        return self.search_analysis(
            analysis,
            sha256=hashlib.sha256(data).hexdigest(),
            path=path,
            top=top,
            threshold=threshold,
            people=people,
            actor=actor,
        )

    def search_analysis(
        self,
        analysis: PhotoAnalysis,
        *,
        sha256: str,
        path: str | None = None,
        top: int = 5,
        threshold: float | None = None,
        people: Sequence[str] | None = None,
        actor: str = CLI_ACTOR,
    ) -> SearchResult:
        """Match the faces of an analysed query photo; the search is written to the audit log."""
        allowed = self._faces_of(people) if people is not None else None
        result = self._match(analysis, sha256, path, top, threshold, allowed)
        self.store.record_search(actor, "photo", result.match_count, query_sha256=sha256)
        return result

    def _match(
        self,
        analysis: PhotoAnalysis,
        sha256: str,
        path: str | None,
        top: int,
        threshold: float | None,
        allowed: np.ndarray | None,
    ) -> SearchResult:
        if top < 1:
            raise UsageError(f"--top must be at least 1, not {top}")
        table = self.calibration
        threshold = resolve_threshold(threshold, None, table, self.model)
        if not 0 < threshold <= 2:
            raise UsageError(f"--threshold must be in (0, 2], not {threshold}")
        faces = self._vectors.with_index(
            lambda index: match_faces(
                self.store, index, analysis, top=top, threshold=threshold, allowed=allowed
            )
        )
        blocked = self.store.opted_out(analysis)
        # An opted-out face matches nobody, and nothing says why.
        faces = [replace(f, matches=()) if b else f for f, b in zip(faces, blocked, strict=True)]
        return SearchResult(
            path=path,
            sha256=sha256,
            width=analysis.width,
            height=analysis.height,
            model=analysis.model,
            threshold=threshold,
            faces=tuple(faces),
            calibration=table,
        )

    def find(self, text: str, *, limit: int = 50, actor: str = CLI_ACTOR) -> list[FoundPerson]:
        """People whose name, alias or handle contains `text`, best first (audited)."""
        text = text.strip()
        if not text:
            raise UsageError("the text to find is empty")
        if not 1 <= limit <= 1000:
            raise UsageError(f"--limit must be between 1 and 1000, not {limit}")
        found = self.store.find(text, limit)
        self.store.record_search(actor, "text", len(found), query_text=text)
        return found

    def query(
        self,
        text: str,
        *,
        top: int = 5,
        threshold: float | None = None,
        photo: tuple[PhotoAnalysis, str] | None = None,
        actor: str = CLI_ACTOR,
    ) -> QueryAnswer:
        """Run a query (docs/query.md): the people it selects and, with `face:`, a search by
        that photo restricted to their faces. The search is audited.

        `photo` is the analysed face photo and its SHA-256 when the caller has it (an HTTP
        upload); otherwise `face:PATH` names a file, read here.
        """
        parsed = parse_query(text)
        people = self.store.people_matching(parsed)
        if parsed.face is None:
            self.store.record_search(actor, "query", len(people), query_text=text)
            return QueryAnswer(parsed, people, None)
        if photo is None:
            data = read_photo_bytes(parsed.face.value)
            analysis = pipeline_for(self.pipeline).analyse(data, parsed.face.value)
            photo = (analysis, hashlib.sha256(data).hexdigest())
        allowed = self.store.face_ids_of_people([p.id for p in people])
        path = parsed.face.value
        result = self._match(photo[0], photo[1], path, top, threshold, allowed)
        self.store.record_search(
            actor, "query", result.match_count, query_sha256=photo[1], query_text=text
        )
        return QueryAnswer(parsed, people, result)

    def _faces_of(self, people: Sequence[str]) -> np.ndarray:
        chosen = [self.store.resolve_person(ref).id for ref in people]
        return self.store.face_ids_of_people(chosen)

    def faces_within(self, embeddings: np.ndarray, radius: float) -> list[Neighbours]:
        """For each embedding (a row), every catalogue face within `radius`, nearest first,
        with distances checked against the catalogue's own embeddings: what opt-out and
        erasure act on must not come from a damaged index."""
        return self._vectors.faces_within(embeddings, radius)

    def vector_index(self) -> VectorIndex:
        """The vector index, brought up to date with the catalogue before it is used
        (vector_index/keeper.py: a file is caught up or rebuilt, pgvector always is)."""
        return self._vectors.index()

    def saved_vector_index(self) -> tuple[VectorIndex, int] | None:
        """The vector index as saved in the data directory and the epoch it reflects, loaded
        as it is (not caught up); None when no file is saved, or the index is the
        catalogue's own table. Raises `IndexMismatch` for a foreign or damaged file."""
        return self._vectors.saved()

    @property
    def vector_index_location(self) -> str:
        """Where the vector index lives, for messages."""
        return self._vectors.location(self.store_location)

    @property
    def store_location(self) -> str:
        """Where the catalogue lives, for messages (a URL without its password)."""
        return masked_url(self.db) if self.db else str(self.data_dir / CATALOG_FILE)

    def check(self, *, quick: bool = False, progress: IndexProgress | None = None) -> CheckReport:
        """Verify the catalogue, the vector index file, the photo files (SHA-256; size and
        time only if `quick`) and the media cache in one run; nothing is changed."""
        return check_data_dir(self, quick=quick, progress=progress)

    def reindex(self) -> int:
        """Rebuild the vector index from the catalogue now; returns the faces it holds."""
        return self._vectors.rebuild()

    def sweep_vector_files(self, older_than: float = 60) -> int:
        """Bring the vector index up to date, then delete what killed saves of it left (over
        `older_than` seconds old): after an erasure no file may keep the erased faces.
        Returns the files or directories deleted."""
        return self._vectors.sweep(older_than)

    # -- thresholds (matching/calibration.py, docs/accuracy.md) --------------------------------
    @property
    def calibration(self) -> Calibration | None:
        """The calibration table of this catalogue's model: the one `calibrate` made for this
        catalogue, else the one shipped for the model, else None (no default threshold)."""
        return self.store.calibration(self.model) or shipped_calibration(self.model)

    @property
    def thresholds(self) -> Thresholds:
        """The model's default thresholds; `CalibrationError` if nobody calibrated it."""
        table = self.calibration
        if table is None:
            raise CalibrationError(
                f"the model {self.model!r} has no calibration table, so no default "
                "threshold: run `iddetective calibrate LABELS.csv` with this model first"
            )
        return table.thresholds

    def match_threshold(
        self, threshold: float | None = None, max_fmr: float | None = None
    ) -> float:
        """The match threshold a search uses: `threshold`, or the distance at `max_fmr` by
        the model's table, or the table's default (not both given)."""
        return resolve_threshold(threshold, max_fmr, self.calibration, self.model)

    def save_calibration(self, table: Calibration, *, actor: str = CLI_ACTOR) -> None:
        """Keep `table` (made by `calibrate`) as this catalogue's for its model, which need
        not be the model the catalogue uses now (calibrate one before moving to it)."""
        self.store.save_calibration(table, actor)

    # -- model cards -----------------------------------------------------------------------------
    def add_model_card(
        self, path: Path | str, *, actor: str = CLI_ACTOR, **fields: Any
    ) -> ModelCard:
        """Check the ONNX file at `path` against the declared `fields` (`new_card`'s), record
        its card (SHA-256, input, normalisation, alignment, dimension, licence, source) and
        keep it in the catalogue; the embedder "card:NAME" then runs it."""
        card = new_card(Path(path), added_by=actor, added_at=timestamp(), **fields)
        self.store.save_model_card(card, actor)
        return card

    def model_cards(self) -> list[ModelCard]:
        """The model cards of this catalogue, by name."""
        return self.store.model_cards()

    def remove_model_card(self, name: str, *, actor: str = CLI_ACTOR) -> ModelCard:
        """Remove a card; refused while faces embedded by its model are stored."""
        return self.store.remove_model_card(name, actor)

    # -- people and photos -----------------------------------------------------------------------
    def person(self, ref: str) -> tuple[PersonRef, list[StoredFace]]:
        """A person (by id or unambiguous name) and every face of theirs in the catalogue."""
        person = self.store.resolve_person(ref)
        return person, self.store.faces_of_person(person.id)

    def person_page(
        self, ref: str, limit: int, offset: int = 0
    ) -> tuple[PersonSummary, list[StoredFace]]:
        """A person (by id or unambiguous name) with their face and photo counts, and the
        page of `limit` of their faces after `offset` (in id order), read a page at a time."""
        person = self.store.resolve_person(ref)
        summary = self.store.person_summary(person.id)
        return summary, self.store.faces_of_person(person.id, limit, offset)

    # -- discovering people (people/discovery.py, docs/clustering.md) ------------------------------
    def cluster(self, *, full: bool = False) -> discovery.ClusterReport:
        """Cluster the unnamed faces clustering has not considered yet (every unnamed face
        again with `full`, keeping cluster ids where the faces stay together)."""
        if full:
            return discovery.cluster_all(self.store, self.model)
        return discovery.cluster_new(self.store, self.vector_index(), self.model)

    def clusters(self, *, min_size: int = 2, limit: int = 100, offset: int = 0) -> list[Cluster]:
        """Clusters of at least `min_size` unnamed faces, largest first."""
        return self.store.clusters(min_size, limit, offset)

    def cluster_faces(self, cluster_id: int) -> Cluster:
        """One cluster with all its faces."""
        return self.store.cluster(cluster_id)

    def name_cluster(
        self,
        cluster_id: int,
        *,
        person: str | None = None,
        new_name: str | None = None,
        actor: str = CLI_ACTOR,
    ) -> Edit:
        """Give a cluster's faces to `person` (id or unambiguous name) or a new person."""
        return self.store.name_cluster(cluster_id, self._target(person, new_name), new_name, actor)

    def move_faces(
        self,
        face_ids: Sequence[int],
        *,
        person: str | None = None,
        new_name: str | None = None,
        actor: str = CLI_ACTOR,
    ) -> Edit:
        """Move faces to `person` or a new person (split a wrongly merged person)."""
        return self.store.move_faces(face_ids, self._target(person, new_name), new_name, actor)

    def _target(self, person: str | None, new_name: str | None) -> str | None:
        """The id of the person faces go to (None: a new person named `new_name`)."""
        if (person is None) == (new_name is None):
            raise UsageError("give either an existing person or a new name, not both")
        return self.store.resolve_person(person).id if person is not None else None

    def reject_faces(self, face_ids: Sequence[int], *, actor: str = CLI_ACTOR) -> Edit:
        """Take faces from their person; they never rejoin that person automatically."""
        return self.store.reject_faces(face_ids, actor)

    def merge_people(self, target: str, source: str, *, actor: str = CLI_ACTOR) -> Edit:
        """Fold `source` into `target` (ids or unambiguous names)."""
        target_id = self.store.resolve_person(target).id
        return self.store.merge_people(target_id, self.store.resolve_person(source).id, actor)

    def undo(self, edit_id: int, *, actor: str = CLI_ACTOR) -> Edit:
        """Undo a recorded edit (refused when a later edit changed the same faces)."""
        return self.store.undo_edit(edit_id, actor)

    def edits(self, *, limit: int = 100) -> list[Edit]:
        """Recorded edits of who is who, newest first."""
        return self.store.edits(limit)

    # -- privacy (people/privacy.py, docs/privacy.md) ----------------------------------------------
    def preview_erasure(
        self, ref: str, *, unnamed_within: float | None = None
    ) -> privacy.ErasurePreview:
        """What erasing a person (id or unambiguous name) would remove: their faces and the
        unnamed faces within `unnamed_within` of one of them (0: none; default: the model's
        `erase_unnamed` threshold)."""
        return privacy.preview_erasure(self, ref, unnamed_within)

    def erase_person(
        self,
        ref: str | privacy.ErasurePreview,
        *,
        unnamed_within: float | None = None,
        optout: bool = False,
        actor: str = CLI_ACTOR,
    ) -> Erasure:
        """Erase a person (or a preview of the erasure) everywhere: catalogue rows, faces and
        embeddings with the unnamed faces within `unnamed_within` of theirs, vector index
        entries, cached crops and thumbnails, our copies of photos left with no face;
        mentions in the audit log and review notes are redacted and the catalogue file
        compacted, so the bytes are gone. Other people's faces stay. `optout` also opts their
        faces out, so re-indexing the operator's files (which stay) never brings them back.
        """
        if isinstance(ref, str):
            ref = self.preview_erasure(ref, unnamed_within=unnamed_within)
        return privacy.erase_person(self, ref, actor, optout=optout)

    def preview_optout(self, photo: str, *, person: str | None = None) -> privacy.OptOutPreview:
        """What opting out the one face in `photo` would erase, grouped by person; `person`
        names who is opting out (default: the person of the nearest face, if a match)."""
        return privacy.preview_optout(self, photo, person)

    def add_optout(
        self,
        photo: str | privacy.OptOutPreview,
        *,
        person: str | None = None,
        erase_others: bool = False,
        actor: str = CLI_ACTOR,
    ) -> privacy.OptOutResult:
        """Opt out the one face in `photo` (or a preview of it): no search will match it or
        anyone within the opt-out threshold of it, ingestion drops such faces, and stored ones
        are erased now, except faces labelled as someone else unless `erase_others`."""
        if isinstance(photo, str):
            photo = self.preview_optout(photo, person=person)
        return privacy.add_optout(self, photo, actor, erase_others=erase_others)

    def optouts(self) -> list[OptOut]:
        """The opt-outs (tokens and times; never the faces)."""
        return self.store.optouts()

    def remove_optout(self, token: str, *, actor: str = CLI_ACTOR) -> OptOut:
        """Withdraw an opt-out; faces erased when it was added stay erased."""
        return self.store.remove_optout(token, actor)

    def maintenance(self, *, audit_days: int = 365) -> privacy.MaintenanceReport:
        """Retention: purge old audit entries and orphaned cache files, then compact."""
        return privacy.run_maintenance(self, audit_days)

    def profile(self, ref: str) -> PersonProfile:
        """Aliases, accounts, lists and relations of a person (by id or unambiguous name)."""
        return self.store.profile(self.store.resolve_person(ref).id)

    def photo_provenance(self, photo_ids: Sequence[int]) -> dict[int, Provenance]:
        """Where each photo came from, who added it, on what basis."""
        return self.store.photo_provenance(photo_ids)

    def face(self, face_id: int) -> StoredFace:
        """One stored face by id."""
        found = self.store.faces([face_id])
        if face_id not in found:
            raise NotFound(f"no stored face has the id {face_id}")
        return found[face_id]

    def photo(self, ref: str) -> PhotoRef:
        """A stored photo by SHA-256 or one of its paths."""
        return self.store.photo(ref)

    def add_upload(
        self,
        data: bytes,
        name: str,
        analysis: PhotoAnalysis,
        label: str | None = None,
        *,
        actor: str = CLI_ACTOR,
        basis: str = "",
    ) -> SaveResult:
        """Keep an uploaded photo under `uploads/` and store its analysis, like `index` would.

        The bytes are written (atomically, named by SHA-256) only after they were analysed,
        so a bad upload leaves nothing behind.
        """
        sha256 = hashlib.sha256(data).hexdigest()
        target = keep_photo(data, name, self.data_dir / UPLOADS_DIR)
        stat = target.stat()
        origin = Provenance(f"upload of {name}", actor, basis)
        outcome = IndexedPhoto(
            FileStat(str(target), stat.st_size, stat.st_mtime_ns), sha256, analysis, label, origin
        )
        (result,) = self.store.save([outcome])
        discovery.cluster_new(self.store, self.vector_index(), self.model)
        return result

    # -- API keys and audit ----------------------------------------------------------------------
    def create_key(self, role: str, label: str = "") -> tuple[str, ApiKey]:
        """A new API key: (the key, shown once; its stored record)."""
        return access.new_key(self.store, role, label)

    def api_keys(self) -> list[ApiKey]:
        """Every API key (hashes only), revoked ones included."""
        return self.store.keys()

    def revoke_key(self, key_id: str) -> ApiKey:
        """Revoke a key by id; it stops working at once."""
        return self.store.revoke_key(key_id)

    def authenticate(self, secret: str | None) -> ApiKey:
        """The active key for `secret`, or `Unauthorized`."""
        return access.authenticate(self.store, secret)

    def record_view(self, what: str, faces: int, *, actor: str = CLI_ACTOR) -> None:
        """Audit that `actor` saw `faces` faces of people by viewing `what` (a person's page,
        a cluster, a face crop, a photo's thumbnail: web/face_views.py)."""
        self.store.record_search(actor, "view", faces, query_text=what)

    def audit(self, *, limit: int = 100, before: int | None = None) -> list[AuditEntry]:
        """The audit log of searches, newest first."""
        if not 1 <= limit <= 1000:
            raise UsageError(f"--limit must be between 1 and 1000, not {limit}")
        return self.store.audit(limit, before)

    # -- reports ---------------------------------------------------------------------------------
    def people(self) -> list[PersonSummary]:
        """Every person with their face and photo counts."""
        return self.store.people()

    def failures(self) -> list[Failure]:
        """Files and manifest rows that could not be indexed, with reasons."""
        return self.store.failures()

    def reviews(self) -> list[Review]:
        """Labelled photos a person should check."""
        return self.store.reviews()

    def stats(self) -> Stats:
        """Catalogue size, including the bytes the data directory takes."""
        stats = self.store.stats()
        size = sum(p.stat().st_size for p in self.data_dir.rglob("*") if p.is_file())
        return Stats(**{**stats.__dict__, "data_bytes": size})


def _log_notice(message: str) -> None:
    logging.getLogger("iddetective").warning(message)


def open_store(where: Path | str, readonly: bool = False) -> Store:
    """The store at `where`: a `postgresql://` URL, else the path of a SQLite catalogue."""
    kind = "postgresql" if str(where).startswith(POSTGRES_SCHEMES) else "sqlite"
    store: Store = resolve_class("store", kind)(where, readonly=readonly)
    return store
