"""Approximate search for large collections: faiss IVF with 8-bit codes, re-ranked exactly.

The inverted file holds each face as d one-byte codes (d the model's dimension: 128 for
dlib's ResNet; any works) plus its id, and proposes candidates; their distances are then
recomputed exactly from the full-precision float32 vectors, so every distance and verdict
reported is exact. Until the collection is large
enough to train the coarse quantiser (`train_min` faces), and for filters small enough to
scan, the search is the exact scan itself.

On disk an index is a directory `<name>.<epoch>.<random>/` (faiss index, ids, float32
vectors, and metadata with their dimension and SHA-256 digests) and a pointer file `<name>`
naming the current directory, replaced atomically. Loading refuses a pointer to anything else
and files whose digests changed (integrity.py).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..matching import distances
from .base import IndexMismatch, Neighbours, checked_addition, checked_queries, nearest, within
from .integrity import file_digests, sealed, unsealed, verify_files

__all__ = ["IvfIndex"]

FORMAT = "iddetective-ivf-1"
#: Vectors the coarse quantiser is trained on (a random sample when there are more): at
#: least TRAIN_SAMPLE, and TRAIN_PER_LIST per list (faiss warns below 39).
TRAIN_SAMPLE = 100_000
TRAIN_PER_LIST = 64
#: Search settings saved with an index and restored by `load`.
#: The files of a saved index: always, and once trained.
_FILES = {"ids.npy", "vectors.npy"}
_IVF_FILE = "ivf.faiss"
KNOBS = ("train_min", "nprobe", "candidates", "exact_filter_max", "range_margin", "retrain_growth")


class IvfIndex:
    """faiss IVF-SQ8 candidates + exact float32 re-rank; exact below `train_min` faces."""

    #: Appended to the index's path in a data directory: here a pointer file, no suffix.
    suffix = ""

    def __init__(
        self,
        dimension: int,
        *,
        train_min: int = 40_000,
        nprobe: int = 192,
        candidates: int = 64,
        exact_filter_max: int = 50_000,
        range_margin: float = 0.02,
        retrain_growth: float = 4.0,
    ) -> None:
        self.dimension = dimension
        self.train_min = train_min
        self.nprobe = nprobe
        self.candidates = candidates
        self.exact_filter_max = exact_filter_max
        self.range_margin = range_margin
        self.retrain_growth = retrain_growth
        self._trained_at = 0
        self._ids = np.zeros(0, dtype=np.int64)
        self._vectors = np.zeros((0, dimension), dtype=np.float32)
        self._ivf: Any = None

    def __len__(self) -> int:
        return len(self._ids)

    def ids(self) -> np.ndarray:
        """The ids held, ascending."""
        return self._ids.copy()

    @property
    def trained(self) -> bool:
        """Whether the inverted file is in use (else every search is an exact scan)."""
        return self._ivf is not None

    @property
    def lists(self) -> int:
        """Inverted lists of the trained index (0 before training)."""
        return int(self._ivf.nlist) if self._ivf is not None else 0

    # -- contents --------------------------------------------------------------------------------
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids, vectors = checked_addition(ids, vectors, self.dimension, self._ids)
        self._ids, self._vectors = _merged(self._ids, self._vectors, ids, vectors)
        if self._should_train():
            self._train()
        elif self._ivf is not None:
            self._ivf.add_with_ids(vectors, ids)

    def _should_train(self) -> bool:
        if self._ivf is None:
            return len(self._ids) >= self.train_min
        # Lists trained for a much smaller collection grow long and slow: train again.
        return len(self._ids) >= self.retrain_growth * self._trained_at

    def remove(self, ids: np.ndarray) -> int:
        gone = np.isin(self._ids, np.asarray(ids, dtype=np.int64))
        removed = int(gone.sum())
        if removed:
            if self._ivf is not None:
                import faiss

                self._ivf.remove_ids(faiss.IDSelectorBatch(self._ids[gone]))
            self._ids, self._vectors = self._ids[~gone], self._vectors[~gone]
        return removed

    def _train(self) -> None:
        import faiss

        count = len(self._ids)
        # 4 sqrt(N) lists measured best (docs/ann-study.md); faiss wants >= 39 points per list.
        nlist = int(max(1, min(65536, 4 * math.sqrt(count), count // 39)))
        quantiser = faiss.IndexFlatL2(self.dimension)
        ivf = faiss.IndexIVFScalarQuantizer(
            quantiser, self.dimension, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_L2
        )
        sample_size = max(TRAIN_SAMPLE, TRAIN_PER_LIST * nlist)
        sample = np.random.default_rng(0).permutation(count)[:sample_size]
        ivf.train(np.ascontiguousarray(self._vectors[np.sort(sample)]))
        ivf.add_with_ids(np.ascontiguousarray(self._vectors), self._ids)
        self._ivf, self._trained_at = ivf, count

    # -- search ----------------------------------------------------------------------------------
    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> list[Neighbours]:
        queries = checked_queries(queries, self.dimension, k)
        rows = self._allowed_rows(allowed)
        if self._exact(rows):
            return [nearest(ids, dist, k) for ids, dist in self._scan(queries, rows)]
        found = self._ivf_candidates(queries, max(k * 4, self.candidates), allowed)
        return [nearest(ids, dist, k) for ids, dist in self._rerank(queries, found)]

    def range_search(
        self, queries: np.ndarray, radius: float, allowed: np.ndarray | None = None
    ) -> list[Neighbours]:
        queries = checked_queries(queries, self.dimension)
        rows = self._allowed_rows(allowed)
        if self._exact(rows):
            return [within(ids, dist, radius) for ids, dist in self._scan(queries, rows)]
        found = self._ivf_range(queries, radius + self.range_margin, allowed)
        return [within(ids, dist, radius) for ids, dist in self._rerank(queries, found)]

    def _exact(self, rows: np.ndarray | None) -> bool:
        return self._ivf is None or (rows is not None and len(rows) <= self.exact_filter_max)

    def _allowed_rows(self, allowed: np.ndarray | None) -> np.ndarray | None:
        if allowed is None:
            return None
        wanted = np.unique(np.asarray(allowed, dtype=np.int64))
        if not len(self._ids):
            return np.zeros(0, dtype=np.int64)
        rows = np.minimum(np.searchsorted(self._ids, wanted), len(self._ids) - 1)
        return rows[self._ids[rows] == wanted]

    def _scan(
        self, queries: np.ndarray, rows: np.ndarray | None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        ids = self._ids if rows is None else self._ids[rows]
        vectors = self._vectors if rows is None else self._vectors[rows]
        if not len(ids):
            return [(ids, np.zeros(0, np.float32)) for _ in queries]
        matrix = distances.euclidean_many(queries, vectors)
        return [(ids, row) for row in matrix]

    def _search_parameters(self, allowed: np.ndarray | None) -> tuple[Any, Any]:
        """faiss search parameters, and the id selector they point to (None if unfiltered).

        faiss does not keep the selector alive: callers hold it until the search returns.
        """
        import faiss

        params = faiss.SearchParametersIVF()
        params.nprobe = min(self.nprobe, self._ivf.nlist)
        selector = None
        if allowed is not None:
            selector = faiss.IDSelectorBatch(np.asarray(allowed, dtype=np.int64))
            params.sel = selector
        return params, selector

    def _ivf_candidates(
        self, queries: np.ndarray, count: int, allowed: np.ndarray | None
    ) -> list[np.ndarray]:
        params, _selector = self._search_parameters(allowed)
        _, labels = self._ivf.search(queries, min(count, len(self._ids)), params=params)
        return [row[row >= 0] for row in labels]

    def _ivf_range(
        self, queries: np.ndarray, radius: float, allowed: np.ndarray | None
    ) -> list[np.ndarray]:
        params, _selector = self._search_parameters(allowed)
        # faiss L2 distances are squared.
        limits, _, labels = self._ivf.range_search(queries, radius * radius, params=params)
        return [labels[limits[i] : limits[i + 1]] for i in range(len(queries))]

    def _rerank(
        self, queries: np.ndarray, found: list[np.ndarray]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Exact distances of every query's candidates, with one gather for the batch."""
        if not found:
            return []
        counts = [len(f) for f in found]
        ids = np.concatenate(found).astype(np.int64)
        rows = np.searchsorted(self._ids, ids)
        owners = np.repeat(np.arange(len(queries)), counts)
        # Gathered in ascending row order: memory-mapped pages are read front to back.
        order = np.argsort(rows, kind="stable")
        gathered = np.empty((len(rows), self.dimension), np.float32)
        gathered[order] = self._vectors[rows[order]]
        difference = gathered - queries[owners]
        exact = np.sqrt(np.einsum("ij,ij->i", difference, difference))
        bounds = np.cumsum(counts)[:-1]
        return list(zip(np.split(ids, bounds), np.split(exact, bounds), strict=True))

    # -- persistence -----------------------------------------------------------------------------
    def save(self, path: Path, epoch: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=f"{path.name}.{epoch}.", dir=path.parent))
        try:
            self._write_files(folder, epoch)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)  # a full disk leaves no half index
            raise
        _replace_pointer(path, folder.name)

    def _write_files(self, folder: Path, epoch: int) -> None:
        np.save(folder / "ids.npy", self._ids)
        np.save(folder / "vectors.npy", self._vectors)
        files = sorted(_FILES)
        if self._ivf is not None:
            import faiss

            try:
                faiss.write_index(self._ivf, str(folder / _IVF_FILE))
            except RuntimeError as error:  # faiss says "No space left on device" this way
                raise OSError(f"cannot write {folder / _IVF_FILE}: {error}") from None
            files.append(_IVF_FILE)
        meta = {
            "format": FORMAT,
            "epoch": epoch,
            "dimension": self.dimension,
            "count": len(self),
            "trained_at": self._trained_at,
            "knobs": {name: getattr(self, name) for name in KNOBS},
            "sha256": file_digests(folder, files),
        }
        (folder / "meta.json").write_text(sealed(meta))

    @classmethod
    def remove_abandoned(cls, path: Path, older_than: float) -> int:
        """Delete the directories of this index that the pointer `path` does not name (left
        by killed saves) last changed over `older_than` seconds ago; returns how many."""
        try:
            keep = _pointed_folder(path).name
        except (OSError, IndexMismatch):
            keep = ""
        return _remove_abandoned(path, keep=keep, older_than=older_than)

    @classmethod
    def load(cls, path: Path) -> tuple[IvfIndex, int]:
        """The index whose directory the pointer file `path` names, and its epoch.

        Raises `IndexMismatch` for a pointer that names anything but a directory of this
        index beside it, and `IndexDamaged` for files whose checksums changed since `save`.
        """
        try:
            folder = _pointed_folder(path)
            meta = unsealed((folder / "meta.json").read_text(), folder / "meta.json")
            if meta.get("format") != FORMAT:
                raise ValueError(f"unknown format {meta.get('format')!r}")
            # Checked before faiss parses anything: a damaged faiss file can crash the process.
            verify_files(folder, meta["sha256"], _FILES, {_IVF_FILE})
            index = cls(int(meta["dimension"]), **meta.get("knobs", {}))
            index._ids = np.load(folder / "ids.npy", allow_pickle=False)
            index._trained_at = int(meta.get("trained_at", 0))
            # Memory-mapped: only the rows of re-ranked candidates are ever read.
            index._vectors = np.load(folder / "vectors.npy", mmap_mode="r", allow_pickle=False)
            if _IVF_FILE in meta["sha256"]:
                import faiss

                index._ivf = faiss.read_index(str(folder / _IVF_FILE))
        except IndexMismatch:
            raise
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as error:
            raise IndexMismatch(f"cannot read the index file {path}: {error}") from None
        expected = (meta["count"], meta["dimension"])
        if len(index._ids) != meta["count"] or index._vectors.shape != expected:
            raise IndexMismatch(f"the index at {path} is inconsistent")
        if index._ivf is not None and index._ivf.d != index.dimension:
            raise IndexMismatch(
                f"the index at {path} is inconsistent: its inverted file is of dimension "
                f"{index._ivf.d}, its vectors of {index.dimension}"
            )
        return index, int(meta["epoch"])


def _merged(
    ids: np.ndarray, vectors: np.ndarray, new_ids: np.ndarray, new_vectors: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Both sets in ascending id order; new catalogue faces (higher ids) are only appended."""
    if not len(new_ids):
        return ids, vectors
    order = np.argsort(new_ids, kind="stable")
    new_ids, new_vectors = new_ids[order], new_vectors[order]
    if not len(ids) or new_ids[0] > ids[-1]:
        return np.concatenate([ids, new_ids]), np.concatenate([vectors, new_vectors])
    merged = np.concatenate([ids, new_ids])
    order = np.argsort(merged, kind="stable")
    return merged[order], np.concatenate([vectors, new_vectors])[order]


def _folder_name_pattern(path: Path) -> re.Pattern[str]:
    """The names `save` gives an index's directories: `<pointer name>.<epoch>.<random>`."""
    return re.compile(re.escape(path.name) + r"\.\d+\.[A-Za-z0-9_]+")


def _pointed_folder(path: Path) -> Path:
    """The directory the pointer file `path` names, which must be one `save` made beside it.

    The pointer is a file anyone with access to the data directory can write: a name of any
    other shape (`..`, `../victim`, an absolute path, a symlink) is refused, never followed.
    """
    if path.is_symlink() or not path.is_file():
        raise IndexMismatch(f"the index pointer {path} is not a plain file")
    with open(path, "rb") as handle:
        name = handle.read(256).decode("utf-8", "replace").strip()
    folder = path.parent / name
    if not _folder_name_pattern(path).fullmatch(name) or folder.is_symlink():
        raise IndexMismatch(f"the index pointer {path} names {name[:80]!r}, not an index of it")
    return folder


def _replace_pointer(path: Path, target: str) -> None:
    """Point `path` at the directory `target`, then delete the directory it named before.

    Only that directory goes (and abandoned ones over an hour old): another process may be
    writing its own directory beside it right now. Only directories of the shape `save`
    names are ever deleted, whatever the pointer file said.
    """
    try:
        previous: Path | None = _pointed_folder(path)
    except (OSError, IndexMismatch):
        previous = None
    handle, temporary = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    with os.fdopen(handle, "w") as out:
        out.write(target)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
    if previous is not None and previous.name != target:
        shutil.rmtree(previous, ignore_errors=True)
    _remove_abandoned(path, keep=target, older_than=3600)


def _remove_abandoned(path: Path, *, keep: str, older_than: float) -> int:
    """Delete this index's directories other than `keep` last changed over `older_than`
    seconds ago (left by killed saves, or by an index since replaced); returns how many."""
    pattern, removed = _folder_name_pattern(path), 0
    for old in path.parent.iterdir():
        if not pattern.fullmatch(old.name) or old.name == keep or old.is_symlink():
            continue
        if old.is_dir() and time.time() - old.stat().st_mtime > older_than:
            shutil.rmtree(old, ignore_errors=True)
            removed += 1
    return removed
