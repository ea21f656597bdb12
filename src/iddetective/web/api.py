"""The JSON API under /api: one small function per endpoint, each one catalogue call.

Every endpoint names the action it needs (access.ACTIONS); the catalogue is shared by the
server's threads and used under one lock, held only for the catalogue call itself (photo
analysis, the slow part, runs before, in the analysis pool).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Path, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from .. import media
from ..entities import Stats
from ..errors import UsageError
from ..matching.search import to_json
from ..query.language import parse_query
from . import face_views, models
from .auth import Caller, requires
from .errors import ERROR_RESPONSES, UploadTooLarge
from .routing import CheckedRoute

__all__ = ["router"]

router = APIRouter(prefix="/api", responses=ERROR_RESPONSES, route_class=CheckedRoute)

Searcher = Annotated[Caller, Depends(requires("search"))]
Ingester = Annotated[Caller, Depends(requires("ingest"))]
Admin = Annotated[Caller, Depends(requires("admin"))]
StatsReader = Annotated[Caller, Depends(requires("read_stats"))]

#: SQLite's integers are signed 64-bit: a larger id names nothing (and SQLite would refuse it).
MAX_ID = 2**63 - 1
#: Far past any catalogue, and small enough that offset + limit stays a SQLite integer.
MAX_OFFSET = 1_000_000_000

#: Thumbnails and crops are named by content, so browsers may keep them (privately) a day.
MEDIA_CACHE = "private, max-age=86400, immutable"


@router.post(
    "/search",
    response_model=models.SearchResponse,
    response_model_by_alias=True,
    response_model_exclude_unset=True,  # no fmr for a model nobody calibrated
)
async def search_photo(
    request: Request,
    caller: Searcher,
    photo: Annotated[UploadFile, File(description="The query photo (JPEG, PNG, WebP, HEIC…).")],
    top: Annotated[int, Query(ge=1, le=50)] = 5,
    threshold: Annotated[float | None, Query(gt=0, le=2)] = None,
    max_fmr: Annotated[
        float | None, Query(gt=0, lt=1, description="Threshold as a false-match rate instead.")
    ] = None,
    person: Annotated[list[str] | None, Query(description="Search only these people.")] = None,
) -> dict[str, Any]:
    """Find every face of an uploaded photo and who each one is (audited)."""
    state = request.app.state
    data = await _read_upload(request, photo)
    analysis = await state.analysis.analyse(data, _upload_name(photo))

    def match() -> Any:
        return state.catalogue.search_analysis(
            analysis,
            sha256=hashlib.sha256(data).hexdigest(),
            path=None,
            top=top,
            threshold=state.catalogue.match_threshold(threshold, max_fmr),
            people=person,
            actor=caller.actor,
        )

    result = await run_in_threadpool(match)
    state.metrics.searches.labels(kind="photo").inc()
    face_views.remember_matches(request, caller, result)
    return to_json(result)


@router.get("/people", response_model=models.PeoplePage)
def list_people(
    request: Request,
    caller: Searcher,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    """Everyone in the catalogue, by name, a page at a time."""
    everyone = request.app.state.catalogue.people()
    page = everyone[offset : offset + limit]
    return {
        "items": [asdict(p) for p in page],
        "offset": offset,
        "limit": limit,
        "total": len(everyone),
    }


@router.get("/find", response_model=models.FoundPage)
def find_people(
    request: Request,
    caller: Searcher,
    q: Annotated[str, Query(min_length=1, max_length=200, description="Text to find.")],
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    """People whose name, alias or handle contains `q` in any case, accent or script
    (`petr` finds «Пётр»), best first, with the field that matched. Audited."""
    state = request.app.state
    found = state.catalogue.find(q, limit=limit, actor=caller.actor)
    state.metrics.searches.labels(kind="text").inc()
    return {"items": [asdict(f) for f in found]}


@router.post("/query", response_model=models.QueryResponse, response_model_exclude_unset=True)
async def run_query(
    request: Request,
    caller: Searcher,
    q: Annotated[str, Form(min_length=1, max_length=2000, description="docs/query.md")],
    photo: Annotated[
        UploadFile | None, File(description="The photo a face: term searches by.")
    ] = None,
    top: Annotated[int, Query(ge=1, le=50)] = 5,
    threshold: Annotated[float | None, Query(gt=0, le=2)] = None,
    max_fmr: Annotated[
        float | None, Query(gt=0, lt=1, description="Threshold as a false-match rate instead.")
    ] = None,
) -> dict[str, Any]:
    """Run a query: the people it selects, and with `face:` a search by the uploaded photo
    among their faces. Errors point at the line and column of the problem. Audited."""
    state = request.app.state
    parsed = parse_query(q)
    if parsed.face is not None and photo is None:
        raise UsageError("face: over HTTP searches by the uploaded photo: send it as `photo`")
    if parsed.face is None and photo is not None:
        raise UsageError("a photo was sent, but the query has no face: term to use it")
    analysed = None
    if photo is not None:
        data = await _read_upload(request, photo)
        analysis = await state.analysis.analyse(data, _upload_name(photo))
        analysed = (analysis, hashlib.sha256(data).hexdigest())

    def run() -> Any:
        limit = state.catalogue.match_threshold(threshold, max_fmr)
        return state.catalogue.query(
            q, top=top, threshold=limit, photo=analysed, actor=caller.actor
        )

    answer = await run_in_threadpool(run)
    state.metrics.searches.labels(kind="query").inc()
    if answer.search is not None:
        face_views.remember_matches(request, caller, answer.search)
    search = to_json(answer.search) if answer.search else None
    if search is not None:
        search["query"]["path"] = None  # the uploaded photo has no path on this server
    return {"people": [{"id": p.id, "name": p.name} for p in answer.people], "search": search}


@router.get("/people/{person_id}", response_model=models.PersonDetail)
def person_detail(
    request: Request,
    caller: Searcher,
    person_id: str,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    """A person and their faces (with the photos they are in), a page at a time."""
    person, page = request.app.state.catalogue.person_page(person_id, limit, offset)
    profile = request.app.state.catalogue.profile(person.id)
    origins = request.app.state.catalogue.photo_provenance([f.photo.id for f in page])
    face_views.audit_view(request, caller, f"person {person.id}", page, thumbnails=True)
    return {
        "id": person.id,
        "name": person.name,
        "external_id": profile.external_id,
        "aliases": list(profile.aliases),
        "accounts": [asdict(a) for a in profile.accounts],
        "lists": list(profile.lists),
        "relations": [
            {"kind": kind, "person": {"id": other.id, "name": other.name}}
            for kind, other in profile.relations
        ],
        "provenance": asdict(profile.provenance),
        "photos": person.photos,
        "faces": {
            "items": [
                {
                    "face_id": face.id,
                    "sha256": face.photo.sha256,
                    "box": face.box.as_dict(),
                    "photo_width": face.photo.width,
                    "photo_height": face.photo.height,
                    "provenance": asdict(origins[face.photo.id]),
                }
                for face in page
            ],
            "offset": offset,
            "limit": limit,
            "total": person.faces,
        },
    }


@router.delete(
    "/people/{person_id}",
    response_model=models.ErasureResult,
    responses={202: {"model": models.JobModel, "description": "Started in the background."}},
)
def erase_person(
    request: Request,
    caller: Admin,
    person_id: str,
    optout: Annotated[bool, Query(description="Also opt their faces out.")] = False,
    background: Annotated[
        bool, Query(description="Run as a background job: 202 with the job.")
    ] = False,
    unnamed_within: Annotated[
        float | None,
        Query(
            ge=0,
            le=2,
            description="Unnamed faces this close to one of theirs go too (0: none; default: "
            "the model's erase_unnamed threshold; at most its opt-out threshold).",
        ),
    ] = None,
) -> Any:
    """Erase a person everywhere (rows, faces, index entries, crops, and the unnamed faces
    within `unnamed_within` of theirs); audited by token. `optout` also opts their faces
    out, so re-indexing the operator's files never brings them back. With `background`, as
    a job (202; GET /api/jobs/{id} says how it stands): the person is checked first."""
    catalogue = request.app.state.catalogue

    def erase() -> dict[str, Any]:
        erasure = catalogue.erase_person(
            person_id, unnamed_within=unnamed_within, optout=optout, actor=caller.actor
        )
        return {
            "token": erasure.token,
            "faces": len(erasure.faces),
            "unnamed": erasure.unnamed,
            "photos": len(erasure.photos),
            "optout": erasure.optout,
        }

    if background:
        catalogue.store.resolve_person(person_id)  # an unknown one is a 404 now, not later
        job = request.app.state.jobs.start("erasure", "admin", caller.actor, erase)
        return JSONResponse(job.as_json(), status_code=202)
    return erase()


@router.get(
    "/photos/{sha256}/thumbnail",
    response_class=FileResponse,
    responses={200: {"content": {"image/jpeg": {}}, "description": "JPEG without EXIF."}},
)
def photo_thumbnail(
    request: Request,
    caller: Searcher,
    sha256: Annotated[str, Path(pattern="^[0-9a-f]{64}$", description="The photo's SHA-256.")],
    size: Annotated[int, Query(description="Longest side: 256 or 1024.")] = 256,
) -> FileResponse:
    """A stored photo, shrunk, upright, with no metadata (audited unless a view of the
    caller's showed it)."""
    state = request.app.state
    photo = state.catalogue.photo(sha256)
    path = media.thumbnail(state.catalogue.data_dir, photo, size)
    face_views.audit_fetch(request, caller, face_views.photo_item(photo.sha256), f"photo {sha256}")
    return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": MEDIA_CACHE})


@router.get(
    "/faces/{face_id}/crop",
    response_class=FileResponse,
    responses={200: {"content": {"image/jpeg": {}}, "description": "JPEG without EXIF."}},
)
def face_crop(
    request: Request, caller: Searcher, face_id: Annotated[int, Path(ge=1, le=MAX_ID)]
) -> FileResponse:
    """A square crop around one stored face (audited unless a view of the caller's showed
    it)."""
    state = request.app.state
    face = state.catalogue.face(face_id)
    path = media.face_crop(state.catalogue.data_dir, face.id, face.photo, face.box)
    face_views.audit_fetch(request, caller, face_views.face_item(face.id), f"face {face.id}")
    return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": MEDIA_CACHE})


@router.post("/photos", response_model=models.UploadResult, status_code=201)
async def upload_photo(
    request: Request,
    caller: Ingester,
    photo: Annotated[UploadFile, File(description="A photo to add to the catalogue.")],
    person: Annotated[
        str | None, Form(max_length=200, description="Who is in it (the largest face).")
    ] = None,
    basis: Annotated[
        str, Form(max_length=500, description="On what basis it is processed (provenance).")
    ] = "",
) -> dict[str, Any]:
    """Index an uploaded photo with the same pipeline and checks as `iddetective index`."""
    state = request.app.state
    data = await _read_upload(request, photo)
    name = _upload_name(photo)
    analysis = await state.analysis.analyse(data, name)

    def store() -> Any:
        return state.catalogue.add_upload(
            data, name, analysis, person or None, actor=caller.actor, basis=basis
        )

    result = await run_in_threadpool(store)
    state.metrics.indexed.inc()
    return {
        "sha256": hashlib.sha256(data).hexdigest(),
        "status": result.status,
        "faces": result.faces,
        "review": result.review,
    }


@router.get("/stats", response_model=Stats)
def stats(request: Request, caller: StatsReader) -> dict[str, Any]:
    """Catalogue size: photos, faces, people, failures, bytes on disk."""
    return asdict(request.app.state.catalogue.stats())


@router.get("/keys", response_model=list[models.KeyModel])
def list_keys(request: Request, caller: Admin) -> list[dict[str, Any]]:
    """Every API key (never the keys themselves), revoked ones included."""
    return [_key_json(key) for key in request.app.state.catalogue.api_keys()]


@router.post("/keys", response_model=models.CreatedKey, status_code=201)
def create_key(request: Request, caller: Admin, new: models.NewKey) -> dict[str, Any]:
    """Create a key with a role; the answer holds the key itself, shown this once."""
    secret, key = request.app.state.catalogue.create_key(new.role, new.label)
    return {**_key_json(key), "key": secret}


@router.delete("/keys/{key_id}", response_model=models.KeyModel)
def revoke_key(request: Request, caller: Admin, key_id: str) -> dict[str, Any]:
    """Revoke a key; requests with it fail from now on."""
    return _key_json(request.app.state.catalogue.revoke_key(key_id))


@router.get("/audit", response_model=models.AuditPage)
def audit(
    request: Request,
    caller: Admin,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> dict[str, Any]:
    """The audit log of searches, newest first, a page at a time."""
    entries = request.app.state.catalogue.audit(limit=limit, before=before)
    next_before = entries[-1].id if len(entries) == limit else None
    return {"items": [asdict(e) for e in entries], "next_before": next_before}


def _key_json(key: Any) -> dict[str, Any]:
    return {
        "id": key.id,
        "role": key.role,
        "label": key.label,
        "created_at": key.created_at,
        "revoked_at": key.revoked_at,
    }


async def _read_upload(request: Request, upload: UploadFile) -> bytes:
    """The uploaded bytes, refusing empty files and files over the server's limit."""
    limit = request.app.state.settings.max_upload_bytes
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise UploadTooLarge(f"{_upload_name(upload)}: larger than the {limit:,}-byte upload limit")
    if not data:
        raise UsageError(f"{_upload_name(upload)}: the uploaded file is empty")
    return data


def _upload_name(upload: UploadFile) -> str:
    return (upload.filename or "upload")[:200]
