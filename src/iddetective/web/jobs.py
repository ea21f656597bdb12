"""Long catalogue operations run as background jobs, with a status endpoint.

A full clustering run (83 s at 100k faces) or an erasure ending in compaction need not hold
an HTTP request open: asked with `background`, the endpoint answers 202 with a job, which
one thread of the server runs after the jobs before it; `GET /api/jobs/{id}` says how it
stands and, once done, what it did (the body the endpoint would have answered) or why it
failed, and `GET /api/jobs` lists them (the /jobs page shows the same). A job is seen by
callers allowed the action that started it. The server keeps the last `KEPT` jobs, in
memory: a restart forgets them (what they did is in the catalogue).
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Request

from .. import access
from ..entities import ApiKey
from ..errors import IDDetectiveError, NotFound
from ..store.dialect import timestamp
from . import models
from .auth import caller_of
from .errors import ERROR_RESPONSES
from .routing import CheckedRoute

__all__ = ["JOB_ID_PATTERN", "KEPT", "LIST_ACTION", "Job", "Jobs", "router"]

log = logging.getLogger("iddetective.web")

#: Jobs kept for their status, the oldest forgotten first.
KEPT = 100
#: What a job's id looks like.
JOB_ID_PATTERN = r"^j_[0-9a-f]{16}$"
#: What a caller must be allowed to list jobs: the least any job asks (a clustering run's;
#: an erasure asks admin, a role that may curate too). The list holds the jobs it may see.
LIST_ACTION = "curate"

State = Literal["queued", "running", "done", "failed"]


@dataclass(frozen=True)
class Job:
    """One background job as its status shows it."""

    id: str
    kind: str  # clustering | erasure
    action: str  # what a caller must be allowed to see it (access.ACTIONS)
    actor: str
    state: State
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    result: dict[str, Any] | None = None
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The job as `GET /api/jobs/{id}` answers it."""
        return {
            "id": self.id,
            "kind": self.kind,
            "actor": self.actor,
            "state": self.state,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "result": self.result,
            "error": self.error,
            "status_url": f"/api/jobs/{self.id}",
        }


class Jobs:
    """The server's background jobs: run one at a time, in order, by one thread."""

    def __init__(self) -> None:
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._runner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="iddetective-job")

    def start(
        self, kind: str, action: str, actor: str, work: Callable[[], dict[str, Any]]
    ) -> Job:
        """Queue `work`; the job, queued."""
        job = Job("j_" + secrets.token_hex(8), kind, action, actor, "queued", timestamp())
        self._put(job)
        self._runner.submit(self._run, job, work)
        return job

    def get(self, job_id: str) -> Job:
        """The job with this id; `NotFound` if there is none (or it was forgotten)."""
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(f"no job has the id {job_id!r}")
        return job

    def seen_by(self, key: ApiKey) -> list[Job]:
        """The kept jobs a caller with `key` may see (allowed their action), newest first."""
        with self._lock:
            jobs = list(reversed(self._jobs.values()))
        return [job for job in jobs if access.allows(key, job.action)]

    def close(self) -> None:
        """Finish the running job; the queued ones are dropped."""
        self._runner.shutdown(wait=True, cancel_futures=True)

    def _run(self, job: Job, work: Callable[[], dict[str, Any]]) -> None:
        job = replace(job, state="running", started_at=timestamp())
        self._put(job)
        try:
            result = work()
        except IDDetectiveError as error:
            self._put(replace(job, state="failed", finished_at=timestamp(), error=str(error)))
        except Exception as error:  # a job must say it failed, not vanish
            log.exception("job %s (%s) failed", job.id, job.kind)
            failed = f"{type(error).__name__}: {error}"
            self._put(replace(job, state="failed", finished_at=timestamp(), error=failed))
        else:
            self._put(replace(job, state="done", finished_at=timestamp(), result=result))

    def _put(self, job: Job) -> None:
        with self._lock:
            self._jobs[job.id] = job  # a job changing state keeps its place: oldest first
            while len(self._jobs) > KEPT:
                self._jobs.popitem(last=False)


router = APIRouter(prefix="/api", responses=ERROR_RESPONSES, route_class=CheckedRoute)

JobId = Annotated[str, Path(pattern=JOB_ID_PATTERN)]


@router.get("/jobs", response_model=models.JobPage)
def job_list(request: Request) -> dict[str, Any]:
    """The background jobs the caller may see, newest first (the server keeps the last 100)."""
    caller = caller_of(request)
    access.check_allowed(caller.key, LIST_ACTION)
    jobs = request.app.state.jobs.seen_by(caller.key)
    return {"items": [job.as_json() for job in jobs]}


@router.get("/jobs/{job_id}", response_model=models.JobModel)
def job_status(request: Request, job_id: JobId) -> dict[str, Any]:
    """How a background job stands, and once done what it did or why it failed."""
    caller = caller_of(request)
    job = request.app.state.jobs.get(job_id)
    access.check_allowed(caller.key, job.action)
    return dict(job.as_json())
