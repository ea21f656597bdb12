"""Long catalogue operations run as background jobs, with a status endpoint.

A full clustering run (83 s at 100k faces) or an erasure ending in compaction need not hold
an HTTP request open: asked with `background`, the endpoint answers 202 with a job, which
one thread of the server runs after the jobs before it; `GET /api/jobs/{id}` says how it
stands and, once done, what it did (the body the endpoint would have answered) or why it
failed. A job is seen by callers allowed the action that started it. The server keeps the
last `KEPT` jobs, in memory: a restart forgets them (what they did is in the catalogue).
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
from ..errors import IDDetectiveError, NotFound
from ..store.dialect import timestamp
from . import models
from .auth import caller_of
from .errors import ERROR_RESPONSES
from .routing import CheckedRoute

__all__ = ["Job", "Jobs", "router"]

log = logging.getLogger("iddetective.web")

#: Jobs kept for their status, the oldest forgotten first.
KEPT = 100

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
    finished_at: str | None = None
    result: dict[str, Any] | None = None
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The job as `GET /api/jobs/{id}` answers it."""
        return {
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "created_at": self.created_at,
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

    def close(self) -> None:
        """Finish the running job; the queued ones are dropped."""
        self._runner.shutdown(wait=True, cancel_futures=True)

    def _run(self, job: Job, work: Callable[[], dict[str, Any]]) -> None:
        self._put(replace(job, state="running"))
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
            self._jobs[job.id] = job
            self._jobs.move_to_end(job.id)
            while len(self._jobs) > KEPT:
                self._jobs.popitem(last=False)


router = APIRouter(prefix="/api", responses=ERROR_RESPONSES, route_class=CheckedRoute)

JobId = Annotated[str, Path(pattern=r"^j_[0-9a-f]{16}$")]


@router.get("/jobs/{job_id}", response_model=models.JobModel)
def job_status(request: Request, job_id: JobId) -> dict[str, Any]:
    """How a background job stands, and once done what it did or why it failed."""
    caller = caller_of(request)
    job = request.app.state.jobs.get(job_id)
    access.check_allowed(caller.key, job.action)
    return dict(job.as_json())
