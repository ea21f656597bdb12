"""Privacy operations over a data directory: erase a person, opt a face out, keep retention.

Each one changes the catalogue through the store (one transaction, audited by an opaque
token), then removes what lies beside it: vector index entries (the index is caught up),
cached crops and thumbnails, and our own copies of photos (uploads/, fetched/); then it
compacts the catalogue file so deleted bytes are gone. docs/privacy.md is the user's view.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import distances, media
from .entities import Erasure, OptOut
from .errors import UsageError
from .faces import pipeline_for
from .files import OWN_PHOTO_DIRS, PARTIAL_GLOB
from .imaging import read_photo_bytes

if TYPE_CHECKING:
    from .catalogue import Catalogue

__all__ = [
    "MaintenanceReport",
    "OptOutResult",
    "add_optout",
    "erase_person",
    "run_maintenance",
]

#: Partly written files older than this are left over from a killed process.
_STALE_PART_SECONDS = 3600


@dataclass(frozen=True)
class OptOutResult:
    """An opt-out just added, and the faces already in the catalogue it erased."""

    optout: OptOut
    erased: Erasure


@dataclass(frozen=True)
class MaintenanceReport:
    """What `run_maintenance` removed."""

    audit_entries: int
    media_files: int
    partial_files: int


def erase_person(catalogue: Catalogue, ref: str, actor: str) -> Erasure:
    """Erase a person (id or unambiguous name) everywhere; other people's faces stay."""
    person = catalogue.store.resolve_person(ref)
    erasure = catalogue.store.erase_person(person.id, actor)
    _clean_up(catalogue, erasure)
    return erasure


def add_optout(catalogue: Catalogue, photo: str, actor: str) -> OptOutResult:
    """Opt out the one face in `photo`: blocklist it, erase the faces already stored within
    the opt-out threshold of it; from now on searches and ingestion skip such faces."""
    data = read_photo_bytes(photo)
    analysis = pipeline_for(catalogue.pipeline).analyse(data, photo)
    if len(analysis.faces) != 1:
        found = "no face" if not analysis.faces else f"{len(analysis.faces)} faces"
        raise UsageError(f"{photo}: an opt-out photo must show exactly one face; it shows {found}")
    embedding = analysis.faces[0].embedding
    optout = catalogue.store.add_optout(analysis.model, embedding, actor)
    within = catalogue.vector_index().range_search(embedding[None, :], distances.OPTOUT_THRESHOLD)[
        0
    ]
    erased = catalogue.store.erase_faces(within.ids.tolist(), actor, "optout_erase")
    _clean_up(catalogue, erased)
    return OptOutResult(optout, erased)


def run_maintenance(catalogue: Catalogue, audit_days: int) -> MaintenanceReport:
    """Purge audit entries older than `audit_days`, cached media of faces and photos that are
    gone, and partly written files left by killed processes; then compact the catalogue."""
    if audit_days < 1:
        raise UsageError(f"--audit-days must be at least 1, not {audit_days}")
    purged = catalogue.store.purge_audit(audit_days)
    catalogue.sweep_vector_files()  # an erasure a crash interrupted leaves no vectors behind
    media_files = _orphan_media(catalogue)
    partial = _stale_partial_files(catalogue.data_dir)
    catalogue.store.compact()
    return MaintenanceReport(purged, media_files, partial)


def _clean_up(catalogue: Catalogue, erasure: Erasure) -> None:
    catalogue.sweep_vector_files()  # caught up: the erased faces leave the index files
    media.forget(catalogue.data_dir, erasure.faces, erasure.photos)
    ours = [(catalogue.data_dir / folder).resolve() for folder in OWN_PHOTO_DIRS]
    for photo in erasure.photos:
        for path in map(Path, photo.paths):
            if any(path.resolve().is_relative_to(folder) for folder in ours):
                path.unlink(missing_ok=True)
    catalogue.store.compact()


def _orphan_media(catalogue: Catalogue) -> int:
    """Delete cached crops of faces and thumbnails of photos no longer in the catalogue."""
    found = media.orphans(catalogue.data_dir / media.MEDIA_DIR, catalogue.store, catalogue.model)
    for path in found:
        path.unlink(missing_ok=True)
    return len(found)


def _stale_partial_files(data_dir: Path) -> int:
    cutoff = time.time() - _STALE_PART_SECONDS
    removed = 0
    for partial in data_dir.rglob(PARTIAL_GLOB):
        if partial.stat().st_mtime < cutoff:
            os.unlink(partial)
            removed += 1
    return removed
