"""The JSON API for discovering people: clusters of unnamed faces, and the edits of who is who.

Naming a cluster, moving faces (a split), rejecting faces, merging two people and undoing
any of those are each one catalogue call, recorded by the catalogue as an edit under the
caller's `key:<id>`. Those need the `curate` action (access.ACTIONS); seeing clusters and
their faces needs `search`, as every view of faces does, and is audited (face_views.py).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import FileResponse, JSONResponse

from .. import media
from ..entities import Cluster
from ..errors import NotFound
from ..people.discovery import ClusterReport
from . import face_views, models
from .api import MAX_ID, MAX_OFFSET, MEDIA_CACHE
from .auth import Caller, requires
from .errors import ERROR_RESPONSES
from .routing import CheckedRoute

__all__ = ["audit_clusters", "crop_url", "router"]

router = APIRouter(prefix="/api", responses=ERROR_RESPONSES, route_class=CheckedRoute)

Curator = Annotated[Caller, Depends(requires("curate"))]
Viewer = Annotated[Caller, Depends(requires("search"))]
ClusterId = Annotated[int, Path(ge=1, le=MAX_ID)]


@router.get("/clusters", response_model=models.ClusterPage)
def list_clusters(
    request: Request,
    caller: Viewer,
    min_size: Annotated[int, Query(ge=1, le=1_000_000)] = 2,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    """Clusters of at least `min_size` unnamed faces, largest first, with a few faces each
    (audited)."""
    found = request.app.state.catalogue.clusters(min_size=min_size, limit=limit, offset=offset)
    audit_clusters(request, caller, found, offset)
    return {
        "items": [_cluster_json(cluster) for cluster in found],
        "offset": offset,
        "limit": limit,
        "next_offset": offset + limit if len(found) == limit else None,
    }


@router.post(
    "/clusters/run",
    response_model=ClusterReport,
    responses={202: {"model": models.JobModel, "description": "Started in the background."}},
)
def run_clustering(
    request: Request,
    caller: Curator,
    run: models.ClusterRun | None = None,
) -> Any:
    """Cluster the unnamed faces not considered yet (indexing does this after every batch),
    or with `full` every unnamed face again, keeping cluster ids where faces stay together;
    with `background`, as a job (202; GET /api/jobs/{id} says how it stands)."""
    full = run is not None and run.full
    catalogue = request.app.state.catalogue

    def cluster() -> dict[str, Any]:
        return asdict(catalogue.cluster(full=full))

    if run is not None and run.background:
        job = request.app.state.jobs.start("clustering", "curate", caller.actor, cluster)
        return JSONResponse(job.as_json(), status_code=202)
    return cluster()


@router.get("/clusters/{cluster_id}", response_model=models.ClusterModel)
def cluster_detail(request: Request, caller: Viewer, cluster_id: ClusterId) -> dict[str, Any]:
    """One cluster with all its faces (audited)."""
    cluster = request.app.state.catalogue.cluster_faces(cluster_id)
    face_views.audit_view(request, caller, f"cluster {cluster.id}", cluster.faces)
    return _cluster_json(cluster)


@router.get(
    "/clusters/{cluster_id}/faces/{face_id}/crop",
    response_class=FileResponse,
    responses={200: {"content": {"image/jpeg": {}}, "description": "JPEG without EXIF."}},
)
def cluster_face_crop(
    request: Request,
    caller: Viewer,
    cluster_id: ClusterId,
    face_id: Annotated[int, Path(ge=1, le=MAX_ID)],
) -> FileResponse:
    """A square crop around a face of the cluster (audited unless a view of the caller's
    showed it)."""
    state = request.app.state
    cluster = state.catalogue.cluster_faces(cluster_id)
    face = next((f for f in cluster.faces if f.id == face_id), None)
    if face is None:
        raise NotFound(f"cluster {cluster_id} has no face with the id {face_id}")
    path = media.face_crop(state.catalogue.data_dir, face.id, face.photo, face.box)
    what = f"face {face.id} of cluster {cluster_id}"
    face_views.audit_fetch(request, caller, face_views.face_item(face.id), what)
    return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": MEDIA_CACHE})


@router.post("/clusters/{cluster_id}/name", response_model=models.EditModel)
def name_cluster(
    request: Request, caller: Curator, cluster_id: ClusterId, target: models.PersonTarget
) -> dict[str, Any]:
    """Give the cluster's faces to an existing `person` or a new person `new_name` (one of
    the two). Faces once rejected from that person stay in the cluster."""
    edit = request.app.state.catalogue.name_cluster(
        cluster_id, person=target.person, new_name=target.new_name, actor=caller.actor
    )
    return asdict(edit)


@router.post("/faces/move", response_model=models.EditModel)
def move_faces(request: Request, caller: Curator, move: models.FaceMove) -> dict[str, Any]:
    """Move faces to an existing `person` or a new person `new_name`: split a person who is
    two, or give unnamed faces to someone."""
    edit = request.app.state.catalogue.move_faces(
        move.face_ids, person=move.person, new_name=move.new_name, actor=caller.actor
    )
    return asdict(edit)


@router.post("/faces/reject", response_model=models.EditModel)
def reject_faces(request: Request, caller: Curator, faces: models.FaceIds) -> dict[str, Any]:
    """Take faces from their person; they never rejoin that person on their own."""
    edit = request.app.state.catalogue.reject_faces(faces.face_ids, actor=caller.actor)
    return asdict(edit)


@router.post("/people/{person_id}/merge", response_model=models.EditModel)
def merge_people(
    request: Request, caller: Curator, person_id: str, merge: models.MergeSource
) -> dict[str, Any]:
    """Fold `source` into this person: faces, name (as an alias), aliases, accounts, lists
    and relations. The source person is gone until the edit is undone."""
    edit = request.app.state.catalogue.merge_people(person_id, merge.source, actor=caller.actor)
    return asdict(edit)


@router.get("/edits", response_model=models.EditPage)
def list_edits(
    request: Request, caller: Curator, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> dict[str, Any]:
    """The recorded edits of who is who, newest first."""
    found = request.app.state.catalogue.edits(limit=limit)
    return {"items": [asdict(edit) for edit in found]}


@router.post("/edits/{edit_id}/undo", response_model=models.EditModel)
def undo_edit(
    request: Request, caller: Curator, edit_id: Annotated[int, Path(ge=1, le=MAX_ID)]
) -> dict[str, Any]:
    """Undo an edit (recorded as an edit of its own). Refused for an undo, an edit undone
    already, and while a later edit still changes the same faces (undo that first)."""
    edit = request.app.state.catalogue.undo(edit_id, actor=caller.actor)
    return asdict(edit)


def audit_clusters(request: Request, caller: Caller, found: list[Cluster], offset: int) -> None:
    """Audit a page of clusters (API or page) as one view of the faces it shows."""
    faces = [face for cluster in found for face in cluster.faces]
    face_views.audit_view(request, caller, f"clusters from {offset}", faces)


def crop_url(cluster_id: int, face_id: int) -> str:
    """Where a curator gets the crop of a face in a cluster."""
    return f"/api/clusters/{cluster_id}/faces/{face_id}/crop"


def _cluster_json(cluster: Cluster) -> dict[str, Any]:
    return {
        "id": cluster.id,
        "size": cluster.size,
        "faces": [
            {
                "face_id": face.id,
                "sha256": face.photo.sha256,
                "box": face.box.as_dict(),
                "crop_url": crop_url(cluster.id, face.id),
            }
            for face in cluster.faces
        ],
    }
