"""Plain data passed between the parts: frozen dataclasses and numpy arrays, never rows."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "Account",
    "ApiKey",
    "AuditEntry",
    "Box",
    "Cluster",
    "Edit",
    "Erasure",
    "FaceAnalysis",
    "FailedPhoto",
    "Failure",
    "FileStat",
    "FoundPerson",
    "IndexedPhoto",
    "KnownPhoto",
    "OptOut",
    "Outcome",
    "PersonProfile",
    "PersonRecord",
    "PersonRef",
    "PersonSummary",
    "PhotoAnalysis",
    "PhotoRef",
    "Provenance",
    "Review",
    "SaveResult",
    "Stats",
    "StoredFace",
    "StoredFile",
    "StoredModel",
    "UnnamedFaces",
]


@dataclass(frozen=True)
class Box:
    """A face rectangle in pixels of the upright photo; right and bottom are exclusive."""

    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def area(self) -> int:
        return max(self.width, 0) * max(self.height, 0)

    @property
    def centre(self) -> tuple[float, float]:
        return ((self.left + self.right) / 2, (self.top + self.bottom) / 2)

    def scaled(self, factor: float) -> Box:
        """This box in an image `factor` times as large."""
        return Box(
            round(self.left * factor),
            round(self.top * factor),
            round(self.right * factor),
            round(self.bottom * factor),
        )

    def as_dict(self) -> dict[str, int]:
        return {"left": self.left, "top": self.top, "right": self.right, "bottom": self.bottom}


@dataclass(frozen=True)
class FaceAnalysis:
    """One face found in a photo: where, how sure the detector is, and its embedding."""

    box: Box
    score: float
    landmarks: tuple[tuple[int, int], ...]
    embedding: np.ndarray = field(repr=False, compare=False)
    #: Variance of the Laplacian of the face crop (faces/quality.py); None: not measured.
    sharpness: float | None = None


@dataclass(frozen=True)
class PhotoAnalysis:
    """What the face pipeline found in one photo (sizes are of the upright photo)."""

    width: int
    height: int
    faces: tuple[FaceAnalysis, ...]
    model: str


@dataclass(frozen=True)
class PersonRef:
    """A person as results show them: the stable opaque id and the display name."""

    id: str
    name: str


@dataclass(frozen=True)
class PersonSummary:
    """A person with how many faces and photos the catalogue holds of them."""

    id: str
    name: str
    faces: int
    photos: int


@dataclass(frozen=True)
class PhotoRef:
    """A stored photo: its identity (SHA-256) and the paths it was seen at."""

    id: int
    sha256: str
    paths: tuple[str, ...]
    width: int
    height: int


@dataclass(frozen=True)
class StoredFace:
    """A face in the catalogue with its photo and (if known) its person."""

    id: int
    photo: PhotoRef
    box: Box
    person: PersonRef | None


@dataclass(frozen=True)
class StoredModel:
    """An embedding model the catalogue holds vectors of: its name, the length of its
    vectors (recorded with its first vector; every later one must have it) and when that
    first vector was stored."""

    name: str
    dimension: int
    first_seen: str


@dataclass(frozen=True)
class Failure:
    """A file or manifest row that could not be indexed, with the reason."""

    path: str
    reason: str
    failed_at: str


@dataclass(frozen=True)
class Review:
    """A labelled photo whose label had to be given to one of several faces."""

    photo: PhotoRef
    person: PersonRef | None
    faces: int
    reason: str


@dataclass(frozen=True)
class Stats:
    """Catalogue size."""

    photos: int
    photos_without_face: int
    faces: int
    unknown_faces: int
    people: int
    failed: int
    to_review: int
    data_bytes: int


@dataclass(frozen=True)
class FileStat:
    """A file as the file system describes it; unchanged files are skipped without reading."""

    path: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class StoredFile:
    """What the catalogue remembers of a file: its stat then, and its photo (None if it failed)."""

    stat: FileStat
    sha256: str | None


@dataclass(frozen=True)
class Provenance:
    """Where a photo or person came from, who added it, and on what basis (docs/privacy.md).

    `source` is empty for a photo indexed from a path: its paths are recorded already.
    """

    source: str = ""
    added_by: str = ""
    basis: str = ""


@dataclass(frozen=True)
class IndexedPhoto:
    """A photo whose bytes were read and analysed (possibly finding no face)."""

    file: FileStat
    sha256: str
    analysis: PhotoAnalysis
    label: str | None = None
    provenance: Provenance | None = None


@dataclass(frozen=True)
class KnownPhoto:
    """A file whose bytes the catalogue already holds (same SHA-256): record path and label."""

    file: FileStat
    sha256: str
    label: str | None = None


@dataclass(frozen=True)
class FailedPhoto:
    """A file (or manifest row) that could not be indexed, and why."""

    file: FileStat
    reason: str


Outcome = IndexedPhoto | KnownPhoto | FailedPhoto


@dataclass(frozen=True)
class SaveResult:
    """What storing one outcome did, for the run's summary."""

    path: str
    status: str  # indexed | no_face | duplicate | unchanged | failed
    faces: int = 0
    review: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class ApiKey:
    """An API key as stored: never the secret, only its SHA-256."""

    id: str
    role: str  # admin | search | ingest
    label: str
    created_at: str
    revoked_at: str | None = None
    hash: str = field(default="", repr=False)

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class AuditEntry:
    """One search as the audit log keeps it: who, when, what kind, which query, how many results.

    A photo query is kept as its SHA-256 only, never the photo.
    """

    id: int
    at: str
    actor: str
    kind: str  # photo | text | query | erase | optout | optout_erase | ...
    query_sha256: str | None
    query_text: str | None
    results: int
    people: int | None = None  # erasures: how many named people the removed faces were of


@dataclass(frozen=True)
class Erasure:
    """What an erasure removed. `token` names it in the audit log."""

    token: str
    faces: tuple[int, ...]  # every face removed
    photos: tuple[PhotoRef, ...]  # photos removed because they were left with no face
    people: int = 0  # named people the removed faces were of
    unnamed: int = 0  # removed faces that had no person
    optout: str | None = None  # token of the opt-out made with it (`erase --optout`)


@dataclass(frozen=True)
class Account:
    """A linked account: platform (free text: instagram, telegram, email, ...), handle, url."""

    platform: str
    handle: str
    url: str | None = None


@dataclass(frozen=True)
class PersonRecord:
    """A person as an import file describes them; `external_id` makes re-imports idempotent."""

    external_id: str
    name: str
    aliases: tuple[str, ...] = ()
    accounts: tuple[Account, ...] = ()
    lists: tuple[str, ...] = ()
    notes: str = ""
    provenance: Provenance | None = None


@dataclass(frozen=True)
class PersonProfile:
    """Everything the catalogue knows of a person besides their faces."""

    person: PersonRef
    external_id: str | None
    aliases: tuple[str, ...]
    accounts: tuple[Account, ...]
    lists: tuple[str, ...]
    relations: tuple[tuple[str, PersonRef], ...]  # (kind, the other person)
    notes: str
    provenance: Provenance


@dataclass(frozen=True)
class FoundPerson:
    """A person found by text, with the field and value that matched.

    `rank`: 0 the whole value, 1 its start, 2 the start of a word in it, 3 anywhere inside.
    """

    person: PersonRef
    field: str  # name | alias | handle
    value: str
    rank: int


@dataclass(frozen=True)
class OptOut:
    """An opt-out as it may be shown: its token, when it was made and how many faces it
    blocks (never the faces)."""

    token: str
    created_at: str
    faces: int = 1


@dataclass(frozen=True)
class Cluster:
    """A group of unnamed faces that are likely one person, with a few of its faces."""

    id: int
    size: int
    faces: tuple[StoredFace, ...]


@dataclass(frozen=True)
class Edit:
    """A recorded change of who is who (name a cluster, merge, split, reject, undo)."""

    id: int
    at: str
    actor: str
    kind: str
    summary: str
    faces: int  # faces it moved
    undone_at: str | None = None
    undone_by: str | None = None


@dataclass(frozen=True)
class UnnamedFaces:
    """Faces with no person, as arrays for clustering (rows in face id order)."""

    ids: np.ndarray  # int64
    photos: np.ndarray  # int64, each face's photo
    vectors: np.ndarray = field(repr=False)  # float32, one embedding per row
    boxes: tuple[Box, ...] = field(repr=False)
    sharpness: tuple[float | None, ...] = field(repr=False)
