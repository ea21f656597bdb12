"""The web app: `create_app(settings)` builds the JSON API and the pages over one data directory.

The app opens the catalogue and the photo analysis pool when it starts and closes them when
it stops (FastAPI lifespan), so building an app costs nothing until it serves.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, Request, Response
from fastapi.staticfiles import StaticFiles

from ..catalogue import Catalogue
from ..errors import UsageError
from ..faces.pipeline import PipelineSettings
from ..settings import default_hosts_file
from . import api, curation, fleet_views, jobs, models, pages
from .analysis import AnalysisLimits, AnalysisPool
from .auth import Caller, Sessions, requires
from .errors import ERROR_RESPONSES, install_error_handlers
from .face_views import Shown
from .headers import SecurityHeaders
from .intake import RequestIntake
from .prometheus import Metrics
from .routing import CheckedRoute

__all__ = ["ServerSettings", "create_app", "first_admin_key", "is_loopback"]

STATIC_DIR = Path(__file__).parent / "static"


@dataclass(frozen=True)
class ServerSettings:
    """How the server runs. Defaults suit one machine serving a team."""

    data_dir: Path
    #: A PostgreSQL catalogue (postgresql://...); None: SQLite in the data directory.
    db: str | None = None
    #: The vector index by registry name; None: the catalogue's default (docs/scaling.md).
    vector_index: str | None = None
    #: Processes analysing query and uploaded photos; 0 analyses in the request thread.
    analysis_workers: int = field(default_factory=lambda: min(4, os.cpu_count() or 1))
    #: Photos that may wait for an analysis slot before the server answers 503.
    analysis_queue: int = 8
    max_upload_bytes: int = 20 * 1024 * 1024
    pipeline: PipelineSettings = field(default_factory=PipelineSettings)
    #: What one uploaded photo may cost: pixels, faces, seconds of a worker.
    limits: AnalysisLimits = field(default_factory=AnalysisLimits)
    #: Mark the session cookie Secure (set when serving behind HTTPS).
    secure_cookies: bool = False
    #: The ingestion workers' Redis (redis://host:port/db), for the /fleet dashboard; None:
    #: the dashboard says how to configure it.
    broker: str | None = None
    #: The hosts file the dashboard starts and stops workers with (`serve` passes the one
    #: `fleet up` reads).
    hosts_file: Path = field(default_factory=lambda: default_hosts_file({}))


def create_app(settings: ServerSettings) -> FastAPI:
    """The FastAPI app serving the catalogue in `settings.data_dir`."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.catalogue = Catalogue(
            settings.data_dir,
            create=True,
            pipeline=settings.pipeline,
            db=settings.db,
            vector_index=settings.vector_index,
        )
        # Searches answer while another program holds the SQLite catalogue; their audit
        # entries are written when it lets go (store/sqlite.py).
        defer_busy_audit = getattr(app.state.catalogue.store, "defer_busy_audit", None)
        if defer_busy_audit is not None:
            defer_busy_audit()
        app.state.analysis = AnalysisPool(  # the catalogue's: a card embedder attached
            app.state.catalogue.pipeline,
            settings.analysis_workers,
            settings.analysis_queue,
            settings.limits,
        )
        try:
            app.state.catalogue.vector_index()  # build or catch up before the first search
            yield
        finally:
            app.state.jobs.close()
            app.state.analysis.close()
            app.state.catalogue.close()

    app = FastAPI(
        title="ID-Detective",
        version=_version(),
        description="Find people by photo in a catalogue you are entitled to process.",
        lifespan=lifespan,
        responses={k: v for k, v in ERROR_RESPONSES.items() if k in (401, 403, 422, 503)},
    )
    app.router.route_class = CheckedRoute  # /healthz and /metrics, as the routers' routes
    app.state.settings = settings
    app.state.jobs = jobs.Jobs()
    app.state.sessions = Sessions()
    app.state.shown = Shown()
    app.state.fleet_monitor = fleet_views.FleetMonitor()
    app.state.metrics = Metrics(lambda: _stats(app))
    app.state.metrics.install(app)
    install_error_handlers(app, pages.render_error)
    # Outermost (added last): no body is read before the caller and its size are checked;
    # every answer, the intake's refusals included, carries the security headers.
    app.add_middleware(RequestIntake, upload_limit=lambda: settings.max_upload_bytes)
    app.add_middleware(SecurityHeaders)
    app.include_router(api.router)
    app.include_router(curation.router)
    app.include_router(jobs.router)
    app.include_router(fleet_views.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/healthz", response_model=models.Health, tags=["operations"])
    def healthz() -> dict[str, str]:
        """Liveness: the server answers (no key needed)."""
        return {"status": "ok"}

    @app.get(
        "/metrics",
        tags=["operations"],
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text."}},
    )
    def metrics(
        request: Request, caller: Annotated[Caller, Depends(requires("admin"))]
    ) -> Response:
        """Prometheus metrics (admin key)."""
        return Response(app.state.metrics.exposition(), media_type="text/plain; version=0.0.4")

    return app


def is_loopback(host: str) -> bool:
    """Whether `host` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: assume it is reachable from elsewhere


def first_admin_key(data_dir: Path, host: str, *, db: str | None = None) -> str | None:
    """Get a data directory ready to serve on `host`; the admin key it created, if any.

    With no active key, serving on this machine only creates an admin key (shown once, so a
    newcomer can log in); serving on any other address is refused, since nobody could log in
    and the first visitor must not be the one to set up access.
    """
    with Catalogue(data_dir, create=True, db=db) as catalogue:
        if any(key.active for key in catalogue.api_keys()):
            return None
        if not is_loopback(host):
            raise UsageError(
                f"refusing to serve on {host} with no API key: anyone who can reach it could "
                f"use it. Create one first: iddetective keys create --role admin --data {data_dir}"
            )
        secret, _ = catalogue.create_key("admin", "created by the first serve")
        return secret


def _stats(app: FastAPI) -> object:
    return app.state.catalogue.stats()


def _version() -> str:
    from importlib.metadata import version

    return version("iddetective")
