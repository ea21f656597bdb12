"""The web pages: server-rendered HTML with a little JavaScript, no CDN.

Pages log in with an API key once (a session cookie, see auth.py); the search page's script
calls the JSON API with that cookie and the session's CSRF token.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from .. import access
from ..errors import Forbidden, Unauthorized
from ..urls import masked_url
from . import face_views, jobs
from .auth import SESSION_COOKIE, SESSION_SECONDS, Caller, caller_of, check_same_origin
from .curation import audit_clusters, crop_url
from .routing import CheckedRoute

__all__ = ["router"]

router = APIRouter(include_in_schema=False, route_class=CheckedRoute)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.globals["cluster_crop_url"] = crop_url


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/") -> Response:
    """The login form: paste an API key."""
    return _render(request, "login.html", None, next=_local(next), error=None)


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request, key: Annotated[str, Form()] = "", next: Annotated[str, Form()] = "/"
) -> Response:
    """Check the key and open a session (refused when another site sent the form)."""
    state = request.app.state
    try:
        check_same_origin(request)
    except Forbidden as error:
        return _render(request, "login.html", None, 403, next=_local(next), error=str(error))
    try:
        api_key = access.authenticate(state.catalogue.store, key.strip())
    except Unauthorized as error:
        return _render(request, "login.html", None, 401, next=_local(next), error=str(error))
    token, _ = state.sessions.open(api_key)
    response = RedirectResponse(_local(next), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=SESSION_SECONDS,
        httponly=True,
        samesite="strict",
        secure=state.settings.secure_cookies,
    )
    return response


@router.post("/logout")
def logout(request: Request, csrf: Annotated[str, Form()] = "") -> Response:
    """End the session: the form must carry the session's CSRF token, so that no other site
    can log a browser out (or in again as someone else)."""
    check_same_origin(request)
    sessions = request.app.state.sessions
    token = request.cookies.get(SESSION_COOKIE)
    session = sessions.get(token)
    if session is not None and not secrets.compare_digest(csrf, session.csrf):
        raise Forbidden("missing or wrong CSRF token: log out with the pages' Log out button")
    sessions.close(token)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


@router.get("/", response_class=HTMLResponse)
def search_page(request: Request) -> Response:
    """Search by photo: pick or drop a photo, see its faces, click one for its matches."""
    return _page(request, "search", "search.html")


@router.get("/people", response_class=HTMLResponse)
def people_page(request: Request, q: Annotated[str, Query(max_length=200)] = "") -> Response:
    """Find people by text in their names."""
    caller = _page_caller(request, "search")
    if isinstance(caller, Response):
        return caller
    state = request.app.state
    found = state.catalogue.find(q, actor=caller.actor) if q.strip() else None
    if found is not None:
        state.metrics.searches.labels(kind="text").inc()
    return _render(request, "people.html", caller, q=q, found=found)


@router.get("/query", response_class=HTMLResponse)
def query_page(request: Request) -> Response:
    """The query language (docs/query.md), with errors pointed at in place."""
    return _page(request, "search", "query.html")


@router.get("/people/{person_id}", response_class=HTMLResponse)
def person_page(request: Request, person_id: str) -> Response:
    """One person: name and every face of theirs, with the photos."""
    caller = _page_caller(request, "search")
    if isinstance(caller, Response):
        return caller
    person, faces = request.app.state.catalogue.person(person_id)
    profile = request.app.state.catalogue.profile(person.id)
    origins = request.app.state.catalogue.photo_provenance([f.photo.id for f in faces])
    face_views.audit_view(request, caller, f"person {person.id}", faces, thumbnails=True)
    return _render(
        request, "person.html", caller, person=person, faces=faces, profile=profile, origins=origins
    )


#: Clusters per page of /clusters.
CLUSTERS_PER_PAGE = 50


@router.get("/clusters", response_class=HTMLResponse)
def clusters_page(
    request: Request, offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0
) -> Response:
    """Clusters of unnamed faces, largest first (audited), each with a form to name it for
    those who may curate."""
    caller = _page_caller(request, "search")
    if isinstance(caller, Response):
        return caller
    found = request.app.state.catalogue.clusters(
        min_size=2, limit=CLUSTERS_PER_PAGE + 1, offset=offset
    )
    audit_clusters(request, caller, found[:CLUSTERS_PER_PAGE], offset)
    return _render(
        request,
        "clusters.html",
        caller,
        clusters=found[:CLUSTERS_PER_PAGE],
        offset=offset,
        per_page=CLUSTERS_PER_PAGE,
        more=len(found) > CLUSTERS_PER_PAGE,
    )


@router.get("/edits", response_class=HTMLResponse)
def edits_page(request: Request) -> Response:
    """The recorded edits of who is who, newest first, each with an Undo button."""
    caller = _page_caller(request, "curate")
    if isinstance(caller, Response):
        return caller
    edits = request.app.state.catalogue.edits(limit=200)
    return _render(request, "edits.html", caller, edits=edits)


@router.get("/admin", response_class=HTMLResponse)
def admin_page(request: Request) -> Response:
    """API keys and the audit log."""
    caller = _page_caller(request, "admin")
    if isinstance(caller, Response):
        return caller
    keys = request.app.state.catalogue.api_keys()
    entries = request.app.state.catalogue.audit(limit=200)
    return _render(request, "admin.html", caller, keys=keys, entries=entries)


@router.get("/fleet", response_class=HTMLResponse)
def fleet_page(request: Request) -> Response:
    """The ingestion workers, refreshed live from /api/fleet, with pause, resume, resize and
    stop; without a broker configured, how to configure one."""
    caller = _page_caller(request, "admin")
    if isinstance(caller, Response):
        return caller
    broker = request.app.state.settings.broker
    return _render(request, "fleet.html", caller, broker=masked_url(broker) if broker else None)


#: Seconds between reloads of /jobs while a job it shows is queued or running.
JOBS_REFRESH_SECONDS = 2


@router.get("/jobs", response_class=HTMLResponse)
def jobs_page(
    request: Request,
    job_id: Annotated[str | None, Query(alias="id", pattern=jobs.JOB_ID_PATTERN)] = None,
) -> Response:
    """The background jobs the caller may see, newest first, or with `id` one of them; the
    page reloads itself while a job it shows is queued or running."""
    caller = _page_caller(request, jobs.LIST_ACTION)
    if isinstance(caller, Response):
        return caller
    if job_id is None:
        shown = request.app.state.jobs.seen_by(caller.key)
    else:
        shown = [request.app.state.jobs.get(job_id)]
        access.check_allowed(caller.key, shown[0].action)
    unfinished = any(job.state in ("queued", "running") for job in shown)
    refresh = JOBS_REFRESH_SECONDS if unfinished else None
    return _render(request, "jobs.html", caller, jobs=shown, one=job_id, refresh=refresh)


def _page(request: Request, action: str, template: str) -> Response:
    caller = _page_caller(request, action)
    if isinstance(caller, Response):
        return caller
    return _render(request, template, caller)


def _page_caller(request: Request, action: str) -> Caller | Response:
    """The logged-in caller, or the answer to give instead (to the login page, or 403)."""
    try:
        caller = caller_of(request)
        access.check_allowed(caller.key, action)
    except Unauthorized:
        return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)
    except Forbidden as error:
        return _render(request, "error.html", None, 403, message=str(error))
    return caller


def _render(
    request: Request, template: str, caller: Caller | None, status: int = 200, **context: Any
) -> Response:
    return templates.TemplateResponse(
        request, template, {"caller": caller, **context}, status_code=status
    )


def _local(target: str) -> str:
    """`target` if it is a path on this site, else "/": never redirect elsewhere after login."""
    return target if target.startswith("/") and not target.startswith("//") else "/"


def render_error(request: Request, message: str, status: int) -> Response:
    """An error page for a page request (the API answers JSON instead)."""
    return _render(request, "error.html", None, status, message=message)
