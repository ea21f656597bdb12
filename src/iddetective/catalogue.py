"""A data directory opened for use: the store, the vector index beside it, and the pipeline.

This is the library's front door; the CLI (and later the HTTP API) call one method each.

Data directory layout (docs/contracts.md):
    catalog.sqlite            the catalogue (plus -wal/-shm files while in use)
    vectors/<index>-<model>.npz   the vector index, a cache rebuilt from the catalogue
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import distances
from .entities import Failure, PersonSummary, PhotoRef, Review, Stats
from .errors import NotFound, UsageError
from .faces import PipelineSettings, pipeline_for
from .imaging import read_photo_bytes
from .ingest import IndexReport, ProgressCallback, index_plan
from .registry import resolve_class
from .search import SearchResult, match_faces
from .sources import plan_sources
from .store import Store
from .vector_index import IndexMismatch, VectorIndex

__all__ = ["CATALOG_FILE", "Catalogue", "default_data_dir"]

CATALOG_FILE = "catalog.sqlite"
IndexProgress = Callable[[int, int], None]
VECTORS_DIR = "vectors"


def default_data_dir() -> Path:
    """`$IDDETECTIVE_DATA`, else `$XDG_DATA_HOME/iddetective` (~/.local/share/iddetective)."""
    if os.environ.get("IDDETECTIVE_DATA"):
        return Path(os.environ["IDDETECTIVE_DATA"])
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return Path(base) / "iddetective"


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
        vector_index: str = "ivf",
        index_progress: IndexProgress | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.pipeline = pipeline or PipelineSettings()
        self._index_name = vector_index
        #: Told (faces done, faces to do) while the vector index is rebuilt or caught up.
        self.index_progress = index_progress
        path = self.data_dir / CATALOG_FILE
        if not create and not path.exists():
            raise NotFound(
                f"no catalogue in {self.data_dir} (run `iddetective index` first, "
                "or pass --data to name another data directory)"
            )
        self.store: Store = _open_sqlite(path, readonly=False)
        self._index: VectorIndex | None = None
        self._index_epoch = -1

    def close(self) -> None:
        """Close the store."""
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
        prune: bool = False,
        retry_failed: bool = False,
        progress: ProgressCallback | None = None,
    ) -> IndexReport:
        """Index photos from files and folders (recursively), labelled by manifest or folders.

        With `workers` > 1 photos are analysed in a pool of spawned processes, so a script
        calling this must guard its entry point with `if __name__ == "__main__":`.
        """
        if workers < 1:
            raise UsageError(f"--workers must be at least 1, not {workers}")
        plan = plan_sources(paths, people, people_from_folders)
        opener = functools.partial(_open_sqlite, self.data_dir / CATALOG_FILE, readonly=True)
        report = index_plan(
            self.store,
            plan,
            self.pipeline,
            workers=workers,
            store_opener=opener,
            retry_failed=retry_failed,
            progress=progress,
        )
        if prune and not report.interrupted:
            report.pruned = self.store.forget_missing_files(plan.roots)
        self.vector_index()
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
    ) -> SearchResult:
        """Find every face in the photo at `path` and who each one is.

        `people` (ids or unambiguous names) restricts the search to those people's faces.
        """
        if top < 1:
            raise UsageError(f"--top must be at least 1, not {top}")
        threshold = distances.DEFAULT_THRESHOLD if threshold is None else threshold
        if not 0 < threshold <= 2:
            raise UsageError(f"--threshold must be in (0, 2], not {threshold}")
        allowed = self._faces_of(people) if people is not None else None
        data = read_photo_bytes(path)
        analysis = pipeline_for(self.pipeline).analyse(data, path)
        faces = match_faces(
            self.store, self.vector_index(), analysis, top=top, threshold=threshold, allowed=allowed
        )
        return SearchResult(
            path=path,
            sha256=hashlib.sha256(data).hexdigest(),
            width=analysis.width,
            height=analysis.height,
            model=analysis.model,
            threshold=threshold,
            faces=tuple(faces),
        )

    def _faces_of(self, people: Sequence[str]) -> np.ndarray:
        chosen = [self.store.resolve_person(ref).id for ref in people]
        return self.store.face_ids_of_people(chosen)

    def vector_index(self) -> VectorIndex:
        """The vector index, brought up to date with the catalogue before it is used.

        The index file records the catalogue's face epoch. A file from an older epoch is
        caught up (faces added and removed since); a missing or unreadable one is rebuilt.
        """
        epoch = self.store.faces_epoch()
        if self._index is not None and self._index_epoch == epoch:
            return self._index
        index_class = resolve_class("vector_index", self._index_name)
        path = self._index_path(index_class)
        try:
            index, saved_epoch = index_class.load(path)
        except IndexMismatch:
            index, saved_epoch = self._new_index(index_class), -1
        if saved_epoch != epoch:
            self._catch_up(index)
            index.save(path, epoch)
            index = self._reloaded(index_class, path, index)
        self._index, self._index_epoch = index, epoch
        return index

    @staticmethod
    def _reloaded(index_class: Any, path: Path, index: VectorIndex) -> VectorIndex:
        """The index just saved, loaded again so its vectors are memory-mapped, not in RAM."""
        try:
            reloaded: VectorIndex = index_class.load(path)[0]
        except (IndexMismatch, OSError):
            return index  # another process replaced it meanwhile: ours is as good
        return reloaded

    def _new_index(self, index_class: type) -> VectorIndex:
        index: VectorIndex = index_class(pipeline_for(self.pipeline).embedder.dimension)
        return index

    def _catch_up(self, index: VectorIndex) -> None:
        model = pipeline_for(self.pipeline).embedder.name
        current, held = self.store.face_ids(model), index.ids()
        index.remove(np.setdiff1d(held, current, assume_unique=True))
        missing = np.setdiff1d(current, held, assume_unique=True)
        for start in range(0, len(missing), 65536):
            ids, vectors = self.store.embeddings_of(missing[start : start + 65536])
            if len(ids):
                index.add(ids, vectors)
            if self.index_progress:
                self.index_progress(min(start + 65536, len(missing)), len(missing))

    def reindex(self) -> int:
        """Rebuild the vector index from the catalogue now; returns the faces it holds."""
        index_class = resolve_class("vector_index", self._index_name)
        index = self._new_index(index_class)
        epoch = self.store.faces_epoch()
        self._catch_up(index)
        index.save(self._index_path(index_class), epoch)
        self._index, self._index_epoch = index, epoch
        return len(index)

    def _index_path(self, index_class: type) -> Path:
        model = pipeline_for(self.pipeline).embedder.name
        suffix = getattr(index_class, "suffix", "")
        return self.data_dir / VECTORS_DIR / f"{self._index_name}-{model}{suffix}"

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


def _open_sqlite(path: Path, readonly: bool) -> Store:
    store_class = resolve_class("store", "sqlite")
    store: Store = store_class(path, readonly=readonly)
    return store
