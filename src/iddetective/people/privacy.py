"""Privacy operations over a data directory: erase a person, opt a face out, keep retention.

Erasing and opting out are previewed first (`preview_erasure`, `preview_optout`: what would
go, grouped by person) so that front-ends can show it and ask. Then each one changes the
catalogue through the store (one transaction, audited by an opaque token), then removes what
lies beside it: vector index entries (the index is caught up), cached crops and thumbnails,
and our own copies of photos (uploads/, fetched/); then it compacts the catalogue file so
deleted bytes are gone. docs/privacy.md is the user's view.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from .. import media
from ..entities import Erasure, OptOut, PersonRef
from ..errors import UsageError
from ..faces.imaging import read_photo_bytes
from ..faces.pipeline import PipelineSettings, pipeline_for
from ..files import OWN_PHOTO_DIRS, PARTIAL_GLOB
from ..matching import distances
from ..matching.calibration import Thresholds
from ..store import Store
from ..vector_index import Neighbours

__all__ = [
    "Catalogue",
    "ErasurePreview",
    "FaceGroup",
    "MaintenanceReport",
    "OptOutPreview",
    "OptOutResult",
    "add_optout",
    "erase_person",
    "preview_erasure",
    "preview_optout",
    "run_maintenance",
]


class Catalogue(Protocol):
    """What privacy operations need of an open data directory (`catalogue.Catalogue` is one):
    named by what it does, so this module never imports the catalogue that calls it."""

    store: Store
    data_dir: Path
    pipeline: PipelineSettings

    @property
    def model(self) -> str:
        """The embedding model of the catalogue's faces."""
        ...

    @property
    def thresholds(self) -> Thresholds:
        """The model's default thresholds (`CalibrationError` if it has none)."""
        ...

    def faces_within(self, embeddings: np.ndarray, radius: float) -> list[Neighbours]:
        """Faces within `radius` of each embedding, checked against the catalogue."""
        ...

    def sweep_vector_files(self, older_than: float = 60) -> int:
        """Catch the vector index up; delete what killed saves of it left."""
        ...

#: Partly written files older than this are left over from a killed process.
_STALE_PART_SECONDS = 3600


@dataclass(frozen=True)
class FaceGroup:
    """Stored faces within reach of an opt-out: those of one person, or of nobody."""

    person: PersonRef | None
    faces: tuple[int, ...]
    nearest: float  # distance of the nearest of them to the opted-out face


@dataclass(frozen=True, eq=False)
class OptOutPreview:
    """What opting out the face of `photo` would erase, grouped by person, before it does."""

    photo: str
    model: str
    embedding: np.ndarray = field(repr=False)  # for matching only, never shown
    subject: PersonRef | None  # the person taken to be opting out (their faces are erased)
    groups: tuple[FaceGroup, ...]  # the subject's, then unnamed faces, then other people's
    #: The opt-out blocks every face at most this far from it (the model's opt-out threshold).
    within: float

    @property
    def others(self) -> tuple[FaceGroup, ...]:
        """Groups of faces labelled as someone other than the subject."""
        return tuple(g for g in self.groups if g.person is not None and g.person != self.subject)

    def to_erase(self, erase_others: bool) -> list[int]:
        """The faces the opt-out erases: the subject's and unnamed ones, and other people's
        only when told to."""
        return sorted(
            f for g in self.groups if erase_others or g not in self.others for f in g.faces
        )


@dataclass(frozen=True)
class OptOutResult:
    """An opt-out just added, the faces already in the catalogue it erased, and the faces
    within reach of it that it kept because they are labelled as someone else."""

    optout: OptOut
    erased: Erasure
    kept: tuple[FaceGroup, ...] = ()


@dataclass(frozen=True)
class ErasurePreview:
    """What erasing a person would remove: their faces and the unnamed faces that look like
    them (within `unnamed_within` of one of theirs)."""

    person: PersonRef
    faces: tuple[int, ...]
    unnamed: tuple[int, ...]
    unnamed_within: float


@dataclass(frozen=True)
class MaintenanceReport:
    """What `run_maintenance` removed."""

    audit_entries: int
    media_files: int
    partial_files: int


def preview_erasure(
    catalogue: Catalogue, ref: str, unnamed_within: float | None = None
) -> ErasurePreview:
    """The person (id or unambiguous name), their faces, and the unnamed faces within
    `unnamed_within` of one of them (not those rejected from them; 0: none; default: the
    model's `erase_unnamed` threshold, at most its opt-out one)."""
    if unnamed_within != 0:  # 0 (none) needs no threshold, even of an uncalibrated model
        thresholds = catalogue.thresholds  # one read of the model's table
        if unnamed_within is None:
            unnamed_within = thresholds.erase_unnamed
        elif not 0 < unnamed_within <= thresholds.optout:
            raise UsageError(
                f"--unnamed-within must be between 0 and {thresholds.optout} (the "
                f"model's opt-out threshold), not {unnamed_within}"
            )
    person = catalogue.store.resolve_person(ref)
    faces = tuple(f.id for f in catalogue.store.faces_of_person(person.id))
    if not faces or unnamed_within == 0:
        return ErasurePreview(person, faces, (), unnamed_within)
    # The faces of the catalogue's model: those of another are not in its vector index.
    _, vectors = catalogue.store.embeddings_of(np.array(faces, dtype=np.int64), catalogue.model)
    near = catalogue.faces_within(vectors, unnamed_within)
    candidates = {int(i) for found in near for i in found.ids} - set(faces)
    unnamed = catalogue.store.erasable_unnamed(person.id, sorted(candidates))
    return ErasurePreview(person, faces, tuple(unnamed), unnamed_within)


def erase_person(
    catalogue: Catalogue, preview: ErasurePreview, actor: str, *, optout: bool = False
) -> Erasure:
    """Erase a previewed person everywhere, with the unnamed faces it lists; other people's
    faces stay. With `optout`, their faces' embeddings are opted out first (one token), so
    re-indexing the operator's files never brings them back."""
    blocked = None
    if optout and preview.faces:
        faces = np.array(preview.faces, dtype=np.int64)
        ids, vectors = catalogue.store.embeddings_of(faces, catalogue.model)
        if len(ids):
            # Before the erasure: a crash between the two leaves faces blocked, never back.
            reach = catalogue.thresholds.optout
            added = catalogue.store.add_optout(catalogue.model, vectors, actor, within=reach)
            blocked = added.token
    erasure = catalogue.store.erase_person(preview.person.id, actor, preview.unnamed)
    _clean_up(catalogue, erasure)
    return replace(erasure, optout=blocked)


def preview_optout(catalogue: Catalogue, photo: str, person: str | None = None) -> OptOutPreview:
    """What opting out the one face in `photo` would erase, grouped by person. The subject
    (whose faces go) is `person` if given, else the person of the nearest stored face when it
    is a match; faces of other people are listed but kept unless the operator says so."""
    data = read_photo_bytes(photo)
    analysis = pipeline_for(catalogue.pipeline).analyse(data, photo)
    if len(analysis.faces) != 1:
        found = "no face" if not analysis.faces else f"{len(analysis.faces)} faces"
        raise UsageError(f"{photo}: an opt-out photo must show exactly one face; it shows {found}")
    embedding = analysis.faces[0].embedding
    thresholds = catalogue.thresholds
    within = catalogue.faces_within(embedding, thresholds.optout)
    groups = _by_person(catalogue, within[0].ids, within[0].distances)
    if person is not None:
        subject: PersonRef | None = catalogue.store.resolve_person(person)
    else:
        named = [g for g in groups if g.person is not None]
        nearest = min(named, key=lambda g: g.nearest, default=None)
        matched = nearest is not None and distances.is_match(nearest.nearest, thresholds.match)
        subject = nearest.person if matched and nearest is not None else None
    ordered = sorted(groups, key=lambda g: (g.person != subject, g.person is not None, g.nearest))
    return OptOutPreview(
        photo, analysis.model, embedding, subject, tuple(ordered), thresholds.optout
    )


def add_optout(
    catalogue: Catalogue, preview: OptOutPreview, actor: str, *, erase_others: bool = False
) -> OptOutResult:
    """Opt out a previewed face: blocklist it and erase the faces listed for erasure (other
    people's too only with `erase_others`); from now on searches and ingestion skip faces
    within the opt-out threshold of it."""
    optout = catalogue.store.add_optout(
        preview.model, preview.embedding, actor, within=preview.within
    )
    erased = catalogue.store.erase_faces(preview.to_erase(erase_others), actor, "optout_erase")
    _clean_up(catalogue, erased)
    return OptOutResult(optout, erased, () if erase_others else preview.others)


def _by_person(catalogue: Catalogue, ids: np.ndarray, found: np.ndarray) -> list[FaceGroup]:
    faces = catalogue.store.faces([int(i) for i in ids])
    nearest = {int(i): float(d) for i, d in zip(ids, found, strict=True)}
    grouped: dict[str | None, list[int]] = {}
    people: dict[str | None, PersonRef | None] = {None: None}
    for face in faces.values():
        key = face.person.id if face.person else None
        grouped.setdefault(key, []).append(face.id)
        people[key] = face.person
    return [
        FaceGroup(people[key], tuple(sorted(members)), min(nearest[i] for i in members))
        for key, members in grouped.items()
    ]


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
    found = media.orphans(catalogue.data_dir / media.MEDIA_DIR, catalogue.store)
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
