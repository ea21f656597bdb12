"""`iddetective check`: the whole data directory verified in one run, nothing changed.

Four parts, each reported with what was checked and every problem found (what and where):
- the catalogue: the database engine's own check (SQLite's integrity and foreign key checks);
- the vector index file: its checksums, and that it holds exactly the catalogue's faces with
  the catalogue's own embeddings (when it is not behind the catalogue, which is normal and
  caught up at its next use);
- the photo files: each recorded file still exists and holds the bytes that were indexed
  (SHA-256; `quick` compares size and modification time only);
- the media cache: each cached thumbnail and crop decodes, and belongs to a stored photo or
  face (orphans are what `iddetective maintenance` removes).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from . import media
from .entities import StoredFile
from .errors import BadImage
from .faces.imaging import open_photo_file
from .store import Store
from .vector_index import IndexMismatch, IndexOutdated, VectorIndex

__all__ = ["CheckReport", "Checked", "Problem", "check_data_dir"]


class Checked(Protocol):
    """What `check_data_dir` needs of an open data directory (`catalogue.Catalogue` is one),
    so this module never imports the catalogue that calls it."""

    store: Store
    data_dir: Path

    @property
    def model(self) -> str:
        """The embedding model of the catalogue's faces."""
        ...

    @property
    def store_location(self) -> str:
        """Where the catalogue lives, for messages."""
        ...

    @property
    def vector_index_location(self) -> str:
        """Where the vector index lives, for messages."""
        ...

    def saved_vector_index(self) -> tuple[VectorIndex, int] | None:
        """The vector index as saved, not caught up (None: nothing saved to compare)."""
        ...

#: Catalogue faces compared with the index per search (an exact scan of this many rows).
_CHUNK = 1024
#: How far the index's distance to a face's own catalogue embedding may be from zero.
_TOLERANCE = 1e-3
FileProgress = Callable[[int, int], None]


@dataclass(frozen=True)
class Problem:
    """One thing found wrong: in which part, where exactly, and what."""

    part: str
    where: str
    what: str


@dataclass
class CheckReport:
    """What `check_data_dir` looked at (items per part), what it found, and what it noted."""

    checked: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether nothing is wrong."""
        return not self.problems

    def add(self, part: str, where: str, what: str) -> None:
        """Record a problem."""
        self.problems.append(Problem(part, where, what))


def check_data_dir(
    catalogue: Checked, *, quick: bool = False, progress: FileProgress | None = None
) -> CheckReport:
    """Check the catalogue, its vector index, the photo files and the media cache; change
    nothing. `progress` is told (files done, files in all) while photo files are read."""
    report = CheckReport()
    _check_catalogue(catalogue, report)
    _check_vector_index(catalogue, report)
    _check_photo_files(catalogue, report, quick, progress)
    _check_media(catalogue, report)
    return report


def _check_catalogue(catalogue: Checked, report: CheckReport) -> None:
    for text in catalogue.store.integrity_problems():
        report.add("catalogue", catalogue.store_location, text)
    report.checked["catalogue"] = 1


def _check_vector_index(catalogue: Checked, report: CheckReport) -> None:
    report.checked["vector index"] = 0
    try:
        saved = catalogue.saved_vector_index()
    except IndexOutdated as error:
        report.notes.append(f"{error}: it is rebuilt from the catalogue at its next use")
        return
    except IndexMismatch as error:
        report.add("vector index", catalogue.vector_index_location, str(error))
        return
    if saved is None:
        report.notes.append(
            f"no vector index file to compare ({catalogue.vector_index_location}); "
            "it is built from the catalogue when first needed"
        )
        return
    index, epoch = saved
    if epoch != catalogue.store.faces_epoch():
        report.notes.append(
            "the vector index file is behind the catalogue: it is caught up at its next use"
        )
        return
    faces = catalogue.store.face_ids(catalogue.model)
    held = index.ids()
    missing, extra = np.setdiff1d(faces, held), np.setdiff1d(held, faces)
    where = catalogue.vector_index_location
    if len(missing) or len(extra):
        report.add(
            "vector index",
            where,
            f"holds {len(extra)} faces the catalogue does not and lacks {len(missing)} it has",
        )
    wrong = _faces_whose_vector_differs(catalogue, index, np.intersect1d(faces, held))
    if len(wrong):
        report.add(
            "vector index",
            where,
            f"{len(wrong)} faces' vectors differ from the catalogue's (first: face {wrong[0]})",
        )
    report.checked["vector index"] = len(held)


def _faces_whose_vector_differs(
    catalogue: Checked, index: VectorIndex, face_ids: np.ndarray
) -> list[int]:
    """Faces whose nearest neighbour in the index, among themselves, is not their own entry at
    distance zero: the index holds some other vector under their id."""
    wrong: list[int] = []
    for start in range(0, len(face_ids), _CHUNK):
        chunk = face_ids[start : start + _CHUNK]
        ids, vectors = catalogue.store.embeddings_of(chunk, catalogue.model)
        for face_id, hits in zip(ids.tolist(), index.search(vectors, 1, allowed=ids), strict=True):
            if not len(hits) or hits.ids[0] != face_id or hits.distances[0] > _TOLERANCE:
                wrong.append(int(face_id))
    return wrong


def _check_photo_files(
    catalogue: Checked, report: CheckReport, quick: bool, progress: FileProgress | None
) -> None:
    files = list(catalogue.store.stored_files())
    for done, record in enumerate(files, start=1):
        problem = _file_problem(record, quick)
        if problem:
            report.add("photo files", record.stat.path, problem)
        if progress:
            progress(done, len(files))
    report.checked["photo files"] = len(files)


def _file_problem(record: StoredFile, quick: bool) -> str | None:
    """What is wrong with one recorded photo file, if anything."""
    path = record.stat.path
    if not os.path.lexists(path):
        return "missing (`iddetective index --prune` on its folder forgets it)"
    try:
        with open_photo_file(path) as handle:
            info = os.fstat(handle.fileno())
            unchanged = (info.st_size, info.st_mtime_ns) == (record.stat.size, record.stat.mtime_ns)
            if quick:
                return None if unchanged else "changed since it was indexed (size or time differ)"
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
    except BadImage as error:
        return error.reason
    except OSError as error:
        return f"cannot be read: {error.strerror}"
    if digest != record.sha256:
        return "changed since it was indexed (its SHA-256 differs): index it again"
    return None


def _check_media(catalogue: Checked, report: CheckReport) -> None:
    root = catalogue.data_dir / media.MEDIA_DIR
    cached = sorted(root.glob("face/*/*.jpg")) + sorted(root.glob("thumb/*/*.jpg"))
    for path in cached:
        try:
            with Image.open(path) as image:
                image.verify()
        except Exception as error:  # Pillow raises many kinds for a damaged file
            report.add("media cache", str(path), f"damaged ({error}): delete it to make it anew")
    orphans = media.orphans(root, catalogue.store)
    if orphans:
        report.notes.append(
            f"{len(orphans)} cached thumbnails and crops belong to removed photos and faces: "
            "`iddetective maintenance` deletes them"
        )
    report.checked["media cache"] = len(cached)
