"""The JSON bodies of the HTTP API, as pydantic models (they make the OpenAPI schema)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

# The catalogue's own dataclasses serve as bodies where the API shows them as they are
# (those without defaults, so every field stays required in the schema).
from ..entities import AuditEntry, PersonSummary

__all__ = [
    "AuditPage",
    "BoxModel",
    "ClusterFace",
    "ClusterModel",
    "ClusterPage",
    "ClusterRun",
    "CreatedKey",
    "EditModel",
    "EditPage",
    "ErasureResult",
    "ErrorBody",
    "FaceIds",
    "FaceMove",
    "FacePage",
    "FleetAction",
    "FleetReplies",
    "FleetResize",
    "FleetStatusModel",
    "FoundPage",
    "Health",
    "JobModel",
    "JobPage",
    "KeyModel",
    "MergeSource",
    "NewKey",
    "PeoplePage",
    "PersonDetail",
    "PersonTarget",
    "QueryResponse",
    "SearchResponse",
    "UploadResult",
]


class ErrorDetail(BaseModel):
    """What went wrong."""

    code: str = Field(description="Stable machine-readable kind: not_found, bad_image, ...")
    message: str = Field(description="What went wrong, where and why, for a person to read.")
    line: int | None = Field(default=None, description="query_error: where in the query.")
    column: int | None = Field(default=None, description="query_error: where in the query.")


class ErrorBody(BaseModel):
    """Every error answer: a code and a message."""

    error: ErrorDetail


class Health(BaseModel):
    """The server answers."""

    status: Literal["ok"]


class BoxModel(BaseModel):
    """A face rectangle in pixels of the upright photo (right and bottom exclusive)."""

    left: int
    top: int
    right: int
    bottom: int


class PersonModel(BaseModel):
    """A person: stable opaque id and display name."""

    id: str
    name: str


class HitModel(BaseModel):
    """A stored face supporting a match, and its photo."""

    sha256: str
    paths: list[str]
    face_id: int
    box: BoxModel
    distance: float


class MatchModel(BaseModel):
    """A candidate person for a query face (or the group of unnamed faces)."""

    person: PersonModel | None = Field(description="None: faces nobody has named yet.")
    distance: float
    # Absent, never null, for a model nobody calibrated (the schema's type stays a number).
    fmr: float | SkipJsonSchema[None] = Field(
        default=None,
        description="Estimated false-match rate at this distance; absent when the model has "
        "no calibration table.",
    )
    fmr_extrapolated: bool | SkipJsonSchema[None] = Field(
        default=None, description="True where the rate is below what the calibration measured."
    )
    verdict: Literal["match", "no_match"]
    photos: list[HitModel]


class FaceModel(BaseModel):
    """A face of the query photo and its candidates, best first."""

    box: BoxModel
    score: float
    verdict: Literal["match", "no_match"]
    matches: list[MatchModel]


class QueryModel(BaseModel):
    """The query photo (its path is null for uploads)."""

    path: str | None
    sha256: str
    width: int
    height: int


class SearchResponse(BaseModel):
    """The `iddetective/search/v1` document (docs/contracts.md)."""

    schema_: Literal["iddetective/search/v1"] = Field(alias="schema")
    query: QueryModel
    model: str
    threshold: float
    faces: list[FaceModel]


class PeoplePage(BaseModel):
    """A page of people."""

    items: list[PersonSummary]
    offset: int
    limit: int
    total: int


class ProvenanceModel(BaseModel):
    """Where a photo or person came from, who added it, on what basis."""

    source: str
    added_by: str
    basis: str


class FaceRefModel(BaseModel):
    """A stored face: its id, photo and box."""

    face_id: int
    sha256: str
    box: BoxModel
    photo_width: int
    photo_height: int
    provenance: ProvenanceModel


class FacePage(BaseModel):
    """A page of a person's faces."""

    items: list[FaceRefModel]
    offset: int
    limit: int
    total: int


class AccountModel(BaseModel):
    """A linked account."""

    platform: str
    handle: str
    url: str | None


class RelationModel(BaseModel):
    """A relation to another person (read both ways)."""

    kind: str
    person: PersonModel


class PersonDetail(BaseModel):
    """A person, what the catalogue knows of them, and their faces."""

    id: str
    name: str
    external_id: str | None
    aliases: list[str]
    accounts: list[AccountModel]
    lists: list[str]
    relations: list[RelationModel]
    provenance: ProvenanceModel
    photos: int
    faces: FacePage


class UploadResult(BaseModel):
    """What storing an uploaded photo did."""

    sha256: str
    status: Literal["indexed", "no_face", "duplicate", "unchanged"]
    faces: int
    review: str | None


class NewKey(BaseModel):
    """The key to create."""

    role: Literal["admin", "search", "ingest"]
    label: str = Field(default="", max_length=200)


class KeyModel(BaseModel):
    """An API key as listed (never the key itself)."""

    id: str
    role: str
    label: str
    created_at: str
    revoked_at: str | None


class CreatedKey(KeyModel):
    """A key just created, with the key itself."""

    key: str = Field(description="The key itself: shown this once, stored only as a hash.")


class AuditPage(BaseModel):
    """A page of the audit log, newest first."""

    items: list[AuditEntry]
    next_before: int | None = Field(description="Pass as `before` for the next, older page.")


class ErasureResult(BaseModel):
    """What erasing a person removed; `token` names the erasure in the audit log."""

    token: str
    faces: int = Field(description="Every face removed, unnamed look-alikes included.")
    unnamed: int = Field(description="Of those, faces that had no person.")
    photos: int
    optout: str | None = Field(description="The opt-out made of their faces, if asked for.")


class JobModel(BaseModel):
    """A background job (web/jobs.py): how it stands, and once done what it did or why not."""

    id: str
    kind: Literal["clustering", "erasure"]
    actor: str = Field(description="Who started it, as the audit log names callers.")
    state: Literal["queued", "running", "done", "failed"]
    created_at: str
    started_at: str | None = Field(description="When it began to run.")
    finished_at: str | None = Field(description="When it ended (done or failed).")
    result: dict[str, Any] | None = Field(
        description="Once done: the body the endpoint answers when not run in the background."
    )
    error: str | None = Field(description="Once failed: why.")
    status_url: str = Field(description="Where to ask how it stands.")


class JobPage(BaseModel):
    """The background jobs a caller may see, newest first (the server keeps the last 100)."""

    items: list[JobModel]


class FoundModel(BaseModel):
    """A person found by text, with the field and value that matched.

    rank: 0 the whole value, 1 its start, 2 a word's start, 3 inside.
    """

    person: PersonModel
    field: Literal["name", "alias", "handle"]
    value: str
    rank: int


class FoundPage(BaseModel):
    """People found by text, best first."""

    items: list[FoundModel]


class QueryResponse(BaseModel):
    """The people a query selects, and the face search when it has a face: term."""

    people: list[PersonModel]
    search: SearchResponse | None


# -- discovering people: clusters and edits ---------------------------------------------------

#: Request bodies take JSON as it is: no "1" for 1, no "true" for true (what the schema says).
STRICT = ConfigDict(strict=True)
#: Ids are SQLite integers (signed 64-bit); larger ones name nothing.
FaceId = Annotated[int, Field(ge=1, le=2**63 - 1)]
PersonRefText = Annotated[str, Field(min_length=1, max_length=200)]


class ClusterFace(BaseModel):
    """A face of a cluster: its id, photo and box, and where to get its crop."""

    face_id: int
    sha256: str
    box: BoxModel
    crop_url: str = Field(description="A 160x160 JPEG of the face (curate role).")


class ClusterModel(BaseModel):
    """A cluster of unnamed faces that are likely one person."""

    id: int
    size: int = Field(description="Faces in the cluster (a listing shows a few of them).")
    faces: list[ClusterFace]


class ClusterPage(BaseModel):
    """A page of clusters, largest first."""

    items: list[ClusterModel]
    offset: int
    limit: int
    next_offset: int | None = Field(description="Pass as `offset` for the next page; null: last.")


class ClusterRun(BaseModel):
    """How to cluster: only the faces not considered yet, or every unnamed face again."""

    model_config = STRICT

    full: bool = Field(default=False, description="Cluster every unnamed face again.")
    background: bool = Field(
        default=False, description="Run as a background job: 202 with the job (GET /api/jobs/{id})."
    )


class PersonTarget(BaseModel):
    """Who faces go to: an existing person (id or unambiguous name) or a new person."""

    model_config = STRICT

    person: PersonRefText | None = Field(default=None, description="An existing person.")
    new_name: PersonRefText | None = Field(default=None, description="A new person's name.")


class FaceIds(BaseModel):
    """Faces by id."""

    model_config = STRICT

    face_ids: list[FaceId] = Field(min_length=1, max_length=1000)


class FaceMove(PersonTarget, FaceIds):
    """Faces to move, and who they go to (`person` or `new_name`)."""


class MergeSource(BaseModel):
    """The person to fold into the one the URL names."""

    model_config = STRICT

    source: PersonRefText = Field(description="Id or unambiguous name; gone after the merge.")


class EditModel(BaseModel):
    """A recorded change of who is who; `kind` is name-cluster, move-faces, reject-faces,
    merge-people or undo."""

    id: int
    at: str
    actor: str
    kind: str
    summary: str
    faces: int = Field(description="Faces it changed.")
    undone_at: str | None
    undone_by: str | None


class EditPage(BaseModel):
    """Recorded edits, newest first."""

    items: list[EditModel]


# -- the ingestion workers (fleet_views.py) -----------------------------------------------------

WorkerName = Annotated[str, Field(min_length=1, max_length=200)]


class FleetWorkerModel(BaseModel):
    """One ingestion worker, as its last answer and the server's samples of it show it."""

    name: str = Field(description="Celery node name, e.g. iddetective@host.")
    host: str
    pid: int | None
    pool: str = Field(description="prefork or solo; empty when the worker is silent.")
    concurrency: int = Field(description="Pool processes (0 when silent).")
    alive: bool = Field(description="Answered now; false: it announced itself and went silent.")
    paused: bool = Field(description="Alive but not taking batches from the queue.")
    busy: int = Field(description="Batches running now.")
    photos_done: int = Field(
        description="Photos its batches finished (stored, known, unchanged or failed), "
        "counted in Redis across its restarts."
    )
    photos_failed: int = Field(description="Of those, the photos recorded as failed.")
    photos_per_second: float | None = Field(
        description="Over the last minute of this server's samples; null until two samples "
        "and for a silent worker."
    )
    last_batch_at: float | None = Field(
        description="Unix time it last stored a batch (from Redis); null: never."
    )
    last_seen: float | None = Field(
        description="Unix time this server last had an answer from it (its last heartbeat "
        "seen here); null: never."
    )


class FleetCatalogueModel(BaseModel):
    """The catalogue the workers fill."""

    people: int
    photos: int
    faces: int
    failed: int = Field(description="Photos that could not be used (catalogue-wide).")
    data_bytes: int = Field(description="Bytes the data directory takes.")


class FleetStatusModel(BaseModel):
    """Every worker, the batches waiting, totals and the catalogue's size."""

    workers: list[FleetWorkerModel]
    queue_depth: int = Field(description="Batches waiting in the queue (not those running).")
    alive: int
    concurrency: int = Field(description="Pool processes of the live workers.")
    busy: int
    photos_done: int = Field(description="Photos done by every worker listed.")
    photos_failed: int = Field(description="Of those, the photos recorded as failed.")
    photos_per_second: float | None = Field(
        description="Of the live workers; null until one has a rate."
    )
    catalogue: FleetCatalogueModel


class FleetAction(BaseModel):
    """Which workers an action is for."""

    model_config = ConfigDict(extra="forbid")

    workers: list[WorkerName] = Field(
        default_factory=list, max_length=1000, description="Worker names; empty: every worker."
    )


class FleetResize(FleetAction):
    """The pool processes each chosen worker should have."""

    processes: int = Field(ge=1, le=1024, description="Pool processes per worker.")


class FleetReply(BaseModel):
    """What one worker answered."""

    name: str
    ok: bool
    message: str


class FleetReplies(BaseModel):
    """The answers of the workers an action reached (empty: no worker answered)."""

    replies: list[FleetReply]


class FleetHost(BaseModel):
    """A machine of the server's hosts file (docs/scaling.md, "Remote hosts")."""

    name: str
    address: str
    port: int
    user: str | None


class FleetHosts(BaseModel):
    """The hosts file the server reads, whether it exists, and its machines."""

    hosts_file: str
    exists: bool
    hosts: list[FleetHost]


class FleetHostUp(BaseModel):
    """How many worker processes to start on a host."""

    model_config = ConfigDict(extra="forbid")

    workers: int = Field(ge=1, le=256, description="Worker processes to start there.")


class FleetHostWorkers(BaseModel):
    """The worker processes an action on a host started or stopped (their pids there)."""

    host: str
    pids: list[int]
