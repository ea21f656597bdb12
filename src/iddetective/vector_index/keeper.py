"""The vector index of one catalogue, kept up to date with it: loaded, caught up, saved,
rebuilt when damaged, tidied after an erasure.

The catalogue is the source of truth and the index a cache of its embeddings. An index kept
in a file (`PersistentIndex`: exact, ivf) records the catalogue's face epoch when saved; a
file from an older epoch is caught up (faces added and removed since), a missing or unreadable
one rebuilt. An index searching the catalogue's own table (`CatalogueIndex`: pgvector) is
always up to date. `Catalogue` (catalogue.py) asks here for every use of the index.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

from ..errors import StoreError, UsageError, from_os_error
from ..faces.pipeline import PipelineSettings, pipeline_for
from ..matching.search import check_against_catalogue
from ..registry import resolve_class
from ..store import Store
from .base import (
    CatalogueIndex,
    IndexDamaged,
    IndexMismatch,
    IndexOutdated,
    Neighbours,
    PersistentIndex,
    VectorIndex,
)

__all__ = ["CATCH_UP_BATCH", "IndexKeeper"]

#: Told (faces done, faces to do) while the index is rebuilt or caught up.
IndexProgress = Callable[[int, int], None]
#: Told, in one line, of damage found and repaired.
Notice = Callable[[str], None]
#: Faces read from the catalogue at once while an index is caught up.
CATCH_UP_BATCH = 65536
T = TypeVar("T")


class IndexKeeper:
    """The vector index named `name` (registry short name or dotted path) over the faces of
    `pipeline`'s embedder in `store`, files kept in `folder`; `db` is the catalogue's
    PostgreSQL URL, if it lives there."""

    def __init__(
        self,
        store: Store,
        name: str,
        *,
        folder: Path,
        pipeline: PipelineSettings,
        db: str | None,
        notice: Notice,
        progress: IndexProgress | None = None,
    ) -> None:
        self.store, self.name, self.folder, self.db = store, name, folder, db
        self.pipeline, self.notice, self.progress = pipeline, notice, progress
        self._index: VectorIndex | None = None
        self._epoch = -1
        # Held while the index is caught up or rebuilt and swapped, never while searching:
        # an index handed out is never changed, only replaced (threads share the keeper).
        self._lock = threading.RLock()
        self._kind: PersistentIndex | CatalogueIndex | None = None

    @property
    def model(self) -> str:
        """The name of the embedding model whose faces the index holds."""
        return pipeline_for(self.pipeline).embedder.name

    @property
    def dimension(self) -> int:
        """The length of that model's embeddings."""
        return pipeline_for(self.pipeline).embedder.dimension

    def kind(self) -> PersistentIndex | CatalogueIndex:
        """The index's class, checked to be one the keeper knows how to keep (resolved and
        checked once: every search asks)."""
        if self._kind is None:
            self._kind = _kept_kind(self.name)
        return self._kind

    def close(self) -> None:
        """Close the index's connection, if it has one."""
        close_index = getattr(self._index, "close", None)
        if close_index is not None:
            close_index()

    def index(self) -> VectorIndex:
        """The index, brought up to date with the catalogue before it is used."""
        kind = self.kind()
        if self._index is None:
            self._check_dimension()
        if isinstance(kind, CatalogueIndex):
            with self._lock:
                if self._index is None:
                    self._index = self._in_catalogue(kind)
                return self._index
        epoch = self.store.faces_epoch()
        if self._index is not None and self._epoch == epoch:
            return self._index
        with self._lock:  # one thread catches up; the others wait for its index
            if self._index is not None and self._epoch == epoch:
                return self._index
            return self._caught_up(kind, epoch)

    def _caught_up(self, kind: PersistentIndex, epoch: int) -> VectorIndex:
        """The saved index caught up to `epoch`, saved again and put in place."""
        path = self.path(kind)
        index, saved_epoch = self._loaded(kind, path)
        if saved_epoch != epoch:
            self._catch_up(index)
            if self._saved(index, path, epoch):
                index = _reloaded(kind, path, index)
        self._index, self._epoch = index, epoch
        return index

    def with_index(self, work: Callable[[VectorIndex], T]) -> T:
        """`work` over the index; if the index proves damaged (answers disagree with the
        catalogue), it is rebuilt from the catalogue and `work` runs once more."""
        try:
            return work(self.index())
        except IndexDamaged as error:
            self.notice(f"{error}; rebuilding the vector index from the catalogue")
        self.rebuild()
        try:
            return work(self.index())
        except IndexDamaged as error:
            raise StoreError(f"{error}, even after rebuilding the vector index") from None

    def faces_within(self, embeddings: np.ndarray, radius: float) -> list[Neighbours]:
        """For each embedding (a row), every face within `radius`, nearest first, with
        distances checked against the catalogue's own embeddings (rebuilt and asked again
        if they disagree)."""
        queries = np.asarray(embeddings, np.float32).reshape(-1, self.dimension)

        def within(index: VectorIndex) -> list[Neighbours]:
            found = index.range_search(queries, radius)
            check_against_catalogue(self.store, queries, found, model=self.model)
            return found

        return self.with_index(within)

    def saved(self) -> tuple[VectorIndex, int] | None:
        """The index as saved in the folder and the epoch it reflects, loaded as it is (not
        caught up); None when no file is saved, or the index is the catalogue's own table.
        Raises `IndexMismatch` for a foreign or damaged file."""
        kind = self.kind()
        if isinstance(kind, CatalogueIndex):
            return None
        path = self.path(kind)
        if not (path.exists() or path.is_symlink()):
            return None
        return kind.load(path)

    def location(self, store_location: str) -> str:
        """Where the index lives, for messages (`store_location`: the catalogue's)."""
        kind = self.kind()
        if isinstance(kind, CatalogueIndex):
            return f"the face table of {store_location}"
        return str(self.path(kind))

    def rebuild(self) -> int:
        """Rebuild the index from the catalogue now; returns the faces it holds."""
        kind = self.kind()
        if isinstance(kind, CatalogueIndex):
            return len(self.index())  # the catalogue's own table: nothing to rebuild
        with self._lock:
            index = kind(self.dimension)
            epoch = self.store.faces_epoch()
            self._catch_up(index)
            index.save(self.path(kind), epoch)
            self._index, self._epoch = index, epoch
            return len(index)

    def sweep(self, older_than: float = 60) -> int:
        """Bring the index up to date, then delete what killed saves of it left (over
        `older_than` seconds old). Returns the files or directories deleted."""
        self.index()
        kind = self.kind()
        if isinstance(kind, CatalogueIndex):
            return 0  # the catalogue's own table: nothing beside it
        return kind.remove_abandoned(self.path(kind), older_than)

    def path(self, kind: PersistentIndex) -> Path:
        """Where an index of class `kind` is saved."""
        return self.folder / f"{self.name}-{self.model}{kind.suffix}"

    def _loaded(self, kind: PersistentIndex, path: Path) -> tuple[VectorIndex, int]:
        """The saved index and its epoch, or a new empty one (epoch -1) when there is none
        or it cannot be used (said, unless it is missing or only outdated): one of vectors
        of another dimension than the model's is not this model's index."""
        try:
            index, epoch = kind.load(path)
            if index.dimension == self.dimension:
                return index, epoch
            self.notice(
                f"the vector index at {path} holds {index.dimension}-dimensional vectors, "
                f"but the model {self.model!r} makes {self.dimension}-dimensional ones; "
                "rebuilding the vector index from the catalogue"
            )
            close_index = getattr(index, "close", None)
            if close_index is not None:
                close_index()
        except IndexOutdated:
            pass
        except IndexMismatch as error:
            if path.exists() or path.is_symlink():  # a missing index is only a first run
                self.notice(f"{error}; rebuilding the vector index from the catalogue")
        return kind(self.dimension), -1

    def _check_dimension(self) -> None:
        """Refuse to index a model whose embedder makes vectors of another length than the
        catalogue recorded for that model's stored faces (a StoreError naming both)."""
        recorded = self.store.model_dimension(self.model)
        if recorded is not None and recorded != self.dimension:
            raise StoreError(
                f"the catalogue records the model {self.model!r}'s vectors as {recorded}-"
                f"dimensional, but its embedder makes {self.dimension}-dimensional ones"
            )

    def _in_catalogue(self, kind: CatalogueIndex) -> VectorIndex:
        if not self.db:
            raise UsageError(
                f"the {self.name} vector index searches the catalogue's own table: "
                "it needs the catalogue on PostgreSQL (--db postgresql://…)"
            )
        try:
            return kind.of_catalogue(self.db, self.model, self.dimension)
        except IndexMismatch as error:
            raise StoreError(str(error)) from None

    def _catch_up(self, index: VectorIndex) -> None:
        current, held = self.store.face_ids(self.model), index.ids()
        index.remove(np.setdiff1d(held, current, assume_unique=True))
        missing = np.setdiff1d(current, held, assume_unique=True)
        for start in range(0, len(missing), CATCH_UP_BATCH):
            batch = missing[start : start + CATCH_UP_BATCH]
            ids, vectors = self.store.embeddings_of(batch, self.model)
            if len(ids):
                index.add(ids, vectors)
            if self.progress:
                self.progress(min(start + CATCH_UP_BATCH, len(missing)), len(missing))

    def _saved(self, index: VectorIndex, path: Path, epoch: int) -> bool:
        """Save the index; a cache that cannot be written (full disk, read-only folder) is
        said, not fatal: the index in memory answers, and the next run catches up again."""
        try:
            index.save(path, epoch)
        except OSError as error:
            self.notice(f"cannot save the vector index: {from_os_error(error)}")
            return False
        return True


def _reloaded(kind: PersistentIndex, path: Path, index: VectorIndex) -> VectorIndex:
    """The index just saved, loaded again so its vectors are memory-mapped, not in RAM."""
    try:
        return kind.load(path)[0]
    except (IndexMismatch, OSError):
        return index  # another process replaced it meanwhile: ours is as good


def _kept_kind(name: str) -> PersistentIndex | CatalogueIndex:
    """The class the registry names `name`, if it is a kind of index the keeper can keep."""
    index_class = resolve_class("vector_index", name)
    if isinstance(index_class, CatalogueIndex | PersistentIndex):
        return index_class
    raise UsageError(
        f"the vector index {name!r} is neither kept in a file (PersistentIndex: "
        "suffix, load, remove_abandoned) nor in the catalogue (CatalogueIndex: of_catalogue)"
    )
